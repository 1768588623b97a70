"""Probable-prime search for RSA keys, in Python so that it can be interrupted.

Key generation is the one TPM operation that can take seconds, and the
platform may cancel it (CANCEL_TPM_CMD).  A C library call cannot be
interrupted, so the search runs here: candidates come from a caller-supplied
octet source (the TPM's RNG, or the deterministic stream of a primary key),
are sieved by every prime below 2**16 and tested with Miller-Rabin, and a
``checkpoint`` callback runs between batches of candidates -- it raises to
abandon the search.  The same source and the same checkpoints give the same primes, which
primary keys rely on.

The search itself is fixed: which candidates are tried, in which order, and
which Miller-Rabin bases are drawn from the source for each are what a
primary key *is* (tests/test_key_derivation_vectors.py pins them).  Only the
arithmetic may change.  The modular exponentiations, nearly all of the time,
run on GMP (gmpy2), seven times faster than Python's integers; each batch of
candidates is a few milliseconds at most, so a cancel is answered promptly.

Nearly every sieve survivor is composite and costs one modular exponentiation
whatever its base, so the search proves them composite with a fixed base 2,
several at once on all cores (:class:`_Cores`; GMP runs with the GIL
released), and in order passes over the one Miller-Rabin base the specified
test would have drawn before rejecting each.  A candidate that passes base 2
-- a prime, nearly always -- takes its specified rounds' bases from the source
at once and has them tested side by side.  This is draw for draw the
specified search except in two cases: a composite that base 2 rejects but
whose stream base is a strong liar (the specified test would have drawn a
second base), and a composite that passes base 2 but fails a later round
(it would have drawn fewer); for random 1024-bit candidates each is a chance
far below 2**-40.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from math import gcd, lcm

import gmpy2
from gmpy2 import mpz as _mpz
from gmpy2 import powmod as _powmod

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


def _sieve_groups(primes: tuple[int, ...]) -> tuple[tuple[int, tuple[tuple[int, int], ...]], ...]:
    """The sieve primes in runs whose product fits 64 bits, each with (p, (p + 1) / 2) per prime.

    (p + 1) / 2 is the inverse of 2 mod p.  One reduction of a candidate by a
    run's product (one GMP call on a machine word) replaces a reduction of the
    big candidate per prime: the sieve takes two thirds of the time.
    """
    groups, run, product = [], [], 1
    for p in primes:
        if product * p >= 1 << 64:
            groups.append((product, tuple(run)))
            run, product = [], 1
        run.append((p, (p + 1) >> 1))
        product *= p
    groups.append((product, tuple(run)))
    return tuple(groups)


_SIEVE_GROUPS = _sieve_groups(SIEVE_PRIMES)


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


def _strong_round(n: int, base: int) -> bool:
    """One Miller-Rabin round: is odd ``n`` a strong probable prime to ``base``?

    The exponentiation runs with the GIL released (gmpy2.powmod lets it go when
    the context allows; gmpy2.is_strong_prp keeps it), so rounds run on
    several cores at once (:class:`_Cores`).
    """
    d, s = n - 1, 0
    while not d & 1:
        d >>= 1
        s += 1
    m = _mpz(n)
    minus_one = m - 1
    with gmpy2.context(gmpy2.get_context(), allow_release_gil=True):
        x = _powmod(_mpz(base), _mpz(d), m)
    if x == 1 or x == minus_one:
        return True
    for _ in range(s - 1):
        x = x * x % m
        if x == minus_one:
            return True
    return False


class _Cores:
    """Runs a test on several values at once: the first in the caller's thread, the rest on helpers.

    The helper threads are started on first use and shared by every search of
    the process (a search runs on its TPM's worker thread; several TPMs
    searching at once share them).  ``width`` is one value per core, at most four.  A
    forked child has none of its parent's threads, so it starts its own helpers.
    """

    def __init__(self, cores: int) -> None:
        self.width = max(1, min(cores, 4))
        self._forget_helpers()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget_helpers)

    def _forget_helpers(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def _helpers(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.width - 1, thread_name_prefix="prime-test")
            return self._pool

    def map(self, test: Callable[[int], bool], values: Sequence[int]) -> list[bool]:
        """``test`` of each of ``values`` (at most ``width``), in order."""
        if len(values) == 1:
            return [test(values[0])]
        futures = [self._helpers().submit(test, value) for value in values[1:]]
        first = test(values[0])
        return [first, *(future.result() for future in futures)]

    def all(self, test: Callable[[int], bool], values: Sequence[int]) -> bool:
        """Whether ``test`` holds for all ``values``, ``width`` of them at a time."""
        return all(all(self.map(test, values[at : at + self.width])) for at in range(0, len(values), self.width))


_CORES = _Cores(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _discard(random: RandomSource, size: int) -> None:
    """Consume one request of ``size`` octets; a source that can skip one (KdfStream) skips it."""
    skip = getattr(random, "skip", None)
    if skip is None:
        random(size)
    else:
        skip(size)


def first_probable_prime(
    candidates: Sequence[int], rounds: int, random: RandomSource, checkpoint: Checkpoint
) -> int | None:
    """The first of ``candidates`` (sieved, in search order) that passes ``rounds`` Miller-Rabin rounds.

    The specified test draws a base from ``random`` for a round only when every
    earlier round passed, so a composite usually takes one draw and a prime
    ``rounds``.  Here each candidate that base 2 proves composite takes the one
    base the specified test would draw before rejecting it; one that passes
    base 2 takes its ``rounds`` bases at once and has them tested side by side
    (see the module docstring for when that differs from the specified test).
    """
    width = _CORES.width
    for at in range(0, len(candidates), width):
        checkpoint()
        batch = candidates[at : at + width]
        for candidate, passed in zip(batch, _CORES.map(lambda n: _strong_round(n, 2), batch), strict=True):
            if not passed:
                _discard(random, (candidate.bit_length() + 7) // 8 + 8)  # the size _random_below draws
                continue
            checkpoint()
            bases = [_random_below(candidate, random) for _ in range(rounds)]
            if _CORES.all(lambda base, n=candidate: _strong_round(n, base), bases):
                return candidate
    return None


def _sieve(start: int, window: int) -> bytearray:
    """alive[i] = 1 when start + 2i has no odd prime factor below 2**16 (start odd)."""
    alive = bytearray(b"\x01") * window
    big = _mpz(start)
    # start + 2i = 0 (mod p)  <=>  i = -start / 2 (mod p): the first multiple of p in the window.
    # A prime above the window strikes at most that one index, so only the hits are kept.
    firsts = [
        (p, f)
        for product, run in _SIEVE_GROUPS
        for r in (int(big % product),)
        for p, half in run
        if (f := (p - r % p) * half % p) < window
    ]
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
        candidates = []
        index = alive.find(1)
        while index >= 0:
            candidate = start + 2 * index
            if candidate.bit_length() != bits:
                break
            if gcd(candidate - 1, exponent) == 1:  # tested before any base is drawn
                candidates.append(candidate)
            index = alive.find(1, index + 1)
        prime = first_probable_prime(candidates, rounds, random, checkpoint)
        if prime is not None:
            return prime


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
