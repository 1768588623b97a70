"""A local certificate authority for EK and platform certificates (swtpm_localca's job).

The CA lives in a directory named by a ``swtpm-localca.conf``-style file
(``statedir``, ``signingkey``, ``issuercert``, ``certserial``): a self-signed root
(``swtpm-localca-rootca-cert.pem`` + key) and an intermediate that signs the TPM
certificates.  It is created on first use and reused afterwards, so every TPM a host
manufactures chains to the same root.  Creation and serial numbers are serialised with a
``flock`` on ``<statedir>/.lock.vtpm-localca``: several VMs may be set up at once.

Certificate contents follow the TCG EK Credential Profile as swtpm_cert writes it: subject
CN = the VM id, a critical subjectAltName directoryName with the TPM manufacturer, model
and version (2.23.133.2.1/2/3), extended key usage tcg-kp-EKCertificate (2.23.133.8.1),
subject directory attributes with the TPM specification (2.23.133.2.16), CA:FALSE.
"""

from __future__ import annotations

import datetime
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .state.atomic import atomic_write
from .tpm import der
from .tpm.der import Tag

__all__ = [
    "LocalCa",
    "LocalCaConfig",
    "LocalCaError",
    "PlatformInfo",
    "TpmInfo",
    "der_tpm_specification",
]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

CA_KEY_BITS = 3072
ROOT_CERT_NAME = "swtpm-localca-rootca-cert.pem"
ROOT_KEY_NAME = "swtpm-localca-rootca-privkey.pem"
LOCK_NAME = ".lock.vtpm-localca"
ROOT_CN = "vtpm-cuse-localca-rootca"
ISSUER_CN = "vtpm-cuse-localca"
#: swtpm_cert's notAfter: "no well-defined expiration date" (RFC 5280, 4.1.2.5).
NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)

OID_TPM_MANUFACTURER = x509.ObjectIdentifier("2.23.133.2.1")
OID_TPM_MODEL = x509.ObjectIdentifier("2.23.133.2.2")
OID_TPM_VERSION = x509.ObjectIdentifier("2.23.133.2.3")
OID_TPM_SPECIFICATION = "2.23.133.2.16"
OID_PLATFORM_MANUFACTURER = x509.ObjectIdentifier("2.23.133.5.1.1")
OID_PLATFORM_MODEL = x509.ObjectIdentifier("2.23.133.5.1.4")
OID_PLATFORM_VERSION = x509.ObjectIdentifier("2.23.133.5.1.5")
OID_EK_CERTIFICATE = x509.ObjectIdentifier("2.23.133.8.1")
OID_PLATFORM_CERTIFICATE = x509.ObjectIdentifier("2.23.133.8.2")
OID_SUBJECT_DIRECTORY_ATTRIBUTES = x509.ObjectIdentifier("2.5.29.9")


class LocalCaError(Exception):
    """The CA directory or configuration cannot be used."""


@dataclass(frozen=True)
class LocalCaConfig:
    """Where the CA keeps its files (the keys of swtpm-localca.conf)."""

    statedir: Path
    signingkey: Path
    issuercert: Path
    certserial: Path

    @classmethod
    def in_directory(cls, statedir: str | os.PathLike[str]) -> LocalCaConfig:
        d = Path(statedir)
        return cls(d, d / "signkey.pem", d / "issuercert.pem", d / "certserial")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalCaConfig:
        """Parse a swtpm-localca.conf (``key = value`` lines, ``#`` comments, ``${VAR}`` expanded)."""
        values = read_key_values(Path(path))
        if "statedir" not in values:
            raise LocalCaError(f"{path}: no 'statedir' entry")
        default = cls.in_directory(values["statedir"])
        return cls(
            default.statedir,
            Path(values.get("signingkey", default.signingkey)),
            Path(values.get("issuercert", default.issuercert)),
            Path(values.get("certserial", default.certserial)),
        )


def read_key_values(path: Path) -> dict[str, str]:
    """The ``key = value`` entries of a swtpm-style configuration file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise LocalCaError(f"cannot read configuration file {path}: {e.strerror}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise LocalCaError(f"{path}:{number}: expected 'key = value', got {line!r}")
        values[key.strip()] = os.path.expandvars(value.strip())
    return values


@dataclass(frozen=True)
class TpmInfo:
    """What the EK certificate says about the TPM (SAN and subject directory attributes)."""

    manufacturer: str
    model: str
    version: str
    spec_family: str = "2.0"
    spec_level: int = 0
    spec_revision: int = 0


@dataclass(frozen=True)
class PlatformInfo:
    """The platform certificate's subjectAltName (swtpm-localca.options)."""

    manufacturer: str
    model: str
    version: str


#: Universal tags the TPM specification attribute needs beyond :class:`.tpm.der.Tag`.
UTF8_STRING = 0x0C
SET = 0x31


def der_tpm_specification(info: TpmInfo) -> bytes:
    """SubjectDirectoryAttributes holding TPMSpecification{family, level, revision}
    (``cryptography`` has no type for this extension, so it is encoded here)."""

    def integer(value: int) -> bytes:
        return der.integer(value.to_bytes(value.bit_length() // 8 + 1, "big"))

    spec = der.encode(
        Tag.SEQUENCE,
        der.encode(UTF8_STRING, info.spec_family.encode()) + integer(info.spec_level) + integer(info.spec_revision),
    )
    attribute = der.encode(Tag.SEQUENCE, der.object_identifier(OID_TPM_SPECIFICATION) + der.encode(SET, spec))
    return der.encode(Tag.SEQUENCE, attribute)


class LocalCa:
    """An opened CA: its signing key and issuer certificate."""

    def __init__(self, config: LocalCaConfig, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
        self.config = config
        self.key = key
        self.cert = cert

    @property
    def root_cert_path(self) -> Path:
        return self.config.statedir / ROOT_CERT_NAME

    @classmethod
    def open(cls, config: LocalCaConfig) -> LocalCa:
        """Open the CA, creating the root and the signing CA the first time."""
        try:
            config.statedir.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as e:
            raise LocalCaError(f"cannot create CA directory {config.statedir}: {e.strerror}") from None
        with _locked(config.statedir):
            if not (config.signingkey.exists() and config.issuercert.exists()):
                _create(config)
            try:
                key = serialization.load_pem_private_key(config.signingkey.read_bytes(), password=None)
                cert = x509.load_pem_x509_certificate(config.issuercert.read_bytes())
            except (OSError, ValueError, TypeError) as e:
                raise LocalCaError(f"cannot load the CA signing key/certificate in {config.statedir}: {e}") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise LocalCaError(f"{config.signingkey}: the signing key must be an RSA key")
        return cls(config, key, cert)

    def next_serial(self) -> int:
        """The next certificate serial number, persisted in ``certserial``."""
        with _locked(self.config.statedir):
            try:
                current = int(self.config.certserial.read_text().strip() or "1")
            except FileNotFoundError:
                current = 1
            except ValueError:
                raise LocalCaError(f"{self.config.certserial} does not hold a serial number") from None
            serial = current + 1
            atomic_write(self.config.certserial, f"{serial}\n".encode(), mode=0o644, temp_name=".certserial.tmp")
        return serial

    def _builder(self, subject_cn: str, public_key: PublicKey) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        return (
            x509.CertificateBuilder()
            .serial_number(self.next_serial())
            .issuer_name(self.cert.subject)
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
            .not_valid_before(now)
            .not_valid_after(NOT_AFTER)
            .public_key(public_key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )

    def issue_ek_cert(self, public_key: PublicKey, subject_cn: str, tpm: TpmInfo, *, signing: bool = False) -> bytes:
        """A DER EK certificate for ``public_key``."""
        san = x509.DirectoryName(
            x509.Name(
                [
                    x509.RelativeDistinguishedName([x509.NameAttribute(OID_TPM_MANUFACTURER, tpm.manufacturer)]),
                    x509.RelativeDistinguishedName([x509.NameAttribute(OID_TPM_MODEL, tpm.model)]),
                    x509.RelativeDistinguishedName([x509.NameAttribute(OID_TPM_VERSION, tpm.version)]),
                ]
            )
        )
        builder = (
            self._builder(subject_cn, public_key)
            .add_extension(x509.ExtendedKeyUsage([OID_EK_CERTIFICATE]), critical=False)
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(
                x509.UnrecognizedExtension(OID_SUBJECT_DIRECTORY_ATTRIBUTES, der_tpm_specification(tpm)),
                critical=False,
            )
            .add_extension(_key_usage(public_key, signing), critical=True)
        )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def issue_platform_cert(self, public_key: PublicKey, subject_cn: str, platform: PlatformInfo) -> bytes:
        """A DER platform certificate (swtpm_cert's: it certifies the EK's public key)."""
        san = x509.DirectoryName(
            x509.Name(
                [
                    x509.RelativeDistinguishedName(
                        [x509.NameAttribute(OID_PLATFORM_MANUFACTURER, platform.manufacturer)]
                    ),
                    x509.RelativeDistinguishedName([x509.NameAttribute(OID_PLATFORM_MODEL, platform.model)]),
                    x509.RelativeDistinguishedName([x509.NameAttribute(OID_PLATFORM_VERSION, platform.version)]),
                ]
            )
        )
        builder = (
            self._builder(subject_cn, public_key)
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(_key_usage(public_key, signing=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([OID_PLATFORM_CERTIFICATE]), critical=False)
        )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _key_usage(public_key: PublicKey, signing: bool) -> x509.KeyUsage:
    """keyEncipherment for an RSA EK, keyAgreement for an ECC EK, digitalSignature if it signs."""
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=False,
        key_encipherment=is_rsa,
        data_encipherment=False,
        key_agreement=not is_rsa,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


@contextmanager
def _locked(statedir: Path) -> Iterator[None]:
    fd = os.open(statedir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _ca_cert(
    subject: str, key: rsa.RSAPrivateKey, issuer: x509.Name, signer: rsa.RSAPrivateKey, path_length: int | None
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .serial_number(x509.random_serial_number())
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .not_valid_before(now)
        .not_valid_after(NOT_AFTER)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    )
    return builder.sign(signer, hashes.SHA256())


def _write_pem_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    atomic_write(path, pem, mode=0o600, temp_name=f".{path.name}.tmp")


def _create(config: LocalCaConfig) -> None:
    """Root CA (self-signed) and the signing CA below it; keys 0600, certificates 0644."""
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=CA_KEY_BITS)
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ROOT_CN)])
    root = _ca_cert(ROOT_CN, root_key, root_name, root_key, path_length=None)
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=CA_KEY_BITS)
    issuer = _ca_cert(ISSUER_CN, signing_key, root.subject, root_key, path_length=0)
    for path in (config.signingkey, config.issuercert, config.certserial):
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    _write_pem_key(config.statedir / ROOT_KEY_NAME, root_key)
    atomic_write(
        config.statedir / ROOT_CERT_NAME,
        root.public_bytes(serialization.Encoding.PEM),
        mode=0o644,
        temp_name=f".{ROOT_CERT_NAME}.tmp",
    )
    _write_pem_key(config.signingkey, signing_key)
    atomic_write(
        config.issuercert,
        issuer.public_bytes(serialization.Encoding.PEM),
        mode=0o644,
        temp_name=f".{config.issuercert.name}.tmp",
    )
