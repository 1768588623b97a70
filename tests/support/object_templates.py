"""Object templates and object-command builders for tests and benchmarks.

Attribute bits and structures are spelled out here independently of the
engine's own tables, so a test built from them checks the engine against
Part 2 rather than against itself.
"""

from __future__ import annotations

from support.tpm_client import command, tpm2b, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH

# TPMA_OBJECT bits
FIXED_TPM, ST_CLEAR, FIXED_PARENT, SDO, USER_WITH_AUTH = 1 << 1, 1 << 2, 1 << 4, 1 << 5, 1 << 6
ADMIN_WITH_POLICY, NO_DA, ENC_DUP, RESTRICTED, DECRYPT, SIGN = 1 << 7, 1 << 10, 1 << 11, 1 << 16, 1 << 17, 1 << 18
STORAGE = FIXED_TPM | FIXED_PARENT | SDO | USER_WITH_AUTH | NO_DA | RESTRICTED | DECRYPT
SIGNING = FIXED_TPM | FIXED_PARENT | SDO | USER_WITH_AUTH | SIGN
SEALED = FIXED_TPM | FIXED_PARENT | USER_WITH_AUTH | NO_DA

AES128_CFB = T.TPMT_SYM_DEF_OBJECT_PLUS(algorithm=TPM_ALG.AES, keyBits=128, mode=TPM_ALG.CFB)
NO_SYM = T.TPMT_SYM_DEF_OBJECT_PLUS(algorithm=TPM_ALG.NULL, keyBits=None, mode=None)
NIST_P256 = 0x0003

pw = b""  # the empty password of a fresh hierarchy


# --- templates -----------------------------------------------------------------------------------


def _scheme(struct, scheme: int, hash_alg: int | None):
    return struct(scheme=scheme, details=None if hash_alg is None else T.TPMS_SCHEME_HASH(hashAlg=hash_alg))


def rsa_template(
    attrs: int = STORAGE,
    bits: int = 2048,
    sym=AES128_CFB,
    scheme: int = TPM_ALG.NULL,
    hash_alg: int | None = None,
    exponent: int = 0,
    unique: bytes = b"",
    name_alg: int = TPM_ALG.SHA256,
    policy: bytes = b"",
):
    return T.TPMT_PUBLIC(
        type=TPM_ALG.RSA,
        nameAlg=name_alg,
        objectAttributes=attrs,
        authPolicy=policy,
        parameters=T.TPMS_RSA_PARMS(
            symmetric=sym, scheme=_scheme(T.TPMT_RSA_SCHEME, scheme, hash_alg), keyBits=bits, exponent=exponent
        ),
        unique=unique,
    )


def ecc_template(
    attrs: int = STORAGE,
    curve: int = NIST_P256,
    sym=AES128_CFB,
    scheme: int = TPM_ALG.NULL,
    hash_alg: int | None = None,
    unique_x: bytes = b"",
    name_alg: int = TPM_ALG.SHA256,
):
    return T.TPMT_PUBLIC(
        type=TPM_ALG.ECC,
        nameAlg=name_alg,
        objectAttributes=attrs,
        authPolicy=b"",
        parameters=T.TPMS_ECC_PARMS(
            symmetric=sym,
            scheme=_scheme(T.TPMT_ECC_SCHEME, scheme, hash_alg),
            curveID=curve,
            kdf=T.TPMT_KDF_SCHEME(scheme=TPM_ALG.NULL, details=None),
        ),
        unique=T.TPMS_ECC_POINT(x=unique_x, y=b""),
    )


def keyedhash_template(attrs: int = SEALED, scheme: int = TPM_ALG.NULL, hash_alg: int = TPM_ALG.SHA256):
    details = None if scheme == TPM_ALG.NULL else T.TPMS_SCHEME_HASH(hashAlg=hash_alg)
    return T.TPMT_PUBLIC(
        type=TPM_ALG.KEYEDHASH,
        nameAlg=TPM_ALG.SHA256,
        objectAttributes=attrs,
        authPolicy=b"",
        parameters=T.TPMS_KEYEDHASH_PARMS(scheme=T.TPMT_KEYEDHASH_SCHEME(scheme=scheme, details=details)),
        unique=b"",
    )


def symcipher_template(attrs: int = FIXED_TPM | FIXED_PARENT | SDO | USER_WITH_AUTH | DECRYPT, bits: int = 128):
    return T.TPMT_PUBLIC(
        type=TPM_ALG.SYMCIPHER,
        nameAlg=TPM_ALG.SHA256,
        objectAttributes=attrs,
        authPolicy=b"",
        parameters=T.TPMS_SYMCIPHER_PARMS(
            sym=T.TPMT_SYM_DEF_OBJECT(algorithm=TPM_ALG.AES, keyBits=bits, mode=TPM_ALG.CFB)
        ),
        unique=b"",
    )


def creation_params(
    area, auth: bytes = b"", data: bytes = b"", outside: bytes = b"", pcrs: list | None = None
) -> bytes:
    return (
        T.TPM2B_SENSITIVE_CREATE.pack(T.TPMS_SENSITIVE_CREATE(userAuth=auth, data=data))
        + T.TPM2B_PUBLIC.pack(area)
        + tpm2b(outside)
        + T.TPML_PCR_SELECTION.pack(pcrs or [])
    )


def create_primary_cmd(area, hierarchy: int = TPM_RH.OWNER, hierarchy_auth: bytes = pw, **kw) -> bytes:
    return command(TPM_CC.CreatePrimary, creation_params(area, **kw), u32(hierarchy), hierarchy_auth)


def create_cmd(parent: int, area, parent_auth: bytes = pw, **kw) -> bytes:
    return command(TPM_CC.Create, creation_params(area, **kw), u32(parent), parent_auth)


def load_cmd(parent: int, private: bytes, public, parent_auth: bytes = pw) -> bytes:
    return command(TPM_CC.Load, T.TPM2B_PRIVATE.pack(private) + T.TPM2B_PUBLIC.pack(public), u32(parent), parent_auth)
