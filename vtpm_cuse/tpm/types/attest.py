"""Attestation structures (Part 2, clause 10.12): TPMS_ATTEST and what it carries.

The TPM builds a TPMS_ATTEST, marshals it into a TPM2B_ATTEST (an octet buffer, so the
signature covers exactly the octets the caller receives) and signs the hash of those octets.
The engine only marshals these; tests parse them back with the same declarations.
"""

from __future__ import annotations

from ..constants import MAX_DIGEST_SIZE, MAX_NV_BUFFER_SIZE, TPM_ST
from ..marshal import UINT16, UINT32, UINT64, Interface, Sized, Struct, U, Union
from .buffers import TPM2B_DATA, TPM2B_DIGEST, TPM2B_MAX_NV_BUFFER, TPM2B_NAME
from .interfaces import TPM_ALG_ID, TPMI_YES_NO
from .misc import TPMS_CLOCK_INFO, TPMS_TIME_INFO
from .pcr import TPML_PCR_SELECTION

__all__ = [
    "MAX_ATTEST_SIZE",
    "TPM2B_ATTEST",
    "TPM_GENERATED",
    "TPMI_ST_ATTEST",
    "TPMS_ATTEST",
    "TPMS_CERTIFY_INFO",
    "TPMS_COMMAND_AUDIT_INFO",
    "TPMS_CREATION_INFO",
    "TPMS_NV_CERTIFY_INFO",
    "TPMS_NV_DIGEST_CERTIFY_INFO",
    "TPMS_QUOTE_INFO",
    "TPMS_SESSION_AUDIT_INFO",
    "TPMS_TIME_ATTEST_INFO",
    "TPMU_ATTEST",
]

#: TPM_GENERATED_VALUE (Part 2, 6.2): every TPMS_ATTEST starts with it, and a restricted
#: signing key never signs a digest of outside data that does (see TPM2_Sign), so a relying
#: party knows a signed structure with this magic came from the TPM.
TPM_GENERATED = 0xFF544347

TPMS_CERTIFY_INFO = Struct("TPMS_CERTIFY_INFO", [("name", TPM2B_NAME), ("qualifiedName", TPM2B_NAME)])
TPMS_QUOTE_INFO = Struct("TPMS_QUOTE_INFO", [("pcrSelect", TPML_PCR_SELECTION), ("pcrDigest", TPM2B_DIGEST)])
TPMS_COMMAND_AUDIT_INFO = Struct(
    "TPMS_COMMAND_AUDIT_INFO",
    [
        ("auditCounter", UINT64),
        ("digestAlg", TPM_ALG_ID),
        ("auditDigest", TPM2B_DIGEST),
        ("commandDigest", TPM2B_DIGEST),
    ],
)
TPMS_SESSION_AUDIT_INFO = Struct(
    "TPMS_SESSION_AUDIT_INFO", [("exclusiveSession", TPMI_YES_NO), ("sessionDigest", TPM2B_DIGEST)]
)
TPMS_CREATION_INFO = Struct("TPMS_CREATION_INFO", [("objectName", TPM2B_NAME), ("creationHash", TPM2B_DIGEST)])
TPMS_NV_CERTIFY_INFO = Struct(
    "TPMS_NV_CERTIFY_INFO", [("indexName", TPM2B_NAME), ("offset", UINT16), ("nvContents", TPM2B_MAX_NV_BUFFER)]
)
TPMS_NV_DIGEST_CERTIFY_INFO = Struct(
    "TPMS_NV_DIGEST_CERTIFY_INFO", [("indexName", TPM2B_NAME), ("nvDigest", TPM2B_DIGEST)]
)
TPMS_TIME_ATTEST_INFO = Struct("TPMS_TIME_ATTEST_INFO", [("time", TPMS_TIME_INFO), ("firmwareVersion", UINT64)])

#: TPMI_ST_ATTEST: the TPM_ST values that select a TPMU_ATTEST member.
_MEMBERS = {
    TPM_ST.ATTEST_CERTIFY: TPMS_CERTIFY_INFO,
    TPM_ST.ATTEST_CREATION: TPMS_CREATION_INFO,
    TPM_ST.ATTEST_QUOTE: TPMS_QUOTE_INFO,
    TPM_ST.ATTEST_COMMAND_AUDIT: TPMS_COMMAND_AUDIT_INFO,
    TPM_ST.ATTEST_SESSION_AUDIT: TPMS_SESSION_AUDIT_INFO,
    TPM_ST.ATTEST_TIME: TPMS_TIME_ATTEST_INFO,
    TPM_ST.ATTEST_NV: TPMS_NV_CERTIFY_INFO,
    TPM_ST.ATTEST_NV_DIGEST: TPMS_NV_DIGEST_CERTIFY_INFO,
}
TPMI_ST_ATTEST = Interface("TPMI_ST_ATTEST", UINT16, tuple(_MEMBERS))
TPMU_ATTEST = Union("TPMU_ATTEST", _MEMBERS)

TPMS_ATTEST = Struct(
    "TPMS_ATTEST",
    [
        ("magic", Interface("TPM_GENERATED", UINT32, (TPM_GENERATED,))),
        ("type", TPMI_ST_ATTEST),
        ("qualifiedSigner", TPM2B_NAME),
        ("extraData", TPM2B_DATA),
        ("clockInfo", TPMS_CLOCK_INFO),
        ("firmwareVersion", UINT64),
        U("attested", TPMU_ATTEST, "type"),
    ],
)

_NAME = 2 + MAX_DIGEST_SIZE + 2
#: sizeof(TPMS_ATTEST): the header and the largest member, TPMS_NV_CERTIFY_INFO.
MAX_ATTEST_SIZE = 4 + 2 + _NAME + (2 + MAX_DIGEST_SIZE + 2) + (8 + 4 + 4 + 1) + 8 + (_NAME + 2 + 2 + MAX_NV_BUFFER_SIZE)
TPM2B_ATTEST = Sized("TPM2B_ATTEST", MAX_ATTEST_SIZE)
