"""The TPM's random number generator.

Output is the operating system's CSPRNG, XORed with a SHAKE-256 stream keyed
by whatever TPM2_StirRandom added.  Stirred data can therefore add entropy
but never remove it: XOR with an independent uniform stream stays uniform.
"""

from __future__ import annotations

import hashlib
import os
import threading


class Rng:
    def __init__(self, source=os.urandom) -> None:
        self._source = source
        self._stir: bytes | None = None
        self._counter = 0
        self._lock = threading.Lock()

    def stir(self, data: bytes) -> None:
        with self._lock:
            self._stir = hashlib.sha512((self._stir or b"") + data).digest()

    def __call__(self, n: int) -> bytes:
        base = self._source(n)
        if self._stir is None or n == 0:
            return base
        with self._lock:
            self._counter += 1
            stream = hashlib.shake_256(self._stir + self._counter.to_bytes(8, "big")).digest(n)
        return bytes(a ^ b for a, b in zip(base, stream, strict=True))
