"""PCR selections and digest lists (Part 2, clauses 10.6 and 10.9)."""

from __future__ import annotations

from ..constants import HASH_COUNT, PCR_SELECT_MAX, PCR_SELECT_MIN
from ..errors import TPM_RC
from ..marshal import UINT8, ListOf, Sized, Struct, U
from .buffers import TPM2B_DIGEST, TPMU_HA
from .interfaces import TPMI_ALG_HASH

__all__ = [
    "PCR_SELECT",
    "TPML_DIGEST",
    "TPML_DIGEST_VALUES",
    "TPML_PCR_SELECTION",
    "TPMS_PCR_SELECT",
    "TPMS_PCR_SELECTION",
    "selection_bits",
    "selection_bytes",
]

#: sizeofSelect is {PCR_SELECT_MIN:PCR_SELECT_MAX} (Part 2, TPMS_PCR_SELECT / TPMS_PCR_SELECTION):
#: fewer octets than the platform's PCRs need, or more than this TPM implements, is TPM_RC_VALUE.
PCR_SELECT = Sized("pcrSelect", PCR_SELECT_MAX, size_type=UINT8, over_rc=TPM_RC.VALUE, min_size=PCR_SELECT_MIN)

TPMS_PCR_SELECT = Struct("TPMS_PCR_SELECT", [("pcrSelect", PCR_SELECT)])
TPMS_PCR_SELECTION = Struct("TPMS_PCR_SELECTION", [("hash", TPMI_ALG_HASH), ("pcrSelect", PCR_SELECT)])
TPML_PCR_SELECTION = ListOf("TPML_PCR_SELECTION", TPMS_PCR_SELECTION, HASH_COUNT)
TPML_DIGEST = ListOf("TPML_DIGEST", TPM2B_DIGEST, 8)
#: TPML_DIGEST_VALUES lists TPMT_HA without "+": a TPM_ALG_NULL digest is TPM_RC_HASH.
_TPMT_HA_DIGEST_VALUE = Struct("TPMT_HA", [("hashAlg", TPMI_ALG_HASH), U("digest", TPMU_HA, "hashAlg")])
TPML_DIGEST_VALUES = ListOf("TPML_DIGEST_VALUES", _TPMT_HA_DIGEST_VALUE, HASH_COUNT)


def selection_bits(select: bytes) -> set[int]:
    """The PCR numbers a pcrSelect bitmap names."""
    return {8 * i + bit for i, octet in enumerate(select) for bit in range(8) if octet >> bit & 1}


def selection_bytes(pcrs: set[int] | list[int], size: int = PCR_SELECT_MAX) -> bytes:
    """The pcrSelect bitmap of ``size`` octets naming ``pcrs``."""
    out = bytearray(size)
    for pcr in pcrs:
        out[pcr // 8] |= 1 << (pcr % 8)
    return bytes(out)
