"""The X.509 TBSCertificate of TPM2_CertifyX509 (Part 3, 18.8), as DER octets.

The caller sends a *partial certificate*: a SEQUENCE of an optional signature
AlgorithmIdentifier, the issuer, the validity, the subject and the extensions ([3]). The
TPM completes the RFC 5280 TBSCertificate with what only it may vouch for::

    TBSCertificate ::= SEQUENCE { version [0] v3, serialNumber, signature AlgorithmIdentifier,
                                  issuer, validity, subject, subjectPublicKeyInfo, extensions [3] }

and returns those added parts (``addedToCertificate``: version, serialNumber, the signature
algorithm if the caller gave none, and the subjectPublicKeyInfo of the certified object) so
the caller can put the same certificate together and append the signature.

What the TPM checks of the partial certificate is what the reference TPM checks: its
framing, the keyUsage extension (required) against the object's attributes, and TCG's
TPMA_OBJECT extension (optional) against them exactly. Each failure is a :class:`~.errors.TpmError`
with a *bare* code; the command places it. The serial number is not random: it is
H_nameAlg(signing key)(signature || issuer || validity || subject || subjectPublicKeyInfo
|| extensions || Name(signing key) || Name(object)) cut to 20 octets (RFC 5280's maximum),
so the same request for the same two keys gives the same certificate -- as libtpms does.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any

from . import der
from .algorithms import hash_alg
from .constants import TPM_ALG, TPM_ECC_CURVE, TPMA_OBJECT
from .der import DerError, Tag
from .errors import TPM_RC, TpmError
from .keys import rsa_exponent

if TYPE_CHECKING:
    from .objects import LoadedObject

__all__ = [
    "Completed",
    "PartialCertificate",
    "TPMA_X509_KEY_USAGE",
    "check_extensions",
    "complete",
    "parse_partial",
    "signature_algorithm",
    "subject_public_key_info",
]

#: RFC 5280's limit on serialNumber, and so its length (every nameAlg digest is longer).
SERIAL_NUMBER_SIZE = 20
#: version [0] EXPLICIT INTEGER 2 (v3: the certificate has extensions).
VERSION_V3 = der.encode(Tag.CONTEXT_0, der.integer(b"\x02"))
#: A partial certificate holds three SEQUENCEs (issuer, validity, subject) or four (the
#: signature AlgorithmIdentifier first), and the [3] extensions.
REQUIRED_SEQUENCES, WITH_SIGNATURE = 3, 4
#: RSASSA-PSS-params' DEFAULT saltLength (RFC 4055, 3.1), with SHA-1 and MGF1-SHA-1.
PSS_DEFAULT_SALT = 20
#: PSS's encoding needs the digest, the salt and two more octets in the modulus (RFC 8017, 9.1.1).
_PSS_OVERHEAD = 2

OID_TCG_TPMA_OBJECT = der.object_identifier("2.23.133.10.1.1.1")
OID_KEY_USAGE = der.object_identifier("2.5.29.15")
OID_RSA_ENCRYPTION = der.object_identifier("1.2.840.113549.1.1.1")
OID_RSA_PSS = der.object_identifier("1.2.840.113549.1.1.10")
OID_MGF1 = der.object_identifier("1.2.840.113549.1.1.8")
OID_EC_PUBLIC_KEY = der.object_identifier("1.2.840.10045.2.1")

#: Per hash: (its OID, sha*WithRSAEncryption, ecdsa-with-SHA*).
_HASH_OIDS: dict[int, tuple[str, str, str]] = {
    TPM_ALG.SHA1: ("1.3.14.3.2.26", "1.2.840.113549.1.1.5", "1.2.840.10045.4.1"),
    TPM_ALG.SHA256: ("2.16.840.1.101.3.4.2.1", "1.2.840.113549.1.1.11", "1.2.840.10045.4.3.2"),
    TPM_ALG.SHA384: ("2.16.840.1.101.3.4.2.2", "1.2.840.113549.1.1.12", "1.2.840.10045.4.3.3"),
    TPM_ALG.SHA512: ("2.16.840.1.101.3.4.2.3", "1.2.840.113549.1.1.13", "1.2.840.10045.4.3.4"),
}
#: The named curves (RFC 5480) a subjectPublicKeyInfo can carry; the BN curves have no OID.
CURVE_OIDS: dict[int, bytes] = {
    TPM_ECC_CURVE.NIST_P192: der.object_identifier("1.2.840.10045.3.1.1"),
    TPM_ECC_CURVE.NIST_P224: der.object_identifier("1.3.132.0.33"),
    TPM_ECC_CURVE.NIST_P256: der.object_identifier("1.2.840.10045.3.1.7"),
    TPM_ECC_CURVE.NIST_P384: der.object_identifier("1.3.132.0.34"),
    TPM_ECC_CURVE.NIST_P521: der.object_identifier("1.3.132.0.35"),
}
_UNCOMPRESSED_POINT = b"\x04"


class TPMA_X509_KEY_USAGE(enum.IntFlag):
    """KeyUsage (RFC 5280, 4.2.1.3) as a 32-bit value, named bit 0 at the top (Part 2,
    TPMA_X509_KEY_USAGE)."""

    decipherOnly = 1 << 23
    encipherOnly = 1 << 24
    cRLSign = 1 << 25
    keyCertSign = 1 << 26
    keyAgreement = 1 << 27
    dataEncipherment = 1 << 28
    keyEncipherment = 1 << 29
    nonrepudiation = 1 << 30
    digitalSignature = 1 << 31


_U = TPMA_X509_KEY_USAGE
#: Each usage -> the object attribute it needs, in the reference TPM's order of checks.
#: Signing uses need ``sign``; decryption uses ``decrypt``; non-repudiation a key that
#: cannot leave this TPM; key agreement (also a decryption use) a restricted key.
_USAGE_NEEDS: tuple[tuple[_U, TPMA_OBJECT], ...] = (
    (_U.digitalSignature | _U.keyCertSign | _U.cRLSign, TPMA_OBJECT.sign),
    (
        _U.keyEncipherment | _U.dataEncipherment | _U.keyAgreement | _U.encipherOnly | _U.decipherOnly,
        TPMA_OBJECT.decrypt,
    ),
    (_U.nonrepudiation, TPMA_OBJECT.fixedTPM),
    (_U.keyAgreement, TPMA_OBJECT.restricted),
)


def _value_error(why: str) -> TpmError:
    return TpmError(TPM_RC.VALUE, f"partialCertificate: {why}")


# --- the partial certificate ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PartialCertificate:
    """The caller's parts, each as its whole DER encoding."""

    #: The signature AlgorithmIdentifier, or None when the TPM is to choose it.
    signature: bytes | None
    issuer: bytes
    validity: bytes
    subject: bytes
    #: The [3] EXPLICIT element, tag included, exactly as it goes into the TBSCertificate.
    extensions: bytes
    #: The Extension SEQUENCEs inside it.
    extension_list: tuple[der.Tlv, ...]


def parse_partial(data: bytes) -> PartialCertificate:
    """Take ``partialCertificate`` apart: TPM_RC_SIZE when it is not one SEQUENCE using every
    octet, TPM_RC_VALUE when its contents are not 3 or 4 SEQUENCEs and one [3]."""
    if not data:
        raise _value_error("empty")
    try:
        outer = der.read_one(data)
    except DerError as e:
        raise TpmError(TPM_RC.SIZE, f"partialCertificate: {e}") from None
    if outer.tag != Tag.SEQUENCE or len(outer.encoded) != len(data):
        raise TpmError(
            TPM_RC.SIZE, f"partialCertificate is not one SEQUENCE of {len(data)} octets (tag 0x{outer.tag:02x})"
        )
    try:
        elements = der.read_all(outer.value)
    except DerError as e:
        raise _value_error(str(e)) from None
    sequences = [e.encoded for e in elements if e.tag == Tag.SEQUENCE]
    extensions = [e for e in elements if e.tag == Tag.CONTEXT_3]
    stray = [e.tag for e in elements if e.tag not in (Tag.SEQUENCE, Tag.CONTEXT_3)]
    if stray:
        raise _value_error(f"element with tag 0x{stray[0]:02x} (only SEQUENCEs and [3] extensions belong)")
    if len(extensions) != 1:
        raise _value_error(f"{len(extensions)} [3] extensions elements, not one")
    if not REQUIRED_SEQUENCES <= len(sequences) <= WITH_SIGNATURE:
        raise _value_error(f"{len(sequences)} SEQUENCEs, not 3 (issuer, validity, subject) or 4")
    signature = sequences.pop(0) if len(sequences) == WITH_SIGNATURE else None
    issuer, validity, subject = sequences
    return PartialCertificate(
        signature, issuer, validity, subject, extensions[0].encoded, _extension_list(extensions[0])
    )


def _extension_list(element: der.Tlv) -> tuple[der.Tlv, ...]:
    try:
        inner = der.read_one(element.value)
        if inner.tag != Tag.SEQUENCE:
            raise DerError("the [3] extensions do not hold a SEQUENCE")
        items = der.read_all(inner.value)
    except DerError as e:
        raise _value_error(str(e)) from None
    if any(item.tag != Tag.SEQUENCE for item in items):
        raise _value_error("an extension that is not a SEQUENCE")
    return tuple(items)


def _extension_bits(extension_list: tuple[der.Tlv, ...], oid: bytes) -> int | None:
    """The BIT STRING value of the extension ``oid`` (its extnValue), or None if absent."""
    for item in extension_list:
        if not item.value.startswith(oid):
            continue
        try:
            fields = der.read_all(item.value)
            value = next(f for f in fields if f.tag == Tag.OCTET_STRING)
            return der.bit_string_value(der.read_one(value.value))
        except (DerError, StopIteration):
            raise _value_error(f"extension {oid.hex()} has no BIT STRING value of up to 32 bits") from None
    return None


def check_extensions(partial: PartialCertificate, attributes: int) -> None:
    """The object must be what the extensions say it is: TPM_RC_ATTRIBUTES when TCG's
    TPMA_OBJECT extension differs from ``attributes`` or a keyUsage bit needs an attribute
    the object lacks; TPM_RC_VALUE when keyUsage is missing or malformed."""
    tpma = _extension_bits(partial.extension_list, OID_TCG_TPMA_OBJECT)
    if tpma is not None and tpma != attributes:
        raise TpmError(
            TPM_RC.ATTRIBUTES, f"the TPMA_OBJECT extension says 0x{tpma:08x}, the object has 0x{attributes:08x}"
        )
    usage = _extension_bits(partial.extension_list, OID_KEY_USAGE)
    if usage is None:
        raise _value_error("no keyUsage extension")
    for uses, needed in _USAGE_NEEDS:
        if usage & uses and not attributes & needed:
            raise TpmError(
                TPM_RC.ATTRIBUTES,
                f"keyUsage {_U(usage & uses)!r} needs {needed!r}, absent from attributes 0x{attributes:08x}",
            )


# --- what the TPM adds ----------------------------------------------------------------------------


def _algorithm(oid: bytes, parameters: bytes = b"") -> bytes:
    return der.encode(Tag.SEQUENCE, oid + parameters)


def _hash_algorithm(alg: int) -> bytes:
    """AlgorithmIdentifier of a hash, with the NULL parameters PSS's encoding uses."""
    return _algorithm(der.object_identifier(_HASH_OIDS[alg][0]), der.encode(Tag.NULL, b""))


def _pss_salt_size(alg: int, modulus_size: int) -> int:
    """The salt :mod:`.signing` signs PSS with: the digest's length, or what the modulus has room for."""
    size = hash_alg(alg).digest_size
    return max(0, min(size, modulus_size - size - _PSS_OVERHEAD))


def signature_algorithm(key: LoadedObject, scheme: Any) -> bytes | None:
    """The signature AlgorithmIdentifier of ``key`` signing with ``scheme``, or None when the
    combination has none (an HMAC key, or a hash without an OID here).

    sha*WithRSAEncryption carries NULL parameters (RFC 4055, 5), ecdsa-with-SHA* none (RFC 5758,
    3.2), RSASSA-PSS its RSASSA-PSS-params: the octets libtpms writes, except for PSS with
    SHA-1 (see below).
    """
    alg = scheme.details.hashAlg
    if alg not in _HASH_OIDS:
        return None
    _, rsa_oid, ecdsa_oid = _HASH_OIDS[alg]
    if (key.type, scheme.scheme) == (TPM_ALG.RSA, TPM_ALG.RSASSA):
        return _algorithm(der.object_identifier(rsa_oid), der.encode(Tag.NULL, b""))
    if (key.type, scheme.scheme) == (TPM_ALG.ECC, TPM_ALG.ECDSA):
        return _algorithm(der.object_identifier(ecdsa_oid))
    if (key.type, scheme.scheme) != (TPM_ALG.RSA, TPM_ALG.RSAPSS):
        return None
    if alg == TPM_ALG.SHA1 and _pss_salt_size(alg, len(key.area.unique)) == PSS_DEFAULT_SALT:
        # Every RSASSA-PSS-params field at its DEFAULT: an empty SEQUENCE (RFC 4055, 3.1).  The
        # reference TPM writes NULL here, which is not RSASSA-PSS-params and which parsers
        # (``cryptography``, hence this TPM's tests) refuse.
        return _algorithm(OID_RSA_PSS, der.encode(Tag.SEQUENCE, b""))
    mgf = _algorithm(OID_MGF1, _hash_algorithm(alg))
    salt = _pss_salt_size(alg, len(key.area.unique)).to_bytes(4, "big")
    params = (
        der.encode(Tag.CONTEXT_0, _hash_algorithm(alg))
        + der.encode(Tag.CONTEXT_1, mgf)
        + der.encode(Tag.CONTEXT_2, der.integer(salt))
    )
    return _algorithm(OID_RSA_PSS, der.encode(Tag.SEQUENCE, params))


def subject_public_key_info(obj: LoadedObject) -> bytes | None:
    """SubjectPublicKeyInfo of an RSA key or an ECC key on a named curve (None otherwise)."""
    area = obj.area
    if area.type == TPM_ALG.RSA:
        modulus = der.integer(area.unique)
        exponent = der.integer(rsa_exponent(area.parameters).to_bytes(4, "big"))
        key = der.bit_string(der.encode(Tag.SEQUENCE, modulus + exponent))
        return der.encode(Tag.SEQUENCE, _algorithm(OID_RSA_ENCRYPTION, der.encode(Tag.NULL, b"")) + key)
    if area.type == TPM_ALG.ECC and area.parameters.curveID in CURVE_OIDS:
        point = der.bit_string(_UNCOMPRESSED_POINT + area.unique.x + area.unique.y)
        algorithm = _algorithm(OID_EC_PUBLIC_KEY, CURVE_OIDS[area.parameters.curveID])
        return der.encode(Tag.SEQUENCE, algorithm + point)
    return None


@dataclasses.dataclass(frozen=True)
class Completed:
    """The TBSCertificate and the part of it the TPM added (addedToCertificate)."""

    tbs: bytes
    added: bytes


def complete(
    partial: PartialCertificate, signature: bytes, spki: bytes, sign_key: LoadedObject, obj: LoadedObject
) -> Completed:
    """The TBSCertificate of ``partial`` with version, serialNumber, ``signature`` (the
    caller's, or the TPM's when the caller gave none) and ``spki`` added."""
    body = partial.issuer + partial.validity + partial.subject
    serial_input = signature + body + spki + partial.extensions + sign_key.name + obj.name
    serial = der.integer(hash_alg(sign_key.name_alg).digest(serial_input)[:SERIAL_NUMBER_SIZE])
    tbs = der.encode(Tag.SEQUENCE, VERSION_V3 + serial + signature + body + spki + partial.extensions)
    added_signature = b"" if partial.signature is not None else signature
    return Completed(tbs, der.encode(Tag.SEQUENCE, VERSION_V3 + serial + added_signature + spki))
