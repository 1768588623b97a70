"""Signing and signature verification with loaded objects (Part 1, "Signing"; Part 3
clause 20), shared by TPM2_Sign and TPM2_VerifySignature and, later, by the attestation
commands (Quote, Certify...), which sign with the same rules.

:func:`select_scheme` applies the key-versus-caller scheme rule, :func:`sign` makes a
TPMT_SIGNATURE over a digest, :func:`verify` checks one, and the two ticket helpers
check a TPMT_TK_HASHCHECK and make a TPMT_TK_VERIFIED.  Every failure is a *bare*
response code, which the command places (``errors_at``) as the reference TPM does.

The schemes are RSASSA-PKCS1-v1_5, RSASSA-PSS, ECDSA and HMAC, all computed by
``cryptography``, and EC-Schnorr (Part 1, "EC Schnorr"), built on ``cryptography``'s point
multiplication (see :func:`_sign_ecschnorr`).  SM2 and ECDAA are not implemented, so
TPMI_ALG_SIG_SCHEME refuses them and TPM_CAP_ALGS does not list them.
"""

from __future__ import annotations

import hmac as std_hmac
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature

from .algorithms import hash_alg
from .asymmetric import multiply
from .constants import TPM_ALG, TPM_RH, TPM_ST, TPMA_OBJECT
from .crypto.ec_point import AffinePoint, add
from .errors import TPM_RC, TpmError
from .keys import CURVES, Curve, ecc_private_key, rsa_exponent, rsa_private_key
from .tickets import ticket_digest

if TYPE_CHECKING:
    from .engine import Engine
    from .objects import LoadedObject

__all__ = [
    "hashcheck_valid",
    "is_signing_key",
    "select_scheme",
    "sign",
    "verified_ticket",
    "verify",
]

#: TPM hash algorithm -> the ``cryptography`` hash of the same name.
CRYPTO_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    TPM_ALG.SHA1: hashes.SHA1,
    TPM_ALG.SHA256: hashes.SHA256,
    TPM_ALG.SHA384: hashes.SHA384,
    TPM_ALG.SHA512: hashes.SHA512,
}
#: Digest size -> a hash of that size: ECDSA's prehashed input only needs the right length.
_HASH_BY_SIZE: dict[int, type[hashes.HashAlgorithm]] = {cls.digest_size: cls for cls in CRYPTO_HASHES.values()}
#: The widest digest, which carries an ECDSA input of any other length (see :func:`_ecdsa_input`).
_WIDEST_HASH = hashes.SHA512
_RSA_SCHEMES = (TPM_ALG.RSASSA, TPM_ALG.RSAPSS)
#: The schemes :func:`sign` and :func:`verify` implement.
CRYPTO_SCHEMES = (TPM_ALG.RSASSA, TPM_ALG.RSAPSS, TPM_ALG.ECDSA, TPM_ALG.ECSCHNORR, TPM_ALG.HMAC)
#: The ECC signature schemes :func:`verify` accepts from an ECC key.
_ECC_SCHEMES = (TPM_ALG.ECDSA, TPM_ALG.ECSCHNORR)
#: PSS encoding needs the digest, the salt and two more octets in the modulus (RFC 8017, 9.1.1).
PSS_OVERHEAD = 2


def _fail(rc: int, why: str) -> None:
    raise TpmError(rc, why)


# --- which key, which scheme -----------------------------------------------------------------------


def is_signing_key(obj: LoadedObject) -> bool:
    """A key that may sign: ``sign`` SET, and not a symmetric cipher (which has no signing scheme)."""
    return bool(obj.attributes & TPMA_OBJECT.sign) and obj.type != TPM_ALG.SYMCIPHER


def select_scheme(obj: LoadedObject, requested: Any) -> Any:
    """The scheme to sign with (a TPMT_SIG_SCHEME): the key's own, if it has one, or the caller's.

    A key with a scheme signs only with it, so a caller asking for another scheme or hash
    gets TPM_RC_SCHEME; a key whose scheme is TPM_ALG_NULL lets the caller choose (but not
    TPM_ALG_NULL too, nor a scheme of another key type: libtpms also reports that here).
    """
    chosen = _chosen_scheme(obj, requested)
    if (obj.type, chosen.scheme) not in _SIGNERS:
        _fail(TPM_RC.SCHEME, f"scheme 0x{chosen.scheme:04x} cannot sign with a key of type 0x{obj.type:04x}")
    return chosen


def _chosen_scheme(obj: LoadedObject, requested: Any) -> Any:
    from .types import TPMT_SIG_SCHEME_PLUS

    if obj.type == TPM_ALG.SYMCIPHER:
        _fail(TPM_RC.SCHEME, "a symmetric cipher key has no signing scheme")
    own = obj.area.parameters.scheme
    if own.scheme == TPM_ALG.NULL:
        if requested.scheme == TPM_ALG.NULL:
            _fail(TPM_RC.SCHEME, "neither the key nor the command names a signing scheme")
        return requested
    if own.scheme not in CRYPTO_SCHEMES:
        _fail(TPM_RC.SCHEME, f"the key's scheme 0x{own.scheme:04x} is not a signing scheme")
    if requested.scheme == TPM_ALG.NULL:
        return TPMT_SIG_SCHEME_PLUS(scheme=own.scheme, details=own.details)
    if (requested.scheme, requested.details.hashAlg) != (own.scheme, own.details.hashAlg):
        _fail(
            TPM_RC.SCHEME,
            f"scheme 0x{requested.scheme:04x}/0x{requested.details.hashAlg:04x} differs from the key's "
            f"0x{own.scheme:04x}/0x{own.details.hashAlg:04x}",
        )
    return requested


# --- signing ---------------------------------------------------------------------------------------


def sign(obj: LoadedObject, scheme: Any, digest: bytes) -> Any:
    """TPMT_SIGNATURE of ``digest`` with the private part of ``obj`` under ``scheme`` (a selected
    TPMT_SIG_SCHEME); TPM_RC_SCHEME when the scheme does not suit the key type."""
    from .types import TPMT_SIGNATURE_PLUS

    signer = _SIGNERS.get((obj.type, scheme.scheme))
    if signer is None:
        _fail(TPM_RC.SCHEME, f"scheme 0x{scheme.scheme:04x} cannot sign with a key of type 0x{obj.type:04x}")
    return TPMT_SIGNATURE_PLUS(sigAlg=scheme.scheme, signature=signer(obj, scheme.details.hashAlg, digest))


def _rsa_padding(scheme: int, alg: int, modulus_size: int) -> padding.AsymmetricPadding:
    """PKCS#1 v1.5, or PSS with a salt as long as the digest when the modulus has room for it
    and the longest salt that fits otherwise (what the reference TPM uses, e.g. RSA-1024 with
    SHA-512); a verifier recovers the salt length, so any choice verifies."""
    if scheme == TPM_ALG.RSASSA:
        return padding.PKCS1v15()
    size = hash_alg(alg).digest_size
    salt = padding.PSS.DIGEST_LENGTH if 2 * size + PSS_OVERHEAD <= modulus_size else padding.PSS.MAX_LENGTH
    return padding.PSS(mgf=padding.MGF1(CRYPTO_HASHES[alg]()), salt_length=salt)


def _sign_rsa(scheme: int):
    def signer(obj: LoadedObject, alg: int, digest: bytes):
        from .types import TPMS_SIGNATURE_RSA

        if len(digest) != hash_alg(alg).digest_size:
            _fail(TPM_RC.VALUE, f"a {len(digest)}-octet digest is not a 0x{alg:04x} digest")
        key = rsa_private_key(obj)
        pad = _rsa_padding(scheme, alg, len(obj.area.unique))
        return TPMS_SIGNATURE_RSA(hash=alg, sig=key.sign(digest, pad, Prehashed(CRYPTO_HASHES[alg]())))

    return signer


def _ecdsa_input(digest: bytes, curve: Curve) -> tuple[bytes, hashes.HashAlgorithm]:
    """ECDSA signs the integer e made of the digest's leftmost bits, no more than the order has
    (SEC 1, 4.1.3 step 5), for a digest of any length; ``cryptography`` takes a prehashed input
    only as long as a hash it knows, so another length travels as the same e in the widest one."""
    known = _HASH_BY_SIZE.get(len(digest))
    if known is not None:
        return digest, known()
    order_bits = curve.order.bit_length()
    e = int.from_bytes(digest, "big") >> max(0, 8 * len(digest) - order_bits)
    width = _WIDEST_HASH.digest_size
    return (e << max(0, 8 * width - order_bits)).to_bytes(width, "big"), _WIDEST_HASH()


def _sign_ecdsa(obj: LoadedObject, alg: int, digest: bytes):
    from .types import TPMS_SIGNATURE_ECC

    curve = CURVES[obj.area.parameters.curveID]
    data, prehashed = _ecdsa_input(digest, curve)
    r, s = decode_dss_signature(ecc_private_key(obj).sign(data, ec.ECDSA(Prehashed(prehashed))))
    return TPMS_SIGNATURE_ECC(
        hash=alg, signatureR=r.to_bytes(curve.size, "big"), signatureS=s.to_bytes(curve.size, "big")
    )


def _order_octets(curve: Curve) -> int:
    """The octet length of the order n: the width of xR in the hash and of r and s."""
    return (curve.order.bit_length() + 7) // 8


def _schnorr_challenge(alg: int, x: int, digest: bytes, curve: Curve) -> int:
    """e = H(xR || digest), xR in as many octets as n has, the hash cut to its leftmost
    octets when it is longer than n (octets, not bits: the reference TPM's truncation)."""
    width = _order_octets(curve)
    return int.from_bytes(hash_alg(alg).digest(x.to_bytes(width, "big") + digest)[:width], "big")


def _sign_ecschnorr(obj: LoadedObject, alg: int, digest: bytes):
    """EC-Schnorr as the reference TPM computes it: a fresh k, R = [k]G, r = e = H(xR || digest)
    (see :func:`_schnorr_challenge`) and s = (k + e*d) mod n; the signature is (e, s).

    k and R come from ``cryptography`` (``generate_private_key``: OpenSSL's RNG and its
    constant-time [k]G), as ECDSA's nonce does.  The scalar step k + e*d mod n is Python
    integer arithmetic on the private d and k: it is *not* constant time (its duration can
    depend on the operands' magnitudes), which ``cryptography`` offers no way around.  A k
    for which e is 0 mod n or not below n (so r would not verify), or s is 0, is replaced.
    """
    from .types import TPMS_SIGNATURE_ECC

    curve = CURVES[obj.area.parameters.curveID]
    d = int.from_bytes(obj.sensitive, "big")
    width = _order_octets(curve)
    while True:
        nonce = ec.generate_private_key(curve.curve())
        k = nonce.private_numbers().private_value
        e = _schnorr_challenge(alg, nonce.public_key().public_numbers().x, digest, curve)
        if not 0 < e < curve.order:
            continue
        s = (k + e * d) % curve.order
        if s:
            r_octets, s_octets = e.to_bytes(width, "big"), s.to_bytes(width, "big")
            return TPMS_SIGNATURE_ECC(hash=alg, signatureR=r_octets, signatureS=s_octets)


def _hmac(key: bytes, alg: int, digest: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, CRYPTO_HASHES[alg]())
    mac.update(digest)
    return mac.finalize()


def _sign_hmac(obj: LoadedObject, alg: int, digest: bytes):
    from .types import TPMT_HA

    return TPMT_HA(hashAlg=alg, digest=_hmac(obj.sensitive, alg, digest))


_SIGNERS = {
    (TPM_ALG.RSA, TPM_ALG.RSASSA): _sign_rsa(TPM_ALG.RSASSA),
    (TPM_ALG.RSA, TPM_ALG.RSAPSS): _sign_rsa(TPM_ALG.RSAPSS),
    (TPM_ALG.ECC, TPM_ALG.ECDSA): _sign_ecdsa,
    (TPM_ALG.ECC, TPM_ALG.ECSCHNORR): _sign_ecschnorr,
    (TPM_ALG.KEYEDHASH, TPM_ALG.HMAC): _sign_hmac,
}


# --- verification ----------------------------------------------------------------------------------


def verify(obj: LoadedObject, signature: Any, digest: bytes) -> None:
    """Check a TPMT_SIGNATURE over ``digest`` with ``obj`` (public part enough, except for HMAC).

    TPM_RC_SIGNATURE when it is not genuine, TPM_RC_SCHEME when its scheme cannot be one of
    this key type's, TPM_RC_HANDLE for an HMAC key without its sensitive part.
    """
    if signature.sigAlg == TPM_ALG.NULL:
        _fail(TPM_RC.SIGNATURE, "a NULL signature")
    if obj.type == TPM_ALG.RSA:
        _verify_rsa(obj, signature, digest)
    elif obj.type == TPM_ALG.ECC:
        _verify_ecc(obj, signature, digest)
    elif obj.type == TPM_ALG.KEYEDHASH:
        _verify_hmac(obj, signature, digest)
    else:
        _fail(TPM_RC.SCHEME, f"a key of type 0x{obj.type:04x} does not verify signatures")


def _rsa_public_key(obj: LoadedObject) -> rsa.RSAPublicKey:
    area = obj.area
    try:
        return rsa.RSAPublicNumbers(rsa_exponent(area.parameters), int.from_bytes(area.unique, "big")).public_key()
    except ValueError:  # a public-only key whose modulus cryptography refuses
        raise TpmError(TPM_RC.SIGNATURE, "the key's modulus is not usable") from None


def _verify_rsa(obj: LoadedObject, signature: Any, digest: bytes) -> None:
    if signature.sigAlg not in _RSA_SCHEMES:
        _fail(TPM_RC.SCHEME, f"scheme 0x{signature.sigAlg:04x} is not an RSA signature scheme")
    sig, alg = signature.signature.sig, signature.signature.hash
    if len(sig) != len(obj.area.unique):
        _fail(TPM_RC.SIGNATURE, f"a {len(sig)}-octet signature for a {len(obj.area.unique)}-octet modulus")
    if len(digest) != hash_alg(alg).digest_size:
        _fail(TPM_RC.SIGNATURE, f"a {len(digest)}-octet digest cannot be a 0x{alg:04x} digest")
    pad = (
        padding.PKCS1v15()
        if signature.sigAlg == TPM_ALG.RSASSA
        else padding.PSS(mgf=padding.MGF1(CRYPTO_HASHES[alg]()), salt_length=padding.PSS.AUTO)
    )
    try:
        _rsa_public_key(obj).verify(sig, digest, pad, Prehashed(CRYPTO_HASHES[alg]()))
    except InvalidSignature:
        raise TpmError(TPM_RC.SIGNATURE, "the RSA signature does not verify") from None


def _ecc_public_key(obj: LoadedObject, curve: Curve) -> ec.EllipticCurvePublicKey:
    point = obj.area.unique
    x, y = int.from_bytes(point.x, "big"), int.from_bytes(point.y, "big")
    try:
        return ec.EllipticCurvePublicNumbers(x, y, curve.curve()).public_key()
    except ValueError:  # a public-only key whose point is not on the curve
        raise TpmError(TPM_RC.SIGNATURE, "the key's point is not on its curve") from None


def _verify_ecc(obj: LoadedObject, signature: Any, digest: bytes) -> None:
    """ECDSA or EC-Schnorr, whatever the key's own scheme (as the reference TPM does)."""
    if signature.sigAlg not in _ECC_SCHEMES:
        _fail(TPM_RC.SCHEME, f"scheme 0x{signature.sigAlg:04x} is not an ECC signature scheme")
    curve = CURVES[obj.area.parameters.curveID]
    r = int.from_bytes(signature.signature.signatureR, "big")
    s = int.from_bytes(signature.signature.signatureS, "big")
    if not (0 < r < curve.order and 0 < s < curve.order):
        _fail(TPM_RC.SIGNATURE, "r or s outside [1, n-1]")
    if signature.sigAlg == TPM_ALG.ECDSA:
        _verify_ecdsa(obj, curve, r, s, digest)
    else:
        _verify_ecschnorr(obj, curve, r, s, signature.signature.hash, digest)


def _verify_ecschnorr(obj: LoadedObject, curve: Curve, r: int, s: int, alg: int, digest: bytes) -> None:
    """R' = [s]G - [r]Q (all public), genuine when H(xR' || digest) is r again."""
    curve_id = obj.area.parameters.curveID
    q = _ecc_public_key(obj, curve)
    sg = ec.derive_private_key(s, curve.curve()).public_key().public_numbers()
    minus_rq = multiply(curve_id, curve.order - r, q)
    total = add(
        curve_id,
        AffinePoint(sg.x, sg.y),
        AffinePoint(int.from_bytes(minus_rq.x, "big"), int.from_bytes(minus_rq.y, "big")),
    )
    if total is None or _schnorr_challenge(alg, total.x, digest, curve) != r:
        _fail(TPM_RC.SIGNATURE, "the EC-Schnorr signature does not verify")


def _verify_ecdsa(obj: LoadedObject, curve: Curve, r: int, s: int, digest: bytes) -> None:
    data, prehashed = _ecdsa_input(digest, curve)
    try:
        _ecc_public_key(obj, curve).verify(encode_dss_signature(r, s), data, ec.ECDSA(Prehashed(prehashed)))
    except InvalidSignature:
        raise TpmError(TPM_RC.SIGNATURE, "the ECDSA signature does not verify") from None


def _verify_hmac(obj: LoadedObject, signature: Any, digest: bytes) -> None:
    if not obj.sensitive:
        _fail(TPM_RC.HANDLE, "an HMAC key without its sensitive part cannot verify")
    if signature.sigAlg != TPM_ALG.HMAC:
        _fail(TPM_RC.SCHEME, f"scheme 0x{signature.sigAlg:04x} is not an HMAC signature")
    alg = signature.signature.hashAlg
    own = obj.area.parameters.scheme
    # A key with a scheme verifies only its own: no downgrade to a weaker hash.
    if own.scheme != TPM_ALG.NULL and (own.scheme != TPM_ALG.HMAC or own.details.hashAlg != alg):
        _fail(TPM_RC.SIGNATURE, f"an HMAC with 0x{alg:04x} from a key with another scheme")
    if not std_hmac.compare_digest(_hmac(obj.sensitive, alg, digest), signature.signature.digest):
        _fail(TPM_RC.SIGNATURE, "the HMAC does not verify")


# --- tickets ---------------------------------------------------------------------------------------


def hashcheck_valid(engine: Engine, ticket: Any, alg: int, digest: bytes) -> bool:
    """Whether a TPMT_TK_HASHCHECK says this TPM hashed ``digest`` with ``alg`` from data that
    did not start with TPM_GENERATED_VALUE (TPM2_Hash / SequenceComplete make it); compared in
    constant time, as the ticket is an HMAC under a hierarchy proof."""
    expected = ticket_digest(engine, TPM_ST.HASHCHECK, ticket.hierarchy, alg.to_bytes(2, "big"), digest)
    return std_hmac.compare_digest(expected, ticket.digest)


def verified_ticket(engine: Engine, obj: LoadedObject, digest: bytes) -> Any:
    """TPMT_TK_VERIFIED: HMAC(proof, TPM_ST_VERIFIED || digest || keyName), so PolicyAuthorize can
    later trust that this key signed ``digest``; a NULL ticket for a key of the NULL hierarchy
    or without a nameAlg (Part 3, TPM2_VerifySignature)."""
    from .types import TPMT_TK_VERIFIED

    if obj.hierarchy == TPM_RH.NULL or obj.name_alg == TPM_ALG.NULL:
        return TPMT_TK_VERIFIED(tag=TPM_ST.VERIFIED, hierarchy=TPM_RH.NULL, digest=b"")
    return TPMT_TK_VERIFIED(
        tag=TPM_ST.VERIFIED,
        hierarchy=obj.hierarchy,
        digest=ticket_digest(engine, TPM_ST.VERIFIED, obj.hierarchy, digest, obj.name),
    )
