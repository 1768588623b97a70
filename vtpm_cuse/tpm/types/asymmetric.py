"""Structures of the asymmetric primitives (Part 2, the RSA and ECC parameter clauses):
the RSA decryption scheme of RSA_Encrypt / RSA_Decrypt and the curve description that
ECC_Parameters returns.

TPM2B_ECC_POINT, TPMS_ECC_POINT and TPMI_ECC_KEY_EXCHANGE are shared with the public
area and live in :mod:`.public` and :mod:`.interfaces`.
"""

from __future__ import annotations

from ..marshal import UINT16, Struct, U
from .buffers import TPM2B_ECC_PARAMETER
from .interfaces import TPM_ECC_CURVE_T, TPMI_ALG_RSA_DECRYPT
from .public import TPMT_ECC_SCHEME, TPMT_KDF_SCHEME, TPMU_ASYM_SCHEME

__all__ = [
    "TPMS_ALGORITHM_DETAIL_ECC",
    "TPMT_RSA_DECRYPT",
]

#: The padding RSA_Encrypt / RSA_Decrypt use: RSAES, OAEP (with its hash) or TPM_ALG_NULL
#: (the key's scheme, or raw RSA when the key has none).
TPMT_RSA_DECRYPT = Struct(
    "TPMT_RSA_DECRYPT", [("scheme", TPMI_ALG_RSA_DECRYPT.plus()), U("details", TPMU_ASYM_SCHEME, "scheme")]
)

#: A curve's domain parameters and the schemes the TPM associates with it (ECC_Parameters).
TPMS_ALGORITHM_DETAIL_ECC = Struct(
    "TPMS_ALGORITHM_DETAIL_ECC",
    [
        ("curveID", TPM_ECC_CURVE_T),
        ("keySize", UINT16),
        ("kdf", TPMT_KDF_SCHEME),
        ("sign", TPMT_ECC_SCHEME),
        ("p", TPM2B_ECC_PARAMETER),
        ("a", TPM2B_ECC_PARAMETER),
        ("b", TPM2B_ECC_PARAMETER),
        ("gX", TPM2B_ECC_PARAMETER),
        ("gY", TPM2B_ECC_PARAMETER),
        ("n", TPM2B_ECC_PARAMETER),
        ("h", TPM2B_ECC_PARAMETER),
    ],
)
