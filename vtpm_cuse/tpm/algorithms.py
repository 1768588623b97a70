"""The algorithms this engine implements, declared once.

GetCapability(TPM_CAP_ALGS), TestParms and the TPMI_ interface types all read
this table, so an algorithm is reported exactly when the engine can use it.
"""

from __future__ import annotations

import dataclasses
import hashlib

from .constants import TPM_ALG, TPM_ECC_CURVE
from .constants import TPMA_ALGORITHM as A


@dataclasses.dataclass(frozen=True)
class HashAlg:
    alg: TPM_ALG
    hashlib_name: str
    digest_size: int
    block_size: int

    def new(self, data: bytes = b""):
        return hashlib.new(self.hashlib_name, data)

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.hashlib_name, data).digest()


HASHES: dict[int, HashAlg] = {
    h.alg: h
    for h in (
        HashAlg(TPM_ALG.SHA1, "sha1", 20, 64),
        HashAlg(TPM_ALG.SHA256, "sha256", 32, 64),
        HashAlg(TPM_ALG.SHA384, "sha384", 48, 128),
        HashAlg(TPM_ALG.SHA512, "sha512", 64, 128),
    )
}


def hash_alg(alg: int) -> HashAlg:
    return HASHES[alg]


#: Every implemented algorithm and its TPMA_ALGORITHM attributes (Part 2, TPMA_ALGORITHM;
#: attributes as the TCG Algorithm Registry lists them).
ALGORITHMS: dict[int, int] = {
    TPM_ALG.RSA: A.asymmetric | A.object,
    TPM_ALG.SHA1: A.hash,
    TPM_ALG.HMAC: A.hash | A.signing,
    TPM_ALG.AES: A.symmetric,
    TPM_ALG.MGF1: A.hash | A.method,
    TPM_ALG.KEYEDHASH: A.hash | A.object | A.signing | A.encrypting,
    TPM_ALG.XOR: A.hash | A.symmetric,
    TPM_ALG.SHA256: A.hash,
    TPM_ALG.SHA384: A.hash,
    TPM_ALG.SHA512: A.hash,
    TPM_ALG.RSASSA: A.asymmetric | A.signing,
    TPM_ALG.RSAES: A.asymmetric | A.encrypting,
    TPM_ALG.RSAPSS: A.asymmetric | A.signing,
    TPM_ALG.OAEP: A.asymmetric | A.encrypting,
    TPM_ALG.ECDSA: A.asymmetric | A.signing,
    TPM_ALG.ECDH: A.asymmetric | A.method,
    TPM_ALG.ECSCHNORR: A.asymmetric | A.signing,
    TPM_ALG.KDF1_SP800_56A: A.hash | A.method,
    TPM_ALG.KDF2: A.hash | A.method,
    TPM_ALG.KDF1_SP800_108: A.hash | A.method,
    TPM_ALG.ECC: A.asymmetric | A.object,
    TPM_ALG.SYMCIPHER: A.object,
    TPM_ALG.CTR: A.symmetric | A.encrypting,
    TPM_ALG.OFB: A.symmetric | A.encrypting,
    TPM_ALG.CBC: A.symmetric | A.encrypting,
    TPM_ALG.CFB: A.symmetric | A.encrypting,
    TPM_ALG.ECB: A.symmetric | A.encrypting,
    TPM_ALG.CMAC: A.symmetric | A.signing,
}

SYM_KEY_BITS: dict[int, tuple[int, ...]] = {TPM_ALG.AES: (128, 192, 256)}
SYM_MODES = (TPM_ALG.CTR, TPM_ALG.OFB, TPM_ALG.CBC, TPM_ALG.CFB, TPM_ALG.ECB)
#: Block-cipher MAC modes (TPM2_MAC with a symmetric key); not modes a key may be made with here.
SYM_MAC_MODES = (TPM_ALG.CMAC,)
RSA_KEY_BITS = (1024, 2048, 3072, 4096)
ECC_CURVES = (
    TPM_ECC_CURVE.NIST_P192,
    TPM_ECC_CURVE.NIST_P224,
    TPM_ECC_CURVE.NIST_P256,
    TPM_ECC_CURVE.NIST_P384,
    TPM_ECC_CURVE.NIST_P521,
)
KDFS = (TPM_ALG.MGF1, TPM_ALG.KDF1_SP800_56A, TPM_ALG.KDF2, TPM_ALG.KDF1_SP800_108)
