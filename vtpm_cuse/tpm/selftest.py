"""Known-answer tests of the primitives the engine uses.

Vectors: SHA-1/SHA-2 of "abc" (FIPS 180 examples), HMAC-SHA-256 RFC 4231
test case 2, AES-128 FIPS-197 appendix C.1.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .constants import TPM_ALG

_HASH_KAT = {
    TPM_ALG.SHA1: ("sha1", "a9993e364706816aba3e25717850c26c9cd0d89d"),
    TPM_ALG.SHA256: ("sha256", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    TPM_ALG.SHA384: (
        "sha384",
        "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
    ),
    TPM_ALG.SHA512: (
        "sha512",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    ),
}


def _hash_ok(alg: int) -> bool:
    name, expected = _HASH_KAT[alg]
    return hashlib.new(name, b"abc").hexdigest() == expected


def _hmac_ok() -> bool:
    mac = hmac.new(b"Jefe", b"what do ya want for nothing?", "sha256").hexdigest()
    return mac == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def _aes_ok() -> bool:
    key = bytes(range(16))
    plain = bytes.fromhex("00112233445566778899aabbccddeeff")
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return (enc.update(plain) + enc.finalize()).hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"


def run_self_tests(algs) -> set[int]:
    """Test ``algs``; returns those that failed (algorithms without a KAT pass trivially)."""
    failed: set[int] = set()
    for alg in algs:
        if alg in _HASH_KAT:
            ok = _hash_ok(alg)
        elif alg == TPM_ALG.HMAC:
            ok = _hmac_ok()
        elif alg == TPM_ALG.AES:
            ok = _aes_ok()
        else:
            ok = True
        if not ok:
            failed.add(alg)
    return failed
