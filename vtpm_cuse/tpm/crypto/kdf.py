"""The key derivation functions of Part 1, clause 11.4.10 ("Key Derivation Function").

* :func:`kdfa` is SP800-108 in counter mode with HMAC as the PRF: every key
  the TPM derives from a secret (protection keys, session keys, context keys,
  primary keys) comes from it.
* :func:`kdfe` is the SP800-56A concatenation KDF, used with an ECDH shared
  point (salted sessions, ECC secrets).
* :class:`KdfStream` turns KDFa into an endless, reinstantiable stream of
  octets: the "random" source from which primary objects are generated.
"""

from __future__ import annotations

import hashlib
import hmac

from ..algorithms import hash_alg


def _label(label: bytes | str) -> bytes:
    """A label is followed by exactly one zero octet (a terminating NUL counts as that octet)."""
    if isinstance(label, str):
        label = label.encode()
    return label if label.endswith(b"\0") else label + b"\0"


def _truncate(out: bytearray, bits: int) -> bytes:
    """Keep ``bits`` bits; when they are not whole octets the leading octet is masked."""
    out = out[: (bits + 7) // 8]
    if bits % 8:
        out[0] &= (1 << (bits % 8)) - 1
    return bytes(out)


def kdfa(alg: int, key: bytes, label: bytes | str, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    """KDFa(hashAlg, key, label, contextU, contextV, bits).

    K(i) = HMAC_hash(key, [i]32 || label || 0x00 || contextU || contextV || [bits]32)
    for i = 1, 2, ...; the result is the leading ``bits`` bits of K(1) || K(2) || ...
    """
    if bits <= 0:
        return b""
    name = hash_alg(alg).hashlib_name
    fixed = _label(label) + bytes(context_u) + bytes(context_v) + bits.to_bytes(4, "big")
    out = bytearray()
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        out += hmac.new(key, counter.to_bytes(4, "big") + fixed, name).digest()
    return _truncate(out, bits)


def kdfe(alg: int, z: bytes, label: bytes | str, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """KDFe(hashAlg, Z, label, partyUInfo, partyVInfo, bits).

    K(i) = H([i]32 || Z || label || 0x00 || partyUInfo || partyVInfo); ``Z`` is the
    x-coordinate of the shared ECDH point.
    """
    if bits <= 0:
        return b""
    name = hash_alg(alg).hashlib_name
    other = _label(label) + bytes(party_u) + bytes(party_v)
    out = bytearray()
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        out += hashlib.new(name, counter.to_bytes(4, "big") + bytes(z) + other).digest()
    return _truncate(out, bits)


class KdfStream:
    """Deterministic octets derived from a secret with KDFa.

    Request ``n`` of a stream is KDFa(alg, key, label, contextU, contextV || [n]32,
    8 * size): the same (key, label, contexts) always yields the same sequence
    of requests, which is what makes primary objects reproducible from their
    hierarchy's seed.  Part 1 leaves the generator for primary objects to the
    vendor; this one uses nothing but the specification's own KDF, so every
    input the clause names (seed, template, use string) enters through KDFa.
    """

    __slots__ = ("_alg", "_key", "_label", "_context_u", "_context_v", "_requests")

    def __init__(
        self, alg: int, key: bytes, label: bytes | str, context_u: bytes = b"", context_v: bytes = b""
    ) -> None:
        self._alg = alg
        self._key = bytes(key)
        self._label = label
        self._context_u = bytes(context_u)
        self._context_v = bytes(context_v)
        self._requests = 0

    def __call__(self, size: int) -> bytes:
        self._requests += 1
        return kdfa(
            self._alg,
            self._key,
            self._label,
            self._context_u,
            self._context_v + self._requests.to_bytes(4, "big"),
            8 * size,
        )

    def skip(self, size: int) -> None:
        """Pass over the next request of ``size`` octets: its octets would be discarded unread.

        Each request is a function of its number alone, so the requests after it
        are the same whether it was computed or not (the prime search discards
        the Miller-Rabin base of every candidate it proves composite otherwise).
        """
        self._requests += 1

    def __repr__(self) -> str:
        return f"<KdfStream alg=0x{self._alg:04x} requests={self._requests}>"
