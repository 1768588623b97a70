"""NV storage structures (Part 2, clause 13).

TPMI_RH_NV_INDEX and TPMI_RH_NV_AUTH are interface types (clause 9) and live
in :mod:`.interfaces`; the attribute bits are :class:`~..constants.TPMA_NV`.
"""

from __future__ import annotations

from ..constants import TPMA_NV_RESERVED
from ..marshal import UINT16, UINT32, Attributes, SizedStruct, Struct
from .buffers import TPM2B_DIGEST
from .interfaces import TPMI_ALG_HASH, TPMI_RH_NV_INDEX

__all__ = ["TPM2B_NV_PUBLIC", "TPMA_NV_T", "TPMS_NV_PUBLIC"]

#: TPMA_NV on the wire: a set reserved bit is TPM_RC_RESERVED_BITS.
TPMA_NV_T = Attributes("TPMA_NV", UINT32, TPMA_NV_RESERVED)

TPMS_NV_PUBLIC = Struct(
    "TPMS_NV_PUBLIC",
    [
        ("nvIndex", TPMI_RH_NV_INDEX),
        ("nameAlg", TPMI_ALG_HASH),
        ("attributes", TPMA_NV_T),
        ("authPolicy", TPM2B_DIGEST),
        ("dataSize", UINT16),
    ],
)
TPM2B_NV_PUBLIC = SizedStruct("TPM2B_NV_PUBLIC", TPMS_NV_PUBLIC)
