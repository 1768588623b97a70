"""Probable-prime search for RSA keys, in Python so that it can be interrupted.

Key generation is the one TPM operation that can take seconds, and the
platform may cancel it (CANCEL_TPM_CMD).  A C library call cannot be
interrupted, so the search runs here: candidates come from a caller-supplied
octet source (the TPM's RNG, or the deterministic stream of a primary key),
are sieved by every prime below 2**16 and tested with Miller-Rabin, and a
``checkpoint`` callback runs between candidates -- it raises to abandon the
search.  The same source and the same checkpoints give the same primes, which
primary keys rely on.

The search itself is fixed: which candidates are tried, in which order, and
which Miller-Rabin bases are drawn from the source for each are what a
primary key *is* (tests/test_key_derivation_vectors.py pins them).  Only the
arithmetic may change.  With gmpy2 (GMP) installed the modular
exponentiations, which are nearly all of the time, run about seven times
faster; without it Python's own integers compute the same values.  Either way
each candidate is a few milliseconds at most, so a cancel is answered promptly.
"""

from __future__ import annotations

from collections.abc import Callable
from math import gcd, lcm

try:
    from gmpy2 import mpz as _mpz
    from gmpy2 import powmod as _powmod
except ImportError:  # pragma: no cover - gmpy2 is a dependency; the fallback gives the same values
    _mpz = int
    _powmod = pow

RandomSource = Callable[[int], bytes]
Checkpoint = Callable[[], None]


def _small_primes(limit: int) -> tuple[int, ...]:
    flags = bytearray(b"\x01") * limit
    flags[0:2] = b"\x00\x00"
    for i in range(2, int(limit**0.5) + 1):
        if flags[i]:
            flags[i * i :: i] = bytes(len(range(i * i, limit, i)))
    return tuple(i for i in range(3, limit) if flags[i])


#: Odd primes below 2**16: dividing by them removes ~90 % of odd candidates cheaply.
SIEVE_PRIMES = _small_primes(1 << 16)
#: (p, (p + 1) / 2) -- the inverse of 2 mod p -- for every sieve prime.
_SIEVE = tuple((p, (p + 1) >> 1) for p in SIEVE_PRIMES)


def miller_rabin_rounds(bits: int) -> int:
    """Rounds for a prime of ``bits`` bits: at least what FIPS 186-4 (Table C.2) asks for RSA."""
    if bits <= 512:
        return 7
    if bits <= 1024:
        return 5
    return 4


def _random_below(n: int, random: RandomSource) -> int:
    """A value in [2, n - 2] from ``random`` (the bias of a 64-bit surplus is negligible)."""
    size = (n.bit_length() + 7) // 8 + 8
    return 2 + int.from_bytes(random(size), "big") % (n - 3)


def is_probable_prime(n: int, rounds: int, random: RandomSource) -> bool:
    """Miller-Rabin with ``rounds`` bases drawn from ``random`` (n already sieved, odd, > 2**16).

    A base is drawn for a round only when every earlier round passed, so a
    composite usually takes one draw and a prime ``rounds``.
    """
    d, s = n - 1, 0
    while not d & 1:
        d >>= 1
        s += 1
    m, d, minus_one = _mpz(n), _mpz(d), _mpz(n - 1)
    for _ in range(rounds):
        x = _powmod(_mpz(_random_below(n, random)), d, m)
        if x == 1 or x == minus_one:
            continue
        for _ in range(s - 1):
            x = x * x % m
            if x == minus_one:
                break
        else:
            return False
    return True


def _sieve(start: int, window: int) -> bytearray:
    """alive[i] = 1 when start + 2i has no odd prime factor below 2**16 (start odd)."""
    alive = bytearray(b"\x01") * window
    # start + 2i = 0 (mod p)  <=>  i = -start / 2 (mod p): the first multiple of p in the window.
    # A prime above the window strikes at most that one index, so only the hits are kept.
    firsts = [(p, f) for p, half in _SIEVE if (f := (p - start % p) * half % p) < window]
    for p, first in firsts:
        if p < window:
            alive[first::p] = bytes(len(range(first, window, p)))
        else:
            alive[first] = 0
    return alive


def random_prime(bits: int, exponent: int, random: RandomSource, checkpoint: Checkpoint) -> int:
    """A probable prime p of exactly ``bits`` bits (a multiple of 8) with gcd(p - 1, exponent) = 1.

    The two top bits are set so that the product of two such primes has
    exactly ``2 * bits`` bits.  From a random start the odd numbers of a
    window are sieved at once; survivors are tested in order.
    """
    if bits % 8 or bits < 64:
        raise ValueError(f"prime size {bits} is not a multiple of 8 of at least 64")
    window = max(1024, bits)
    rounds = miller_rabin_rounds(bits)
    top = 3 << (bits - 2)
    while True:
        checkpoint()
        start = int.from_bytes(random(bits // 8), "big") | top | 1
        alive = _sieve(start, window)
        index = alive.find(1)
        while index >= 0:
            checkpoint()
            candidate = start + 2 * index
            if candidate.bit_length() != bits:
                break
            if gcd(candidate - 1, exponent) == 1 and is_probable_prime(candidate, rounds, random):
                return candidate
            index = alive.find(1, index + 1)


def rsa_primes(key_bits: int, exponent: int, random: RandomSource, checkpoint: Checkpoint) -> tuple[int, int]:
    """The primes (p, q) of an RSA key of ``key_bits`` bits (FIPS 186-4 B.3.3 conditions).

    |p - q| must exceed 2**(bits/2 - 100) and the private exponent must exceed
    2**(bits/2); a pair that fails is discarded and a new one drawn.
    """
    half = key_bits // 2
    while True:
        p = random_prime(half, exponent, random, checkpoint)
        q = random_prime(half, exponent, random, checkpoint)
        if abs(p - q) <= 1 << (half - 100):
            continue
        d = pow(exponent, -1, lcm(p - 1, q - 1))
        if d <= 1 << half:
            continue
        return p, q
