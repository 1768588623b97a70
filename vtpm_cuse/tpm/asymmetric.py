"""The asymmetric primitives behind Part 3 clause 14: RSA encryption and decryption with
the TPM's padding rules, ECDH point multiplication, ECC encryption (C1, C2, C3), and the
domain parameters of the implemented curves.

Everything that ``cryptography`` offers is taken from it: OAEP and RSAES-PKCS1-v1_5
encryption, OAEP decryption, ECDH, point validation, key derivation from a scalar.  Two
things it does not offer are built on top of it, and only from its results:

* **The RSA private operation without padding.**  ``cryptography`` has no textbook RSA,
  and its RSAES-PKCS1-v1_5 decryption applies implicit rejection (a bad padding yields a
  pseudo-random message), while Part 3 wants TPM_RC_VALUE for a bad padding and the
  whole decrypted block for TPM_ALG_NULL.  So RSADP is done here, with the CRT values
  ``cryptography`` computes and with the input blinded by a random factor, so the time it
  takes does not depend on the ciphertext the caller chose.
* **The y-coordinate of an ECDH result.**  ECDH gives the x-coordinate of d*Q only, and
  TPM2_ECDH_ZGen returns the whole point.  With x0, x+ and x- the x-coordinates of d*Q,
  (d+1)*Q and (d-1)*Q (three ECDH exchanges), the chord rule gives
  x+ - x- = -4 * y0 * yQ / (xQ - x0)^2, so y0 follows by field arithmetic on values that
  are all determined by the public point and the result; the point is then validated by
  ``cryptography`` before it is returned.  TPM2_ECC_Encrypt and TPM2_ECC_Decrypt (1.83)
  need the whole point [k]Q too, and take it from the same function.

The commit state that TPM2_EC_Ephemeral and TPM2_ZGen_2Phase share (the reference TPM's
commitNonce, commitCounter and commitArray) is kept here too: see "The commit state" below.

Every function raises bare response codes; the command places them.
"""

from __future__ import annotations

import dataclasses
import hmac
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from gmpy2 import powmod_sec as _powmod_sec

from .algorithms import hash_alg
from .constants import TPM_ALG, TPM_ECC_CURVE
from .crypto.kdf import kdfa
from .errors import TPM_RC, TpmError
from .keys import CURVES, _ecc_scalar, rsa_exponent, rsa_private_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from .engine import Engine
    from .objects import LoadedObject
    from .state import PermanentState

#: The hashes OAEP may use, as ``cryptography`` names them.
OAEP_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    TPM_ALG.SHA1: hashes.SHA1,
    TPM_ALG.SHA256: hashes.SHA256,
    TPM_ALG.SHA384: hashes.SHA384,
    TPM_ALG.SHA512: hashes.SHA512,
}
#: RSAES-PKCS1-v1_5: 0x00 || 0x02 || PS (at least 8 non-zero octets) || 0x00 || M.
PKCS1_V15_OVERHEAD = 11
PKCS1_V15_MIN_PADDING = 8
PKCS1_V15_ENCRYPTION_BLOCK = 0x02
#: OAEP: 0x00 || maskedSeed (hLen) || maskedDB (hLen for lHash, PS, 0x01, M).
OAEP_FIXED_OCTETS = 2


# --- RSA ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RsaScheme:
    """The padding one RSA_Encrypt / RSA_Decrypt uses: RSAES, OAEP (with its hash), or NULL (raw)."""

    scheme: int
    hash_alg: int = TPM_ALG.NULL


def select_rsa_scheme(key_scheme, in_scheme) -> RsaScheme | None:
    """The scheme to use: the key's when the caller gives TPM_ALG_NULL, the caller's when the
    key has none, and otherwise the two must be the same scheme with the same hash.
    None when they differ (the command answers TPM_RC_SCHEME)."""

    def of(scheme) -> RsaScheme:
        details = scheme.details
        return RsaScheme(scheme.scheme, details.hashAlg if details is not None else TPM_ALG.NULL)

    if key_scheme.scheme == TPM_ALG.NULL:
        return of(in_scheme)
    if in_scheme.scheme == TPM_ALG.NULL:
        return of(key_scheme)
    return of(in_scheme) if of(key_scheme) == of(in_scheme) else None


def label_well_formed(label: bytes) -> bool:
    """A label is absent or a NUL-terminated string; the terminating zero is part of L."""
    return not label or label[-1] == 0


def _modulus(key: LoadedObject) -> tuple[int, int]:
    """(n, k): the key's modulus and its size in octets."""
    unique = key.area.unique
    return int.from_bytes(unique, "big"), len(unique)


def _oaep(scheme: RsaScheme, label: bytes) -> padding.OAEP:
    algorithm = OAEP_HASHES[scheme.hash_alg]()
    return padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=label or None)


def rsa_encrypt(key: LoadedObject, scheme: RsaScheme, label: bytes, message: bytes) -> bytes:
    """RSAEP of ``message`` padded by ``scheme``; always an octet string of the modulus size.

    TPM_RC_VALUE when the message does not fit the padding (or, raw, exceeds the modulus);
    TPM_RC_HASH when the OAEP hash is too large for the key.
    """
    n, k = _modulus(key)
    public = rsa.RSAPublicNumbers(rsa_exponent(key.area.parameters), n)
    if scheme.scheme == TPM_ALG.NULL:
        value = int.from_bytes(message, "big")
        if value >= n:
            raise TpmError(TPM_RC.VALUE, "message is not smaller than the modulus")
        return pow(value, public.e, n).to_bytes(k, "big")
    if scheme.scheme == TPM_ALG.RSAES:
        if len(message) > k - PKCS1_V15_OVERHEAD:
            raise TpmError(TPM_RC.VALUE, f"message of {len(message)} octets exceeds RSAES for a {k}-octet key")
        return public.public_key().encrypt(message, padding.PKCS1v15())
    digest_size = hash_alg(scheme.hash_alg).digest_size
    if k < 2 * digest_size + OAEP_FIXED_OCTETS:
        raise TpmError(TPM_RC.HASH, f"OAEP hash 0x{scheme.hash_alg:04x} is too large for a {k}-octet key")
    if len(message) > k - 2 * digest_size - OAEP_FIXED_OCTETS:
        raise TpmError(TPM_RC.VALUE, f"message of {len(message)} octets exceeds OAEP for a {k}-octet key")
    return public.public_key().encrypt(message, _oaep(scheme, label))


def rsa_decrypt(
    key: LoadedObject,
    scheme: RsaScheme,
    label: bytes,
    ciphertext: bytes,
    random: Callable[[int], bytes],
    checkpoint: Callable[[], None],
) -> bytes:
    """RSADP of ``ciphertext`` and removal of the ``scheme``'s padding.

    TPM_RC_SIZE when the ciphertext is not of the modulus size; TPM_RC_VALUE when its value
    is not below the modulus or the padding is not valid.  ``checkpoint`` runs right before
    the private-key operation (cancellation).
    """
    n, k = _modulus(key)
    if len(ciphertext) != k:
        raise TpmError(TPM_RC.SIZE, f"cipherText of {len(ciphertext)} octets, the modulus has {k}")
    value = int.from_bytes(ciphertext, "big")
    if value >= n:
        raise TpmError(TPM_RC.VALUE, "cipherText is not smaller than the modulus")
    private = rsa_private_key(key)
    if scheme.scheme == TPM_ALG.OAEP:
        checkpoint()
        try:
            return private.decrypt(ciphertext, _oaep(scheme, label))
        except ValueError:
            raise TpmError(TPM_RC.VALUE, "OAEP decoding failed") from None
    blinding = _blinding_factor(n, random)
    checkpoint()
    block = _rsadp(private.private_numbers(), value, blinding, random).to_bytes(k, "big")
    if scheme.scheme == TPM_ALG.NULL:
        return block
    return _pkcs1_v15_decode(block)


def _blinding_factor(n: int, random: Callable[[int], bytes]) -> int:
    """A random r in [2, n-1] invertible modulo n (gcd(r, n) != 1 would factor n: never in practice)."""
    size = (n.bit_length() + 7) // 8
    while True:
        r = int.from_bytes(random(size), "big") % n
        if r > 1 and _invertible(r, n):
            return r


def _invertible(r: int, n: int) -> bool:
    try:
        pow(r, -1, n)
    except ValueError:
        return False
    return True


#: Octets of the random multiples of p-1 and q-1 added to the CRT exponents (exponent blinding).
EXPONENT_BLINDING_OCTETS = 8


def _rsadp(numbers: rsa.RSAPrivateNumbers, c: int, r: int, random: Callable[[int], bytes]) -> int:
    """c^d mod n by the CRT, on c * r^e (base blinding, unblinded with r^-1 at the end).

    `cryptography` has no raw RSA private operation, and its PKCS#1 v1.5 decryption
    hides bad padding (implicit rejection), which Part 3 must report; so this one step is
    done here.  It must not leak the key through timing: the exponentiations run in
    GMP's constant-time powmod_sec, on exponents blinded with random multiples of p-1
    and q-1 (which leave the result unchanged), and on a blinded base.
    """
    public = numbers.public_numbers
    n = public.n
    blinded = c * pow(r, public.e, n) % n
    k1, k2 = (int.from_bytes(random(EXPONENT_BLINDING_OCTETS), "big") for _ in range(2))
    m1 = int(_powmod_sec(blinded, numbers.dmp1 + k1 * (numbers.p - 1), numbers.p))
    m2 = int(_powmod_sec(blinded, numbers.dmq1 + k2 * (numbers.q - 1), numbers.q))
    h = numbers.iqmp * (m1 - m2) % numbers.p
    return (m2 + h * numbers.q) * pow(r, -1, n) % n


def _pkcs1_v15_decode(block: bytes) -> bytes:
    """M of an RSAES-PKCS1-v1_5 encryption block; TPM_RC_VALUE when it is not one."""
    separator = block.find(b"\0", 2)
    if (
        len(block) < PKCS1_V15_OVERHEAD
        or block[0] != 0
        or block[1] != PKCS1_V15_ENCRYPTION_BLOCK
        or separator < 2 + PKCS1_V15_MIN_PADDING
    ):
        raise TpmError(TPM_RC.VALUE, "RSAES-PKCS1-v1_5 decoding failed")
    return block[separator + 1 :]


# --- ECC ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CurveDomain:
    """What ECC_Parameters reports of a curve besides the generator and order (which come
    from ``cryptography`` and :data:`~.keys.CURVES`): the field prime, and the KDF the
    reference TPM associates with the curve (SP800-56A with the hash of matching strength)."""

    key_bits: int
    p: int
    kdf_hash: int

    @property
    def a(self) -> int:
        """Every implemented curve is a NIST prime curve: a = -3."""
        return self.p - 3


#: Field primes of the NIST curves (FIPS 186-4, D.1.2).  The KDF hash is the reference
#: TPM's: SHA-256 for P-192 and P-224 too (libtpms reports the same in ECC_Parameters).
DOMAINS: dict[int, CurveDomain] = {
    TPM_ECC_CURVE.NIST_P192: CurveDomain(192, 2**192 - 2**64 - 1, TPM_ALG.SHA256),
    TPM_ECC_CURVE.NIST_P224: CurveDomain(224, 2**224 - 2**96 + 1, TPM_ALG.SHA256),
    TPM_ECC_CURVE.NIST_P256: CurveDomain(256, 2**256 - 2**224 + 2**192 + 2**96 - 1, TPM_ALG.SHA256),
    TPM_ECC_CURVE.NIST_P384: CurveDomain(384, 2**384 - 2**128 - 2**96 + 2**32 - 1, TPM_ALG.SHA384),
    TPM_ECC_CURVE.NIST_P521: CurveDomain(521, 2**521 - 1, TPM_ALG.SHA512),
}
#: The cofactor of every NIST prime curve.
NIST_COFACTOR = 1


def _octets(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


def _generator(curve_id: int) -> ec.EllipticCurvePublicNumbers:
    return ec.derive_private_key(1, CURVES[curve_id].curve()).public_key().public_numbers()


def curve_parameters(curve_id: int):
    """TPMS_ALGORITHM_DETAIL_ECC of an implemented curve (b is derived from the generator)."""
    from .types import TPMS_ALGORITHM_DETAIL_ECC, TPMS_SCHEME_HASH, TPMT_ECC_SCHEME, TPMT_KDF_SCHEME

    curve, domain = CURVES[curve_id], DOMAINS[curve_id]
    g = _generator(curve_id)
    p = domain.p
    b = (g.y * g.y - g.x**3 - domain.a * g.x) % p
    size = curve.size
    return TPMS_ALGORITHM_DETAIL_ECC(
        curveID=curve_id,
        keySize=domain.key_bits,
        kdf=TPMT_KDF_SCHEME(scheme=TPM_ALG.KDF1_SP800_56A, details=TPMS_SCHEME_HASH(hashAlg=domain.kdf_hash)),
        sign=TPMT_ECC_SCHEME(scheme=TPM_ALG.NULL, details=None),
        p=_octets(p, size),
        a=_octets(domain.a, size),
        b=_octets(b, size),
        gX=_octets(g.x, size),
        gY=_octets(g.y, size),
        n=_octets(curve.order, size),
        h=_octets(NIST_COFACTOR, 1),
    )


def public_key(curve_id: int, point) -> ec.EllipticCurvePublicKey:
    """The TPMS_ECC_POINT as a key on the curve; TPM_RC_ECC_POINT when it is not a point of it.

    Coordinates are numbers: leading zero octets, missing or extra, do not matter.
    """
    curve = CURVES[curve_id]
    x, y = point.x.lstrip(b"\0"), point.y.lstrip(b"\0")
    if len(x) > curve.size or len(y) > curve.size:
        raise TpmError(TPM_RC.ECC_POINT, f"coordinate larger than the {curve.size} octets of the curve")
    encoded = b"\x04" + x.rjust(curve.size, b"\0") + y.rjust(curve.size, b"\0")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve.curve(), encoded)
    except ValueError:
        raise TpmError(TPM_RC.ECC_POINT, "the point is not on the curve") from None


def _x_of(curve_id: int, scalar: int, peer: ec.EllipticCurvePublicKey) -> int:
    private = ec.derive_private_key(scalar, CURVES[curve_id].curve())
    return int.from_bytes(private.exchange(ec.ECDH(), peer), "big")


def multiply(curve_id: int, scalar: int, peer: ec.EllipticCurvePublicKey):
    """scalar * peer as a TPMS_ECC_POINT, for a scalar in [1, n-1] and a validated point.

    A curve of prime order has no point of order two, so yQ != 0, and scalar * Q = +-Q
    only for scalar = 1 or n-1, which are answered directly.
    """
    from .types import TPMS_ECC_POINT

    curve = CURVES[curve_id]
    p = DOMAINS[curve_id].p
    q = peer.public_numbers()
    if scalar == 1:
        x, y = q.x, q.y
    elif scalar == curve.order - 1:
        x, y = q.x, p - q.y
    else:
        x = _x_of(curve_id, scalar, peer)
        x_plus = _x_of(curve_id, scalar + 1, peer)
        x_minus = _x_of(curve_id, scalar - 1, peer)
        y = (x_minus - x_plus) * (q.x - x) ** 2 * pow(4 * q.y, -1, p) % p
    point = TPMS_ECC_POINT(x=_octets(x, curve.size), y=_octets(y, curve.size))
    public_key(curve_id, point)  # cryptography confirms the result is a point of the curve
    return point


def private_scalar(key: LoadedObject) -> int:
    return int.from_bytes(key.sensitive, "big")


def ephemeral_key(curve_id: int, random: Callable[[int], bytes]) -> tuple[int, ec.EllipticCurvePublicKey]:
    """A fresh key pair on the curve from the TPM's RNG: (scalar, public key)."""
    scalar = _ecc_scalar(CURVES[curve_id], random)
    return scalar, ec.derive_private_key(scalar, CURVES[curve_id].curve()).public_key()


def point_of(curve_id: int, key: ec.EllipticCurvePublicKey):
    from .types import TPMS_ECC_POINT

    numbers, size = key.public_numbers(), CURVES[curve_id].size
    return TPMS_ECC_POINT(x=_octets(numbers.x, size), y=_octets(numbers.y, size))


def generator_multiple(curve_id: int, scalar: int):
    """scalar * G as a TPMS_ECC_POINT, for a scalar in [1, n-1]."""
    return point_of(curve_id, ec.derive_private_key(scalar, CURVES[curve_id].curve()).public_key())


# --- ECC encryption (TPM2_ECC_Encrypt / TPM2_ECC_Decrypt, revision 1.83) ----------------------

#: The one KDF the reference TPM's ECC encryption implements.
ECC_ENCRYPT_KDF = TPM_ALG.KDF2


@dataclasses.dataclass(frozen=True)
class EccCiphertext:
    """(C1, C2, C3): the ephemeral point [k]G, M XOR the mask, H(x2 || M || y2)."""

    c1: Any  # TPMS_ECC_POINT
    c2: bytes
    c3: bytes


def select_kdf_scheme(key_kdf, in_scheme):
    """The KDF scheme of ECC_Encrypt/ECC_Decrypt: the caller's, or the key's when the caller
    gives TPM_ALG_NULL; a key that names one takes only that one (scheme and hash).  None when
    neither names one or they differ."""
    scheme = key_kdf if in_scheme.scheme == TPM_ALG.NULL else in_scheme
    if scheme.scheme == TPM_ALG.NULL:
        return None
    if key_kdf.scheme != TPM_ALG.NULL and (key_kdf.scheme, key_kdf.details.hashAlg) != (
        scheme.scheme,
        scheme.details.hashAlg,
    ):
        return None
    return scheme


def _kdf2(alg: int, z: bytes, size: int) -> bytes:
    """KDF2 (ISO/IEC 18033-2): H(Z || [1]32) || H(Z || [2]32) || ..., the first ``size`` octets."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        counter += 1
        out += hash_alg(alg).digest(z + counter.to_bytes(4, "big"))
    return bytes(out[:size])


def _mask(alg: int, shared, text: bytes) -> bytes:
    """``text`` XOR KDF2(x2 || y2): encrypts M, and decrypts C2."""
    mask = _kdf2(alg, shared.x + shared.y, len(text))
    return bytes(a ^ b for a, b in zip(text, mask, strict=True))


def _check_value(alg: int, shared, message: bytes) -> bytes:
    """C3 = H(x2 || M || y2), the coordinates of [k]Q at the curve's size."""
    return hash_alg(alg).digest(shared.x + message + shared.y)


def ecc_encrypt(curve_id: int, recipient: ec.EllipticCurvePublicKey, alg: int, message: bytes, random) -> EccCiphertext:
    """Part 1's ECC encryption of ``message`` to ``recipient`` with hash ``alg`` (KDF2)."""
    k, ephemeral = ephemeral_key(curve_id, random)
    shared = multiply(curve_id, k, recipient)
    return EccCiphertext(point_of(curve_id, ephemeral), _mask(alg, shared, message), _check_value(alg, shared, message))


def ecc_decrypt(curve_id: int, scalar: int, c1: ec.EllipticCurvePublicKey, c2: bytes, c3: bytes, alg: int) -> bytes:
    """The message of (C1, C2, C3) for the private ``scalar``; TPM_RC_VALUE when C3 does not
    match what was recovered (the wrong key, or a changed ciphertext)."""
    shared = multiply(curve_id, scalar, c1)
    message = _mask(alg, shared, c2)
    if not hmac.compare_digest(_check_value(alg, shared, message), bytes(c3)):
        raise TpmError(TPM_RC.VALUE, "C3 does not match the recovered message")
    return message


# --- the commit state --------------------------------------------------------------------
#
# TPM2_EC_Ephemeral (and TPM2_Commit) hand out a one-time scalar r by a counter; only the
# counter leaves the TPM, and r is derived again from it when it is used (TPM2_ZGen_2Phase),
# so r itself is never stored.  What the derivation needs is the reference TPM's
# STATE_RESET_DATA: commitNonce (a random secret), commitCounter (counts commitments) and
# commitArray (one bit per recent count: committed and not used yet).  All three survive
# TPM Restart and TPM Resume and get their default values at TPM Reset (a new nonce from
# the RNG, zero, no bits), so they live in PermanentState beside nullProof and nullSeed.
# TPM Reset is recognised here, on first use after it, by the TPM Reset count the state was
# made in: the values are only observable through these commands, so the effect is that of
# resetting them in TPM2_Startup.

#: Bits of commitArray (a power of two): a counter names one of the last this many commits.
COMMIT_SLOTS = 128
#: Octets of commitNonce.
COMMIT_NONCE_SIZE = 32
#: The KDFa label of a commit scalar, and its hash (the derivation is the vendor's choice:
#: only this TPM ever recomputes r).
COMMIT_LABEL = b"ECDAA Commit"
COMMIT_HASH = TPM_ALG.SHA256
#: Extra KDF bits beyond the order, so that reducing modulo n-1 has negligible bias
#: (FIPS 186-4 B.4.1).
COMMIT_EXTRA_BITS = 64
#: The part of the counter a command exchanges (Part 3: the low-order 16 bits).
COMMIT_COUNTER_MASK = 0xFFFF


def commit_state_current(perm: PermanentState) -> bool:
    """Whether the stored commit state belongs to the current TPM Reset cycle."""
    return bool(perm.commit_nonce) and perm.commit_reset_count == perm.total_reset_count


def _renew_commit_state(engine: Engine) -> PermanentState:
    perm = engine.permanent
    if not commit_state_current(perm):
        perm.commit_nonce = engine.random(COMMIT_NONCE_SIZE)
        perm.commit_counter = 0
        perm.commit_array = 0
        perm.commit_reset_count = perm.total_reset_count
    return perm


def commit(engine: Engine) -> int:
    """Commit the next count: its commitArray bit is SET and commitCounter moves on.
    Returns the (whole) count committed; the caller persists the permanent state."""
    perm = _renew_commit_state(engine)
    count = perm.commit_counter
    perm.commit_counter = count + 1
    perm.commit_array |= 1 << (count % COMMIT_SLOTS)
    return count


def committed(perm: PermanentState, counter: int) -> int | None:
    """The whole count that the 16-bit ``counter`` names, when it is one of the last
    COMMIT_SLOTS counts committed and its commitment has not been used; None otherwise."""
    if not commit_state_current(perm):
        return None
    back = (perm.commit_counter - counter) & COMMIT_COUNTER_MASK
    if not 1 <= back <= min(COMMIT_SLOTS, perm.commit_counter):
        return None
    count = perm.commit_counter - back
    return count if perm.commit_array >> (count % COMMIT_SLOTS) & 1 else None


def end_commit(perm: PermanentState, count: int) -> None:
    """The commitment of ``count`` was used: clear its bit so it cannot be used again."""
    perm.commit_array &= ~(1 << (count % COMMIT_SLOTS))


def commit_scalar(perm: PermanentState, curve_id: int, count: int) -> int:
    """The one-time scalar r in [1, n-1] of ``count`` on the curve:
    KDFa(commitNonce, "ECDAA Commit", "", count as 8 octets) reduced into the range."""
    order = CURVES[curve_id].order
    bits = order.bit_length() + COMMIT_EXTRA_BITS
    octets = kdfa(COMMIT_HASH, perm.commit_nonce, COMMIT_LABEL, b"", count.to_bytes(8, "big"), bits)
    return int.from_bytes(octets, "big") % (order - 1) + 1
