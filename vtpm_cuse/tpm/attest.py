"""Attestation structures, built and signed (Part 1, "Attestation"; Part 3 clause 18).

Every attestation command fills the same TPMS_ATTEST header -- TPM_GENERATED_VALUE, the
signer's Qualified Name, the caller's qualifyingData, the clock and the firmware version --
around its own TPMU_ATTEST member, marshals it, and signs the hash of those octets with the
scheme selected as for TPM2_Sign (:mod:`.signing`).  signHandle TPM_RH_NULL gives the same
structure unsigned (a TPM_ALG_NULL signature).

Privacy (Part 1, "Privacy" / Part 3 18.1): resetCount, restartCount and firmwareVersion
would let two attestations by keys of the storage or NULL hierarchy be linked to the same
TPM, so for those signers they are offset by a value only this TPM knows, constant per
signer: KDFa(context-integrity hash, shProof, "OBFUSCATE", qualifiedSigner) -- 64 bits
added to firmwareVersion, 32 each to resetCount and restartCount, modulo their widths.
Keys of the endorsement and platform hierarchies report them in the clear.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .algorithms import hash_alg
from .constants import TPM_ALG, TPM_RH
from .crypto.kdf import kdfa
from .hierarchy import hierarchy_proof
from .properties import firmware_version_words
from .protection import CONTEXT_HASH
from .signing import sign
from .types import TPMS_ATTEST, TPMS_CLOCK_INFO, TPMT_SIGNATURE_PLUS
from .types.attest import TPM_GENERATED

if TYPE_CHECKING:
    from .engine import Engine
    from .objects import LoadedObject

__all__ = ["Signer", "attest", "firmware_version", "obfuscate_clock", "obfuscation"]

UNSIGNED = TPMT_SIGNATURE_PLUS(sigAlg=TPM_ALG.NULL, signature=None)
OBFUSCATE_LABEL = "OBFUSCATE"
#: Hierarchies whose keys see the clock's counters and the firmware version unobfuscated.
PRIVACY_EXEMPT = (TPM_RH.ENDORSEMENT, TPM_RH.PLATFORM)
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


@dataclasses.dataclass(frozen=True)
class Signer:
    """Who signs an attestation: a signing key with the scheme selected for it, or nobody."""

    key: LoadedObject | None
    #: The TPMT_SIG_SCHEME select_scheme chose (None when unsigned).
    scheme: Any = None

    @property
    def hash_alg(self) -> int:
        """The scheme's hash: what the attestation is signed over, and what Quote's pcrDigest
        and NV_Certify's nvDigest are computed with (TPM_ALG_NULL when unsigned)."""
        return TPM_ALG.NULL if self.key is None else self.scheme.details.hashAlg

    def digest(self, data: bytes) -> bytes:
        """H_scheme(data), or the empty digest of TPM_ALG_NULL for an unsigned attestation."""
        return b"" if self.key is None else hash_alg(self.hash_alg).digest(data)

    @property
    def qualified_name(self) -> bytes:
        """qualifiedSigner: the key's Qualified Name, or TPM_RH_NULL's handle when unsigned."""
        return TPM_RH.NULL.to_bytes(4, "big") if self.key is None else self.key.qualified_name

    @property
    def obfuscated(self) -> bool:
        return self.key is None or self.key.hierarchy not in PRIVACY_EXEMPT

    def sign(self, data: bytes) -> Any:
        if self.key is None:
            return UNSIGNED
        return sign(self.key, self.scheme, self.digest(data))


def firmware_version() -> int:
    """firmwareVersion: TPM_PT_FIRMWARE_VERSION_1 || TPM_PT_FIRMWARE_VERSION_2."""
    high, low = firmware_version_words()
    return high << 32 | low


def obfuscation(engine: Engine, qualified_signer: bytes) -> tuple[int, int, int]:
    """(firmwareVersion, resetCount, restartCount) offsets for a signer that is not exempt."""
    mask = kdfa(CONTEXT_HASH, hierarchy_proof(engine, TPM_RH.OWNER), OBFUSCATE_LABEL, qualified_signer, b"", 128)
    return int.from_bytes(mask[:8], "big"), int.from_bytes(mask[8:12], "big"), int.from_bytes(mask[12:], "big")


def attest(
    engine: Engine, signer: Signer, kind: int, extra_data: bytes, clock: Any, attested: Any
) -> tuple[bytes, Any]:
    """(marshalled TPMS_ATTEST, TPMT_SIGNATURE) of a ``kind`` (TPM_ST_ATTEST_*) attestation.

    ``clock`` is the TPMS_CLOCK_INFO now, in the clear; the obfuscation, if the signer needs
    it, is applied here, to the header only: GetTime's TPMS_TIME_ATTEST_INFO repeats them in
    the clear, which is why it needs the privacy administrator's (endorsement) authorization.
    """
    clock_info, firmware = obfuscate_clock(engine, signer, clock)
    body = TPMS_ATTEST.pack(
        TPMS_ATTEST(
            magic=TPM_GENERATED,
            type=kind,
            qualifiedSigner=signer.qualified_name,
            extraData=extra_data,
            clockInfo=clock_info,
            firmwareVersion=firmware,
            attested=attested,
        )
    )
    return body, signer.sign(body)


def obfuscate_clock(engine: Engine, signer: Signer, clock: Any) -> tuple[Any, int]:
    """(TPMS_CLOCK_INFO, firmwareVersion) as ``signer`` may see them (see the module's docstring)."""
    firmware = firmware_version()
    if not signer.obfuscated:
        return clock, firmware
    fw_offset, reset_offset, restart_offset = obfuscation(engine, signer.qualified_name)
    hidden = TPMS_CLOCK_INFO(
        clock=clock.clock,
        resetCount=(clock.resetCount + reset_offset) & _U32,
        restartCount=(clock.restartCount + restart_offset) & _U32,
        safe=clock.safe,
    )
    return hidden, (firmware + fw_offset) & _U64
