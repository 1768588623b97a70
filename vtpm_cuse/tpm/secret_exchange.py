"""Secrets sent to the TPM under one of its keys (Part 1, Annexes B.10 and C.6).

A caller shares a secret (a session salt, a duplication or credential seed)
with the TPM by encrypting it to a loaded decryption key:

* an RSA key: RSAES-OAEP with the key's nameAlg for both hash and MGF1,
  and the purpose as the label ("SECRET", "DUPLICATE", "IDENTITY");
* an ECC key: the caller sends an ephemeral public point Qe; both sides
  compute Z = d * Qe and the secret is
  KDFe(nameAlg, Z.x, label, Qe.x, Qs.x, digest bits of nameAlg).

Any failure is the bare TPM_RC_VALUE; the command adds the parameter number.
:func:`encrypt_secret` is the other direction, for the commands that make such a
secret for a key (MakeCredential, Duplicate, Rewrap): it needs only the public area.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .algorithms import hash_alg
from .constants import TPM_ALG
from .crypto.kdf import kdfe
from .errors import TPM_RC, TpmError
from .keys import CURVES, _ecc_scalar, ecc_private_key, rsa_exponent, rsa_private_key
from .marshal import Reader
from .types import TPMS_ECC_POINT

if TYPE_CHECKING:
    from .objects import LoadedObject

#: The label each purpose encrypts its secret with (Part 1, "Secret Sharing" / "Credential
#: Protection" / "Duplication").
SECRET_LABEL = b"SECRET"
IDENTITY_LABEL = b"IDENTITY"
DUPLICATE_LABEL = b"DUPLICATE"

_HASHES = {
    TPM_ALG.SHA1: hashes.SHA1,
    TPM_ALG.SHA256: hashes.SHA256,
    TPM_ALG.SHA384: hashes.SHA384,
    TPM_ALG.SHA512: hashes.SHA512,
}


def _label(label: bytes) -> bytes:
    return label if label.endswith(b"\0") else label + b"\0"


def _rsa_secret(key: LoadedObject, label: bytes, encrypted: bytes) -> bytes:
    algorithm = _HASHES[key.name_alg]()
    try:
        return rsa_private_key(key).decrypt(
            encrypted, padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=_label(label))
        )
    except ValueError:
        raise TpmError(TPM_RC.VALUE, "OAEP decryption failed") from None


def _ecc_secret(key: LoadedObject, label: bytes, encrypted: bytes) -> bytes:
    """Raises the unmarshalling code (TPM_RC_INSUFFICIENT, TPM_RC_SIZE) for a secret that is
    not a TPMS_ECC_POINT and TPM_RC_ECC_POINT for a point that is not on the key's curve;
    :func:`decrypt_secret` turns both into TPM_RC_VALUE unless asked for the exact code."""
    r = Reader(encrypted)
    point = TPMS_ECC_POINT.unmarshal(r)
    private = ecc_private_key(key)
    size = (private.curve.key_size + 7) // 8
    if r.remaining or len(point.x) > size or len(point.y) > size:
        raise TpmError(TPM_RC.ECC_POINT, "malformed ephemeral point")
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(
            private.curve, b"\x04" + point.x.rjust(size, b"\0") + point.y.rjust(size, b"\0")
        )
        z = private.exchange(ec.ECDH(), peer)
    except ValueError:
        raise TpmError(TPM_RC.ECC_POINT, "ephemeral point is not on the key's curve") from None
    name_alg = key.name_alg
    return kdfe(name_alg, z, label, point.x, key.area.unique.x, 8 * hash_alg(name_alg).digest_size)


def decrypt_secret(key: LoadedObject, label: bytes, encrypted: bytes, *, exact_ecc_codes: bool = False) -> bytes:
    """The secret ``encrypted`` carries for ``key`` (an RSA or ECC decryption key).

    ``exact_ecc_codes``: a bad ECC secret is TPM_RC_ECC_POINT / TPM_RC_INSUFFICIENT / TPM_RC_SIZE,
    as TPM2_ActivateCredential lists them (Part 3, 12.5); elsewhere (TPM2_StartAuthSession's
    salt) it is TPM_RC_VALUE, as in libtpms."""
    if key.type == TPM_ALG.RSA:
        secret = _rsa_secret(key, label, encrypted)
    elif key.type == TPM_ALG.ECC:
        try:
            secret = _ecc_secret(key, label, encrypted)
        except TpmError as err:
            if exact_ecc_codes:
                raise
            raise TpmError(TPM_RC.VALUE, f"not an ECC secret for the key: {err.detail}") from None
    else:
        raise TpmError(TPM_RC.KEY, "not an asymmetric key")
    if len(secret) > hash_alg(key.name_alg).digest_size:
        raise TpmError(TPM_RC.VALUE, "secret longer than a digest of the key's nameAlg")
    return secret


def _oaep(key: LoadedObject, label: bytes) -> padding.OAEP:
    algorithm = _HASHES[key.name_alg]()
    return padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=_label(label))


def _rsa_encrypt(key: LoadedObject, label: bytes, random: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """A random seed of one nameAlg digest, OAEP-encrypted to the key's public modulus."""
    area = key.area
    public = rsa.RSAPublicNumbers(rsa_exponent(area.parameters), int.from_bytes(area.unique, "big")).public_key()
    seed = random(hash_alg(key.name_alg).digest_size)
    try:
        return seed, public.encrypt(seed, _oaep(key, label))
    except ValueError:
        raise TpmError(TPM_RC.KEY, "the modulus is too small for OAEP with the key's nameAlg") from None


def _ecc_encrypt(key: LoadedObject, label: bytes, random: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """One-pass ECDH: an ephemeral key from the TPM's RNG; the seed is KDFe over Z."""
    curve = CURVES[key.area.parameters.curveID]
    unique = key.area.unique
    if len(unique.x) > curve.size or len(unique.y) > curve.size:
        raise TpmError(TPM_RC.KEY, "the key's public point is not on its curve")
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(
            curve.curve(), b"\x04" + unique.x.rjust(curve.size, b"\0") + unique.y.rjust(curve.size, b"\0")
        )
    except ValueError:
        raise TpmError(TPM_RC.KEY, "the key's public point is not on its curve") from None
    ephemeral = ec.derive_private_key(_ecc_scalar(curve, random), curve.curve())
    z = ephemeral.exchange(ec.ECDH(), peer)
    point = ephemeral.public_key().public_numbers()
    qe = TPMS_ECC_POINT(x=point.x.to_bytes(curve.size, "big"), y=point.y.to_bytes(curve.size, "big"))
    name_alg = key.name_alg
    seed = kdfe(name_alg, z, label, qe.x, unique.x, 8 * hash_alg(name_alg).digest_size)
    return seed, TPMS_ECC_POINT.pack(qe)


def encrypt_secret(key: LoadedObject, label: bytes, random: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """(seed, encrypted seed) for ``key``, an RSA or ECC key: the seed is what :func:`decrypt_secret`
    recovers from the encrypted seed with the key's private part and the same label."""
    if key.type == TPM_ALG.RSA:
        return _rsa_encrypt(key, label, random)
    if key.type == TPM_ALG.ECC:
        return _ecc_encrypt(key, label, random)
    raise TpmError(TPM_RC.TYPE, "not an asymmetric key")
