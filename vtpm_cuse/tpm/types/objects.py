"""Sensitive areas, private blobs, creation data and saved contexts (Part 2, clauses 12.3, 14, 15).

These are the structures the object and context commands add; the public
area (TPMT_PUBLIC and friends) stays in :mod:`.public`, where TestParms and
the session commands share it.
"""

from __future__ import annotations

from ..constants import MAX_CONTEXT_SIZE, MAX_DIGEST_SIZE, TPM_ALG
from ..errors import TPM_RC
from ..marshal import UINT8, UINT64, Sized, SizedStruct, Struct, U, Union
from .buffers import (
    TPM2B_AUTH,
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_ECC_PARAMETER,
    TPM2B_NAME,
    TPM2B_PRIVATE_KEY_RSA,
    TPM2B_SENSITIVE_DATA,
    TPM2B_SYM_KEY,
)
from .interfaces import TPM_ALG_ID, TPMI_ALG_PUBLIC, TPMI_DH_SAVED, TPMI_RH_HIERARCHY
from .pcr import TPML_PCR_SELECTION

__all__ = [
    "MAX_PRIVATE_SIZE",
    "MAX_PUBLIC_SIZE",
    "TPM2B_CONTEXT_DATA_T",
    "TPM2B_CREATION_DATA",
    "TPM2B_PRIVATE",
    "TPM2B_SENSITIVE",
    "TPM2B_TEMPLATE",
    "TPMA_LOCALITY_T",
    "TPMS_CONTEXT",
    "TPMS_CREATION_DATA",
    "TPMT_SENSITIVE",
    "TPMU_SENSITIVE_COMPOSITE",
]

TPMU_SENSITIVE_COMPOSITE = Union(
    "TPMU_SENSITIVE_COMPOSITE",
    {
        TPM_ALG.RSA: TPM2B_PRIVATE_KEY_RSA,
        TPM_ALG.ECC: TPM2B_ECC_PARAMETER,
        TPM_ALG.KEYEDHASH: TPM2B_SENSITIVE_DATA,
        TPM_ALG.SYMCIPHER: TPM2B_SYM_KEY,
    },
)
TPMT_SENSITIVE = Struct(
    "TPMT_SENSITIVE",
    [
        ("sensitiveType", TPMI_ALG_PUBLIC),
        ("authValue", TPM2B_AUTH),
        ("seedValue", TPM2B_DIGEST),
        U("sensitive", TPMU_SENSITIVE_COMPOSITE, "sensitiveType"),
    ],
)
TPM2B_SENSITIVE = SizedStruct("TPM2B_SENSITIVE", TPMT_SENSITIVE)

#: sizeof(_PRIVATE): two TPM2B_DIGESTs and the largest TPM2B_SENSITIVE (an RSA key's
#: five-primes vendor area), as Part 2 sizes TPM2B_PRIVATE.
MAX_PRIVATE_SIZE = 2 * (2 + MAX_DIGEST_SIZE) + 2 + 2 + 2 * (2 + MAX_DIGEST_SIZE) + TPM2B_PRIVATE_KEY_RSA.max_size + 2
TPM2B_PRIVATE = Sized("TPM2B_PRIVATE", MAX_PRIVATE_SIZE)

#: TPMT_PUBLIC's largest marshalled size bounds a TPM2B_TEMPLATE (CreateLoaded).
MAX_PUBLIC_SIZE = 2 + 2 + 4 + (2 + MAX_DIGEST_SIZE) + 10 + 2 + 512
TPM2B_TEMPLATE = Sized("TPM2B_TEMPLATE", MAX_PUBLIC_SIZE)

#: TPMA_LOCALITY as one octet: bits 0-4 name localities 0-4, larger values are extended localities.
TPMA_LOCALITY_T = UINT8

TPMS_CREATION_DATA = Struct(
    "TPMS_CREATION_DATA",
    [
        ("pcrSelect", TPML_PCR_SELECTION),
        ("pcrDigest", TPM2B_DIGEST),
        ("locality", TPMA_LOCALITY_T),
        ("parentNameAlg", TPM_ALG_ID),
        ("parentName", TPM2B_NAME),
        ("parentQualifiedName", TPM2B_NAME),
        ("outsideInfo", TPM2B_DATA),
    ],
)
TPM2B_CREATION_DATA = SizedStruct("TPM2B_CREATION_DATA", TPMS_CREATION_DATA)

TPM2B_CONTEXT_DATA_T = Sized("TPM2B_CONTEXT_DATA", MAX_CONTEXT_SIZE, over_rc=TPM_RC.SIZE)
TPMS_CONTEXT = Struct(
    "TPMS_CONTEXT",
    [
        ("sequence", UINT64),
        ("savedHandle", TPMI_DH_SAVED),
        ("hierarchy", TPMI_RH_HIERARCHY.plus()),
        ("contextBlob", TPM2B_CONTEXT_DATA_T),
    ],
)
