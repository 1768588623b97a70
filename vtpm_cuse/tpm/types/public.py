"""Algorithm parameters and public areas (Part 2, clauses 11-12).

These structures are shared by TestParms, the object commands and the
session commands; they are declared here once.
"""

from __future__ import annotations

from ..constants import TPM_ALG
from ..marshal import UINT32, Attributes, Field, SizedStruct, Struct, U, Union
from .buffers import (
    TPM2B_AUTH,
    TPM2B_DIGEST,
    TPM2B_ECC_PARAMETER,
    TPM2B_PUBLIC_KEY_RSA,
    TPM2B_SENSITIVE_DATA,
)
from .interfaces import (
    TPMI_AES_KEY_BITS,
    TPMI_ALG_ECC_SCHEME,
    TPMI_ALG_HASH,
    TPMI_ALG_KDF,
    TPMI_ALG_KEYEDHASH_SCHEME,
    TPMI_ALG_PUBLIC,
    TPMI_ALG_RSA_SCHEME,
    TPMI_ALG_SYM,
    TPMI_ALG_SYM_MODE,
    TPMI_ALG_SYM_OBJECT,
    TPMI_ECC_CURVE,
    TPMI_RSA_KEY_BITS,
)

__all__ = [
    "TPM2B_ECC_POINT",
    "TPM2B_PUBLIC",
    "TPM2B_PUBLIC_PLUS",
    "TPM2B_SENSITIVE_CREATE",
    "TPMA_OBJECT",
    "TPMS_ECC_PARMS",
    "TPMS_ECC_POINT",
    "TPMS_KEYEDHASH_PARMS",
    "TPMS_RSA_PARMS",
    "TPMS_SCHEME_HASH",
    "TPMS_SCHEME_XOR",
    "TPMS_SENSITIVE_CREATE",
    "TPMS_SYMCIPHER_PARMS",
    "TPMT_ECC_SCHEME",
    "TPMT_KDF_SCHEME",
    "TPMT_KEYEDHASH_SCHEME",
    "TPMT_PUBLIC",
    "TPMT_PUBLIC_PARMS",
    "TPMT_RSA_SCHEME",
    "TPMT_SYM_DEF",
    "TPMT_SYM_DEF_OBJECT",
    "TPMT_SYM_DEF_OBJECT_PLUS",
    "TPMU_ASYM_SCHEME",
    "TPMU_KDF_SCHEME",
    "TPMU_PUBLIC_ID",
    "TPMU_PUBLIC_PARMS",
    "TPMU_SCHEME_KEYEDHASH",
    "TPMU_SYM_KEY_BITS",
    "TPMU_SYM_MODE",
]

# --- symmetric definitions -------------------------------------------------
TPMU_SYM_KEY_BITS = Union(
    "TPMU_SYM_KEY_BITS", {TPM_ALG.AES: TPMI_AES_KEY_BITS, TPM_ALG.XOR: TPMI_ALG_HASH, TPM_ALG.NULL: None}
)
TPMU_SYM_MODE = Union("TPMU_SYM_MODE", {TPM_ALG.AES: TPMI_ALG_SYM_MODE.plus(), TPM_ALG.XOR: None, TPM_ALG.NULL: None})
TPMT_SYM_DEF = Struct(
    "TPMT_SYM_DEF",
    [
        ("algorithm", TPMI_ALG_SYM.plus()),
        U("keyBits", TPMU_SYM_KEY_BITS, "algorithm"),
        U("mode", TPMU_SYM_MODE, "algorithm"),
    ],
)
TPMT_SYM_DEF_OBJECT_PLUS = Struct(
    "TPMT_SYM_DEF_OBJECT",
    [
        ("algorithm", TPMI_ALG_SYM_OBJECT.plus()),
        U("keyBits", TPMU_SYM_KEY_BITS, "algorithm"),
        U("mode", TPMU_SYM_MODE, "algorithm"),
    ],
)
TPMT_SYM_DEF_OBJECT = Struct(
    "TPMT_SYM_DEF_OBJECT",
    [
        ("algorithm", TPMI_ALG_SYM_OBJECT),
        U("keyBits", TPMU_SYM_KEY_BITS, "algorithm"),
        U("mode", TPMU_SYM_MODE, "algorithm"),
    ],
)

# --- schemes ---------------------------------------------------------------
TPMS_SCHEME_HASH = Struct("TPMS_SCHEME_HASH", [("hashAlg", TPMI_ALG_HASH)])
TPMS_SCHEME_XOR = Struct("TPMS_SCHEME_XOR", [("hashAlg", TPMI_ALG_HASH), ("kdf", TPMI_ALG_KDF.plus())])
TPMU_SCHEME_KEYEDHASH = Union(
    "TPMU_SCHEME_KEYEDHASH", {TPM_ALG.HMAC: TPMS_SCHEME_HASH, TPM_ALG.XOR: TPMS_SCHEME_XOR, TPM_ALG.NULL: None}
)
TPMT_KEYEDHASH_SCHEME = Struct(
    "TPMT_KEYEDHASH_SCHEME",
    [("scheme", TPMI_ALG_KEYEDHASH_SCHEME.plus()), U("details", TPMU_SCHEME_KEYEDHASH, "scheme")],
)

TPMU_ASYM_SCHEME = Union(
    "TPMU_ASYM_SCHEME",
    {
        TPM_ALG.RSASSA: TPMS_SCHEME_HASH,
        TPM_ALG.RSAPSS: TPMS_SCHEME_HASH,
        TPM_ALG.OAEP: TPMS_SCHEME_HASH,
        TPM_ALG.ECDSA: TPMS_SCHEME_HASH,
        TPM_ALG.ECSCHNORR: TPMS_SCHEME_HASH,
        TPM_ALG.ECDH: TPMS_SCHEME_HASH,
        TPM_ALG.RSAES: None,
        TPM_ALG.NULL: None,
    },
)
TPMT_RSA_SCHEME = Struct(
    "TPMT_RSA_SCHEME", [("scheme", TPMI_ALG_RSA_SCHEME.plus()), U("details", TPMU_ASYM_SCHEME, "scheme")]
)
TPMT_ECC_SCHEME = Struct(
    "TPMT_ECC_SCHEME", [("scheme", TPMI_ALG_ECC_SCHEME.plus()), U("details", TPMU_ASYM_SCHEME, "scheme")]
)

TPMU_KDF_SCHEME = Union(
    "TPMU_KDF_SCHEME",
    {
        TPM_ALG.MGF1: TPMS_SCHEME_HASH,
        TPM_ALG.KDF1_SP800_56A: TPMS_SCHEME_HASH,
        TPM_ALG.KDF2: TPMS_SCHEME_HASH,
        TPM_ALG.KDF1_SP800_108: TPMS_SCHEME_HASH,
        TPM_ALG.NULL: None,
    },
)
TPMT_KDF_SCHEME = Struct("TPMT_KDF_SCHEME", [("scheme", TPMI_ALG_KDF.plus()), U("details", TPMU_KDF_SCHEME, "scheme")])

# --- public parameters -----------------------------------------------------
TPMS_KEYEDHASH_PARMS = Struct("TPMS_KEYEDHASH_PARMS", [("scheme", TPMT_KEYEDHASH_SCHEME)])
TPMS_SYMCIPHER_PARMS = Struct("TPMS_SYMCIPHER_PARMS", [("sym", TPMT_SYM_DEF_OBJECT)])
TPMS_RSA_PARMS = Struct(
    "TPMS_RSA_PARMS",
    [
        ("symmetric", TPMT_SYM_DEF_OBJECT_PLUS),
        ("scheme", TPMT_RSA_SCHEME),
        ("keyBits", TPMI_RSA_KEY_BITS),
        ("exponent", UINT32),
    ],
)
TPMS_ECC_PARMS = Struct(
    "TPMS_ECC_PARMS",
    [
        ("symmetric", TPMT_SYM_DEF_OBJECT_PLUS),
        ("scheme", TPMT_ECC_SCHEME),
        ("curveID", TPMI_ECC_CURVE),
        ("kdf", TPMT_KDF_SCHEME),
    ],
)
TPMU_PUBLIC_PARMS = Union(
    "TPMU_PUBLIC_PARMS",
    {
        TPM_ALG.KEYEDHASH: TPMS_KEYEDHASH_PARMS,
        TPM_ALG.SYMCIPHER: TPMS_SYMCIPHER_PARMS,
        TPM_ALG.RSA: TPMS_RSA_PARMS,
        TPM_ALG.ECC: TPMS_ECC_PARMS,
    },
)
TPMT_PUBLIC_PARMS = Struct("TPMT_PUBLIC_PARMS", [("type", TPMI_ALG_PUBLIC), U("parameters", TPMU_PUBLIC_PARMS, "type")])

# --- public area -----------------------------------------------------------
TPMS_ECC_POINT = Struct("TPMS_ECC_POINT", [("x", TPM2B_ECC_PARAMETER), ("y", TPM2B_ECC_PARAMETER)])
TPM2B_ECC_POINT = SizedStruct("TPM2B_ECC_POINT", TPMS_ECC_POINT)
TPMU_PUBLIC_ID = Union(
    "TPMU_PUBLIC_ID",
    {
        TPM_ALG.KEYEDHASH: TPM2B_DIGEST,
        TPM_ALG.SYMCIPHER: TPM2B_DIGEST,
        TPM_ALG.RSA: TPM2B_PUBLIC_KEY_RSA,
        TPM_ALG.ECC: TPMS_ECC_POINT,
    },
)
#: fixedTPM 1, stClear 2, fixedParent 4, sensitiveDataOrigin 5, userWithAuth 6, adminWithPolicy 7,
#: noDA 10, encryptedDuplication 11, restricted 16, decrypt 17, sign 18, x509sign 19.
TPMA_OBJECT = Attributes("TPMA_OBJECT", UINT32, 0xFFF0F309)
TPMT_PUBLIC = Struct(
    "TPMT_PUBLIC",
    [
        ("type", TPMI_ALG_PUBLIC),
        ("nameAlg", TPMI_ALG_HASH.plus()),
        ("objectAttributes", TPMA_OBJECT),
        ("authPolicy", TPM2B_DIGEST),
        U("parameters", TPMU_PUBLIC_PARMS, "type"),
        U("unique", TPMU_PUBLIC_ID, "type"),
    ],
)
#: TPM2B_PUBLIC+ (TPM2_LoadExternal's inPublic): nameAlg may be TPM_ALG_NULL.
TPM2B_PUBLIC_PLUS = SizedStruct("TPM2B_PUBLIC", TPMT_PUBLIC)
#: TPM2B_PUBLIC everywhere else (Create, CreatePrimary, Load, Import, and every output): TPMT_PUBLIC
#: without "+", so nameAlg TPM_ALG_NULL is TPM_RC_HASH when it is unmarshalled, before any other
#: check of the area (Part 2, TPMT_PUBLIC; libtpms alike).  The values are TPMT_PUBLIC's.
_TPMT_PUBLIC_NAMED = Struct(
    "TPMT_PUBLIC",
    [Field(f.name, TPMI_ALG_HASH if f.name == "nameAlg" else f.type, f.selector) for f in TPMT_PUBLIC.fields],
)
_TPMT_PUBLIC_NAMED.cls = TPMT_PUBLIC.cls
TPM2B_PUBLIC = SizedStruct("TPM2B_PUBLIC", _TPMT_PUBLIC_NAMED)

TPMS_SENSITIVE_CREATE = Struct("TPMS_SENSITIVE_CREATE", [("userAuth", TPM2B_AUTH), ("data", TPM2B_SENSITIVE_DATA)])
TPM2B_SENSITIVE_CREATE = SizedStruct("TPM2B_SENSITIVE_CREATE", TPMS_SENSITIVE_CREATE)
