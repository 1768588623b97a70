"""Consistency checks of algorithm parameters beyond what unmarshalling checks.

Unmarshalling rejects unimplemented algorithms, key sizes and curves; what is
left are combinations (Part 1, "Object parameters"): a parent's symmetric
definition, an RSA exponent.  TestParms and (later) object creation share
these checks.
"""

from __future__ import annotations

from .constants import TPM_ALG
from .errors import TPM_RC, TpmError

_SMALL_PRIMES = (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def is_probable_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 3.3e24 (enough for a 32-bit exponent)."""
    if n < 2:
        return False
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in _SMALL_PRIMES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def check_symmetric(sym) -> None:
    """A key's protection scheme (symmetric of an asymmetric key) is AES-CFB or NULL."""
    if sym.algorithm != TPM_ALG.NULL and sym.mode != TPM_ALG.CFB:
        raise TpmError(TPM_RC.SYMMETRIC, f"parent symmetric mode 0x{sym.mode:x} is not CFB")


def check_public_parms(kind: int, parms) -> None:
    if kind == TPM_ALG.RSA:
        check_symmetric(parms.symmetric)
        if parms.exponent != 0 and (parms.exponent < 3 or not is_probable_prime(parms.exponent)):
            raise TpmError(TPM_RC.VALUE, f"RSA exponent {parms.exponent} is not an odd prime")
    elif kind == TPM_ALG.ECC:
        check_symmetric(parms.symmetric)
        if parms.scheme.scheme == TPM_ALG.ECDH and parms.kdf.scheme != TPM_ALG.NULL:
            # ECDH output goes through the caller's KDF; a key-level KDF would apply twice.
            raise TpmError(TPM_RC.KDF, "ECDH key with a KDF")
    elif kind == TPM_ALG.SYMCIPHER:
        if parms.sym.algorithm == TPM_ALG.NULL:
            raise TpmError(TPM_RC.SYMMETRIC, "symmetric cipher key without an algorithm")
