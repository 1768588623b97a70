"""Signature schemes and signatures (Part 2, clauses 11.2.1.5 and 11.3).

Only the schemes this engine implements have union members: RSASSA, RSAPSS,
ECDSA, ECSCHNORR and HMAC.  ECDAA and SM2 are refused by TPMI_ALG_SIG_SCHEME
itself (TPM_RC_SCHEME at unmarshalling), as Part 2 requires for an
unimplemented algorithm, so no command ever sees them.
"""

from __future__ import annotations

from ..constants import TPM_ALG
from ..marshal import Struct, U, Union
from .buffers import TPM2B_ECC_PARAMETER, TPM2B_PUBLIC_KEY_RSA, TPMU_HA
from .interfaces import TPMI_ALG_HASH, TPMI_ALG_SIG_SCHEME
from .public import TPMS_SCHEME_HASH

__all__ = [
    "SIGNING_SCHEMES",
    "TPMS_SIGNATURE_ECC",
    "TPMS_SIGNATURE_ECDSA",
    "TPMS_SIGNATURE_ECSCHNORR",
    "TPMS_SIGNATURE_RSA",
    "TPMS_SIGNATURE_RSAPSS",
    "TPMS_SIGNATURE_RSASSA",
    "TPMT_SIGNATURE",
    "TPMT_SIGNATURE_PLUS",
    "TPMT_SIG_SCHEME",
    "TPMT_SIG_SCHEME_PLUS",
    "TPMU_SIGNATURE",
    "TPMU_SIG_SCHEME",
]

#: The signature schemes with a TPMU_SIG_SCHEME / TPMU_SIGNATURE member here.
SIGNING_SCHEMES = (TPM_ALG.RSASSA, TPM_ALG.RSAPSS, TPM_ALG.ECDSA, TPM_ALG.ECSCHNORR, TPM_ALG.HMAC)

# --- schemes ---------------------------------------------------------------------------------------
TPMU_SIG_SCHEME = Union("TPMU_SIG_SCHEME", {**{alg: TPMS_SCHEME_HASH for alg in SIGNING_SCHEMES}, TPM_ALG.NULL: None})
#: Every command takes the "+" form (TPM_ALG_NULL: "use the key's scheme").
TPMT_SIG_SCHEME_PLUS = Struct(
    "TPMT_SIG_SCHEME", [("scheme", TPMI_ALG_SIG_SCHEME.plus()), U("details", TPMU_SIG_SCHEME, "scheme")]
)
TPMT_SIG_SCHEME = Struct("TPMT_SIG_SCHEME", [("scheme", TPMI_ALG_SIG_SCHEME), U("details", TPMU_SIG_SCHEME, "scheme")])

# --- signatures ------------------------------------------------------------------------------------
TPMS_SIGNATURE_RSA = Struct("TPMS_SIGNATURE_RSA", [("hash", TPMI_ALG_HASH), ("sig", TPM2B_PUBLIC_KEY_RSA)])
TPMS_SIGNATURE_RSASSA = TPMS_SIGNATURE_RSA
TPMS_SIGNATURE_RSAPSS = TPMS_SIGNATURE_RSA
TPMS_SIGNATURE_ECC = Struct(
    "TPMS_SIGNATURE_ECC",
    [("hash", TPMI_ALG_HASH), ("signatureR", TPM2B_ECC_PARAMETER), ("signatureS", TPM2B_ECC_PARAMETER)],
)
TPMS_SIGNATURE_ECDSA = TPMS_SIGNATURE_ECC
TPMS_SIGNATURE_ECSCHNORR = TPMS_SIGNATURE_ECC
#: An HMAC signature is a TPMT_HA whose hash may not be TPM_ALG_NULL (TPMT_HA without "+").
_TPMT_HA_SIGNATURE = Struct("TPMT_HA", [("hashAlg", TPMI_ALG_HASH), U("digest", TPMU_HA, "hashAlg")])
TPMU_SIGNATURE = Union(
    "TPMU_SIGNATURE",
    {
        TPM_ALG.RSASSA: TPMS_SIGNATURE_RSASSA,
        TPM_ALG.RSAPSS: TPMS_SIGNATURE_RSAPSS,
        TPM_ALG.ECDSA: TPMS_SIGNATURE_ECDSA,
        TPM_ALG.ECSCHNORR: TPMS_SIGNATURE_ECSCHNORR,
        TPM_ALG.HMAC: _TPMT_HA_SIGNATURE,
        TPM_ALG.NULL: None,
    },
)
#: What VerifySignature and PolicySigned take: a real signature (TPM_ALG_NULL is TPM_RC_SCHEME).
TPMT_SIGNATURE = Struct("TPMT_SIGNATURE", [("sigAlg", TPMI_ALG_SIG_SCHEME), U("signature", TPMU_SIGNATURE, "sigAlg")])
#: What Sign, Quote and Certify return: TPM_ALG_NULL when signHandle is TPM_RH_NULL.
TPMT_SIGNATURE_PLUS = Struct(
    "TPMT_SIGNATURE", [("sigAlg", TPMI_ALG_SIG_SCHEME.plus()), U("signature", TPMU_SIGNATURE, "sigAlg")]
)
