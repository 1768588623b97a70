"""Key generation for new objects, and rebuilding usable keys from loaded ones.

:func:`create_object` is the common core of TPM2_CreatePrimary, TPM2_Create
and TPM2_CreateLoaded: it fills the sensitive area and the ``unique`` field
of a validated template, drawing every random octet from one source -- the
TPM's RNG for ordinary objects, a :class:`~.crypto.kdf.KdfStream` over the
hierarchy seed for primary objects, which is what makes those reproducible.
Nothing here keeps a ``cryptography`` object: loaded objects hold integers
and octets, and :func:`rsa_private_key` / :func:`ecc_private_key` rebuild a
key when a command needs one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .algorithms import hash_alg
from .constants import TPM_ALG, TPM_ECC_CURVE, TPMA_OBJECT
from .crypto.kdf import KdfStream
from .crypto.primes import Checkpoint, RandomSource, rsa_primes
from .errors import TPM_RC, TpmError
from .parms import is_probable_prime

if TYPE_CHECKING:
    from .dispatcher import CommandContext
    from .objects import LoadedObject

#: The public exponent an RSA template's exponent of 0 stands for.
DEFAULT_RSA_EXPONENT = 65537


@dataclasses.dataclass(frozen=True)
class Curve:
    """An implemented curve: the ``cryptography`` curve, its octet size and its order n."""

    curve: type[ec.EllipticCurve]
    size: int
    order: int


CURVES: dict[int, Curve] = {
    TPM_ECC_CURVE.NIST_P192: Curve(ec.SECP192R1, 24, int("FFFFFFFFFFFFFFFFFFFFFFFF99DEF836146BC9B1B4D22831", 16)),
    TPM_ECC_CURVE.NIST_P224: Curve(
        ec.SECP224R1, 28, int("FFFFFFFFFFFFFFFFFFFFFFFFFFFF16A2E0B8F03E13DD29455C5C2A3D", 16)
    ),
    TPM_ECC_CURVE.NIST_P256: Curve(
        ec.SECP256R1, 32, int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
    ),
    TPM_ECC_CURVE.NIST_P384: Curve(
        ec.SECP384R1,
        48,
        int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16),
    ),
    TPM_ECC_CURVE.NIST_P521: Curve(
        ec.SECP521R1,
        66,
        int("01FF" + "FFFFFFFF" * 7 + "FFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409", 16),
    ),
}


@dataclasses.dataclass(frozen=True)
class CreatedObject:
    """A new object's parts: its public area (``unique`` filled in) and sensitive values."""

    area: Any  # TPMT_PUBLIC
    auth_value: bytes = dataclasses.field(repr=False)
    seed_value: bytes = dataclasses.field(repr=False)
    sensitive: bytes = dataclasses.field(repr=False)


def seed_digest(seed: bytes) -> bytes:
    """What the primary-key cache knows of a seed: a new seed is a new digest, so it misses."""
    return hashlib.sha256(b"vtpm-cuse primary cache\0" + bytes(seed)).digest()


@dataclasses.dataclass(frozen=True)
class CacheStats:
    """How the primary-key cache has answered so far (tests and benchmarks read it)."""

    hits: int
    misses: int
    entries: int


class PrimaryCache:
    """Recently derived primary objects, so that a repeated TPM2_CreatePrimary is instant.

    A primary object is a function of its hierarchy's seed, the template and
    inSensitive.data (commands/hierarchy.py); tpm2-tools recreates the same
    ones over and over.  Entries are keyed by (:func:`seed_digest`, template
    octets, inSensitive.data) and hold the derived parts without the
    authValue, which the command supplies each time and does not enter the
    derivation.  The cache lives in RAM only (it is no part of the state blobs)
    and holds no more than ``size`` objects.  TPM2_Clear, TPM2_ChangeEPS,
    TPM2_ChangePPS and a TPM Reset (the NULL seed) replace a seed, so its old
    entries can never match again; :meth:`lookup` also drops every entry whose
    seed is no longer one of ``live_seeds``, so key material of a retired seed
    does not stay in memory.  Objects derived ahead on another thread
    (derive_ahead.py) are :meth:`offer`-ed and taken in by the same call, in
    the engine's thread, only if their seed is still live.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[bytes, bytes, bytes], CreatedObject] = OrderedDict()
        #: Objects derived ahead on another thread (derive_ahead.py), taken in by :meth:`drop_retired`.
        self._offered: deque[tuple[tuple[bytes, bytes, bytes], CreatedObject]] = deque()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._offered.clear()

    def stats(self) -> CacheStats:
        return CacheStats(hits=self.hits, misses=self.misses, entries=len(self._entries))

    def offer(self, digest: bytes, template: bytes, data: bytes, created: CreatedObject) -> None:
        """An object derived ahead from the seed of ``digest`` (any thread may offer; the
        engine's thread takes it in, if that seed is still live, at its next lookup)."""
        self._offered.append(((digest, bytes(template), bytes(data)), dataclasses.replace(created, auth_value=b"")))

    def drop_retired(self, live_seeds: Iterable[bytes]) -> None:
        live = {seed_digest(seed) for seed in live_seeds}
        while self._offered:
            key, created = self._offered.popleft()
            if key[0] in live and key not in self._entries:
                self._store(key, created)
        for key in [key for key in self._entries if key[0] not in live]:
            del self._entries[key]

    def _store(self, key: tuple[bytes, bytes, bytes], created: CreatedObject) -> None:
        self._entries[key] = created
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def get_or_create(
        self, seed: bytes, template: bytes, data: bytes, auth_value: bytes, create: Callable[[], CreatedObject]
    ) -> CreatedObject:
        """The cached object for (seed, template, data) with ``auth_value``, or ``create()`` it.

        A ``create`` that raises (TPM_RC_CANCELED included) leaves the cache as it was.
        """
        key = (seed_digest(seed), bytes(template), bytes(data))
        cached = self._entries.get(key)
        if cached is None:
            self.misses += 1
            cached = dataclasses.replace(create(), auth_value=b"")
            self._store(key, cached)
        else:
            self.hits += 1
            self._entries.move_to_end(key)
        return dataclasses.replace(cached, auth_value=auth_value)


def cancel_checkpoint(ctx: CommandContext) -> Checkpoint:
    """A checkpoint that ends a cancelable command with TPM_RC_CANCELED once the platform asks."""
    if not ctx.command.cancelable:
        return lambda: None
    requested = ctx.engine.cancel_requested

    def checkpoint() -> None:
        if requested.is_set():
            raise TpmError(TPM_RC.CANCELED, f"{ctx.command.name} cancelled")

    return checkpoint


def rsa_exponent(parms) -> int:
    return parms.exponent or DEFAULT_RSA_EXPONENT


def keyed_hash_alg(area) -> int:
    """The hash that limits a keyed-hash object: its scheme's, or nameAlg for a data object."""
    scheme = area.parameters.scheme
    return area.nameAlg if scheme.scheme == TPM_ALG.NULL else scheme.details.hashAlg


class _BlockReader:
    """Octets of the TPM's RNG read a block at a time, for an ordinary key's prime search.

    The search asks for a Miller-Rabin base every millisecond or so, and each
    read of the RNG (os.urandom) drops and retakes the GIL.  A thread that
    releases the GIL that often starves the others, since CPython only forces a
    hand-over when a waiting thread saw no switch for 5 ms -- and the thread
    that must set the cancel flag (the control channel) is one of them.  Read
    in blocks, the search holds the GIL between bytecodes only and is
    preempted as usual.  The octets are the RNG's, in order; only a
    :class:`KdfStream` (a primary key) must keep its request boundaries, which
    are part of the derivation, so it is never wrapped.
    """

    __slots__ = ("_random", "_buffer", "_block")

    def __init__(self, random: RandomSource, block: int = 8192) -> None:
        self._random, self._buffer, self._block = random, b"", block

    def __call__(self, size: int) -> bytes:
        if len(self._buffer) < size:
            self._buffer += self._random(max(size, self._block))
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


def _ecc_scalar(curve: Curve, random: RandomSource) -> int:
    """A private scalar in [1, n-1] by FIPS 186-4 B.4.2 (testing candidates)."""
    bits = curve.order.bit_length()
    while True:
        candidate = int.from_bytes(random((bits + 7) // 8), "big") >> (-bits % 8)
        if candidate <= curve.order - 2:
            return candidate + 1


def create_object(area, auth_value: bytes, data: bytes, random: RandomSource, checkpoint: Checkpoint) -> CreatedObject:
    """Generate the key or take ``data`` (already checked against sensitiveDataOrigin).

    Order of draws from ``random``: the key material, then seedValue -- part of
    what a primary object's reproducibility depends on.
    """
    from .types import TPMS_ECC_POINT

    kind, parms = area.type, area.parameters
    if kind == TPM_ALG.RSA:
        bits = parms.keyBits
        exponent = rsa_exponent(parms)
        if exponent < DEFAULT_RSA_EXPONENT or not is_probable_prime(exponent):
            # Small exponents are refused, as by the reference TPM (only 2**16 + 1 is required).
            raise TpmError(TPM_RC.RANGE, f"RSA exponent {exponent} is not supported")
        # Ordinary keys search on the TPM's RNG read in blocks (see _BlockReader); the octets
        # left in the block are dropped, so seedValue below is a fresh read of the RNG.
        source = random if isinstance(random, KdfStream) else _BlockReader(random)
        p, q = rsa_primes(bits, exponent, source, checkpoint)
        unique: Any = (p * q).to_bytes(bits // 8, "big")
        sensitive = p.to_bytes(bits // 16, "big")
    elif kind == TPM_ALG.ECC:
        curve = CURVES[parms.curveID]
        d = _ecc_scalar(curve, random)
        point = ec.derive_private_key(d, curve.curve()).public_key().public_numbers()
        unique = TPMS_ECC_POINT(x=point.x.to_bytes(curve.size, "big"), y=point.y.to_bytes(curve.size, "big"))
        sensitive = d.to_bytes(curve.size, "big")
    elif kind == TPM_ALG.SYMCIPHER:
        size = parms.sym.keyBits // 8
        if data and len(data) != size:
            raise TpmError(TPM_RC.KEY_SIZE, f"symmetric key of {len(data)} octets, template says {size}")
        sensitive = data or random(size)
    else:  # KEYEDHASH
        alg = hash_alg(keyed_hash_alg(area))
        if data and area.objectAttributes & (TPMA_OBJECT.sign | TPMA_OBJECT.decrypt) and len(data) > alg.block_size:
            # Longer HMAC keys are hashed first and would have less entropy than they look.
            raise TpmError(TPM_RC.SIZE, f"keyed-hash key of {len(data)} octets exceeds the block size")
        sensitive = data or random(alg.digest_size)
    checkpoint()
    name_hash = hash_alg(area.nameAlg)
    seed = random(name_hash.digest_size)
    attrs = area.objectAttributes
    if kind in (TPM_ALG.SYMCIPHER, TPM_ALG.KEYEDHASH):
        # unique = H(obfuscation seed || key): identifies the key without revealing it.
        unique = name_hash.digest(seed + sensitive)
    elif attrs & TPMA_OBJECT.sign or not attrs & TPMA_OBJECT.restricted:
        seed = b""  # only a storage parent keeps a protection seed
    return CreatedObject(dataclasses.replace(area, unique=unique), auth_value, seed, sensitive)


def check_binding(area, sensitive_type: int, sensitive: bytes) -> None:
    """The sensitive part belongs to the public part (Load): bare TPM_RC_BINDING otherwise."""
    if sensitive_type != area.type:
        raise TpmError(TPM_RC.TYPE, "sensitive area of another type")
    if area.type == TPM_ALG.RSA:
        n = int.from_bytes(area.unique, "big")
        p = int.from_bytes(sensitive, "big")
        if len(area.unique) != area.parameters.keyBits // 8:
            raise TpmError(TPM_RC.KEY, "modulus size does not match keyBits")
        if p < 2 or n % p:
            raise TpmError(TPM_RC.BINDING, "prime does not divide the modulus")
    elif area.type == TPM_ALG.ECC:
        curve = CURVES[area.parameters.curveID]
        d = int.from_bytes(sensitive, "big")
        if not 0 < d < curve.order:
            raise TpmError(TPM_RC.KEY, "private scalar out of range")
        point = ec.derive_private_key(d, curve.curve()).public_key().public_numbers()
        unique = area.unique
        if (int.from_bytes(unique.x, "big"), int.from_bytes(unique.y, "big")) != (point.x, point.y):
            raise TpmError(TPM_RC.BINDING, "public point does not match the private scalar")


def rsa_private_key(obj: LoadedObject) -> rsa.RSAPrivateKey:
    """The RSA key of a loaded object, rebuilt from its modulus and stored prime."""
    area = obj.area
    n = int.from_bytes(area.unique, "big")
    e = rsa_exponent(area.parameters)
    p = int.from_bytes(obj.sensitive, "big")
    q = n // p
    d = pow(e, -1, (p - 1) * (q - 1))
    public = rsa.RSAPublicNumbers(e, n)
    return rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), public
    ).private_key()


def ecc_private_key(obj: LoadedObject) -> ec.EllipticCurvePrivateKey:
    curve = CURVES[obj.area.parameters.curveID]
    return ec.derive_private_key(int.from_bytes(obj.sensitive, "big"), curve.curve())
