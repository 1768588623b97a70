"""PCR selections and digest lists (Part 2, clauses 10.6 and 10.9)."""

from __future__ import annotations

from ..constants import HASH_COUNT, PCR_SELECT_MAX
from ..errors import TPM_RC
from ..marshal import UINT8, ListOf, Sized, Struct
from .buffers import TPM2B_DIGEST, TPMT_HA
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

#: A sizeofSelect larger than this TPM implements is TPM_RC_VALUE.
PCR_SELECT = Sized("pcrSelect", PCR_SELECT_MAX, size_type=UINT8, over_rc=TPM_RC.VALUE)

TPMS_PCR_SELECT = Struct("TPMS_PCR_SELECT", [("pcrSelect", PCR_SELECT)])
TPMS_PCR_SELECTION = Struct("TPMS_PCR_SELECTION", [("hash", TPMI_ALG_HASH), ("pcrSelect", PCR_SELECT)])
TPML_PCR_SELECTION = ListOf("TPML_PCR_SELECTION", TPMS_PCR_SELECTION, HASH_COUNT)
TPML_DIGEST = ListOf("TPML_DIGEST", TPM2B_DIGEST, 8)
TPML_DIGEST_VALUES = ListOf("TPML_DIGEST_VALUES", TPMT_HA, HASH_COUNT)


def selection_bits(select: bytes) -> set[int]:
    """The PCR numbers a pcrSelect bitmap names."""
    return {8 * i + bit for i, octet in enumerate(select) for bit in range(8) if octet >> bit & 1}


def selection_bytes(pcrs: set[int] | list[int], size: int = PCR_SELECT_MAX) -> bytes:
    """The pcrSelect bitmap of ``size`` octets naming ``pcrs``."""
    out = bytearray(size)
    for pcr in pcrs:
        out[pcr // 8] |= 1 << (pcr % 8)
    return bytes(out)
