"""NV storage structures (Part 2, clause 13).

TPMI_RH_NV_INDEX and TPMI_RH_NV_AUTH are interface types (clause 9) and live
in :mod:`.interfaces`; the attribute bits are :class:`~..constants.TPMA_NV`.
"""

from __future__ import annotations

from ..constants import TPM_HT, TPMA_NV_RESERVED
from ..marshal import UINT8, UINT16, UINT32, Attributes, SizedStruct, Struct, U, Union
from .buffers import TPM2B_DIGEST
from .interfaces import TPMI_ALG_HASH, TPMI_RH_NV_INDEX

__all__ = ["TPM2B_NV_PUBLIC", "TPM2B_NV_PUBLIC_2", "TPMA_NV_T", "TPMS_NV_PUBLIC", "TPMT_NV_PUBLIC_2"]

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

#: TPMU_NV_PUBLIC_2 (1.83): selected by the index's handle type.  This TPM has ordinary NV
#: indices only; TPM_HT_EXTERNAL_NV (TPMS_NV_PUBLIC_EXP_ATTR) and TPM_HT_PERMANENT_NV are
#: TPM_RC_SELECTOR (spec_commands.py says why).
TPMU_NV_PUBLIC_2 = Union("TPMU_NV_PUBLIC_2", {TPM_HT.NV_INDEX: TPMS_NV_PUBLIC})
TPMT_NV_PUBLIC_2 = Struct("TPMT_NV_PUBLIC_2", [("handleType", UINT8), U("nvPublic2", TPMU_NV_PUBLIC_2, "handleType")])
TPM2B_NV_PUBLIC_2 = SizedStruct("TPM2B_NV_PUBLIC_2", TPMT_NV_PUBLIC_2)
