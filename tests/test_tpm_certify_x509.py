"""TPM2_CertifyX509 (Part 3, 18.8) through Engine.execute.

Each certificate is put together here the way a relying party would: the TPM's
addedToCertificate (version, serialNumber, signature algorithm when the TPM chose it,
subjectPublicKeyInfo) spliced into the caller's partial certificate, the signature
appended. ``cryptography`` then parses it, its public key must be the certified object's,
its signature must verify with the signing key's public key and tbsDigest must be the hash
of its TBSCertificate. The partial certificates are built here from ``cryptography``'s
Name and extension encodings with a few lines of DER, independent of the engine's.
"""

from __future__ import annotations

import datetime
import hashlib
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from test_tpm_attestation import command
from test_tpm_signing import HASHES, X509SIGN, ecc_signer, rsa_signer

from support.engine_oracle import EngineOracle
from support.object_templates import (
    DECRYPT,
    FIXED_PARENT,
    FIXED_TPM,
    NO_SYM,
    RESTRICTED,
    SDO,
    SIGN,
    SIGNING,
    USER_WITH_AUTH,
    create_cmd,
    create_primary_cmd,
    ecc_template,
    keyedhash_template,
    load_cmd,
    rsa_template,
)
from support.tpm_client import Response, tpm2b, u16
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_H, RC_P, TPM_RC, rc_name
from vtpm_cuse.tpm.marshal import Reader, Struct

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
OUT = Struct(
    "CertifyX509_Out",
    [("addedToCertificate", T.TPM2B_MAX_BUFFER), ("tbsDigest", T.TPM2B_DIGEST), ("signature", T.TPMT_SIGNATURE_PLUS)],
)
CREATE_OUT = Struct("Create_Out", [("outPrivate", T.TPM2B_PRIVATE), ("outPublic", T.TPM2B_PUBLIC)])
TPMA_OBJECT_OID = x509.ObjectIdentifier("2.23.133.10.1.1.1")
SIGN_USAGE = dict(digital_signature=True, key_cert_sign=True, crl_sign=True)
NOT_BEFORE = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def h(rc: int, n: int) -> int:
    return rc | RC_H | n << 8


def p(rc: int, n: int) -> int:
    return rc | RC_P | n << 8


# --- DER, just enough to build and splice certificates -----------------------------------------------


def tlv(tag: int, value: bytes) -> bytes:
    size = len(value)
    length = (
        bytes([size])
        if size < 0x80
        else bytes([0x80 | (size.bit_length() + 7) // 8]) + size.to_bytes((size.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + length + value


def elements(data: bytes) -> list[bytes]:
    """The encodings of the consecutive elements of ``data``."""
    out, at = [], 0
    while at < len(data):
        first = data[at + 1]
        count = first & 0x7F if first & 0x80 else 0
        size = int.from_bytes(data[at + 2 : at + 2 + count], "big") if count else first
        end = at + 2 + count + size
        out.append(data[at:end])
        at = end
    return out


def contents(element: bytes) -> bytes:
    """The contents of one element."""
    first = element[1]
    return element[2 + (first & 0x7F if first & 0x80 else 0) :]


def name(cn: str) -> bytes:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vtpm-cuse"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    ).public_bytes()


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


def extension(ext: x509.ExtensionType, critical: bool = False) -> bytes:
    """An Extension: extnID, critical when set, extnValue (``cryptography``'s DER of the value)."""
    return tlv(
        0x30, oid(ext.oid.dotted_string) + (b"\x01\x01\xff" if critical else b"") + tlv(0x04, ext.public_bytes())
    )


def tpma_object(attributes: int) -> x509.UnrecognizedExtension:
    """TCG's TPMA_OBJECT extension: a BIT STRING of the 32 attribute bits, bit 31 first."""
    return x509.UnrecognizedExtension(TPMA_OBJECT_OID, tlv(0x03, b"\0" + attributes.to_bytes(4, "big")))


def key_usage(**bits) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    names += ("key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    values = {n: bits.get(n, False) for n in names}
    return x509.KeyUsage(**values)


def validity(days: int = 365) -> bytes:
    def utc(t: datetime.datetime) -> bytes:
        return tlv(0x17, t.strftime("%y%m%d%H%M%SZ").encode())

    return tlv(0x30, utc(NOT_BEFORE) + utc(NOT_BEFORE + datetime.timedelta(days=days)))


def partial(
    subject: str = "leaf",
    issuer: str = "vtpm CA",
    exts: list[bytes] | None = None,
    signature: bytes | None = None,
) -> bytes:
    exts = [extension(key_usage(**SIGN_USAGE), critical=True)] if exts is None else exts
    body = (signature or b"") + name(issuer) + validity() + name(subject) + tlv(0xA3, tlv(0x30, b"".join(exts)))
    return tlv(0x30, body)


# --- the command and the certificate ---------------------------------------------------------------


def scheme(alg: int = TPM_ALG.NULL, hash_alg: int | None = None) -> bytes:
    return u16(alg) + (b"" if alg == TPM_ALG.NULL else u16(hash_alg))


def certify_x509_cmd(obj: int, sign: int, cert: bytes, sch: bytes = scheme(), reserved: bytes = b"") -> bytes:
    return command(TPM_CC.CertifyX509, [obj, sign], tpm2b(reserved) + sch + tpm2b(cert), [b"", b""])


def run(tpm, cmd: bytes) -> Response:
    return Response(tpm.execute(cmd))


def ok(tpm, cmd: bytes) -> Response:
    resp = run(tpm, cmd)
    assert resp.rc == 0, rc_name(resp.rc)
    return resp


def certify(tpm, obj: int, sign: int, cert: bytes, sch: bytes = scheme()):
    return OUT.unpack(ok(tpm, certify_x509_cmd(obj, sign, cert, sch)).params())


def signature_der(sig) -> bytes:
    if sig.sigAlg == TPM_ALG.ECDSA:
        r, s = (int.from_bytes(v, "big") for v in (sig.signature.signatureR, sig.signature.signatureS))
        return encode_dss_signature(r, s)
    return sig.signature.digest if sig.sigAlg == TPM_ALG.HMAC else sig.signature.sig


def assemble(partial_cert: bytes, out) -> tuple[bytes, bytes, bytes]:
    """(certificate DER, TBSCertificate, signature algorithm) from the caller's and the TPM's parts."""
    added = elements(contents(out.addedToCertificate))
    mine = elements(contents(partial_cert))
    version, serial, *rest = added
    spki = rest[-1]
    if len(mine) == 5:  # the caller's signature algorithm leads
        algorithm, issuer, valid, subject, exts = mine
        assert len(rest) == 1
    else:
        issuer, valid, subject, exts = mine
        (algorithm, _) = rest
    tbs = tlv(0x30, version + serial + algorithm + issuer + valid + subject + spki + exts)
    cert = tlv(0x30, tbs + algorithm + tlv(0x03, b"\0" + signature_der(out.signature)))
    return cert, tbs, algorithm


def public_key(public):
    if public.type == TPM_ALG.RSA:
        return rsa.RSAPublicNumbers(
            public.parameters.exponent or 65537, int.from_bytes(public.unique, "big")
        ).public_key()
    curve = {0x0003: ec.SECP256R1, 0x0004: ec.SECP384R1}[public.parameters.curveID]()
    x, y = (int.from_bytes(c, "big") for c in (public.unique.x, public.unique.y))
    return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()


def same_key(a, b) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(serialization.Encoding.DER, fmt) == b.public_bytes(serialization.Encoding.DER, fmt)


def verify_cert(cert: x509.Certificate, signer_public) -> None:
    """The certificate's signature with the signing key, by the algorithm the certificate names."""
    alg = cert.signature_hash_algorithm
    if isinstance(signer_public, ec.EllipticCurvePublicKey):
        signer_public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(alg))
    elif cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSASSA_PSS:
        pss = padding.PSS(mgf=padding.MGF1(alg), salt_length=padding.PSS.AUTO)
        signer_public.verify(cert.signature, cert.tbs_certificate_bytes, pss, alg)
    else:
        signer_public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), alg)


# --- keys ---------------------------------------------------------------------------------------


class Key:
    def __init__(self, handle: int, public) -> None:
        self.handle, self.public = handle, public

    @property
    def name(self) -> bytes:
        return (
            u16(self.public.nameAlg)
            + hashlib.new(HASHES[self.public.nameAlg], T.TPMT_PUBLIC.pack(self.public)).digest()
        )


def make(tpm, parent: int, template) -> Key:
    out = CREATE_OUT.unmarshal(Reader(ok(tpm, create_cmd(parent, template)).params()))
    handle = int.from_bytes(ok(tpm, load_cmd(parent, out.outPrivate, out.outPublic)).raw[10:14], "big")
    return Key(handle, out.outPublic)


@pytest.fixture(scope="module")
def tpm():
    engine = EngineOracle(Engine())
    assert run(engine, STARTUP_CLEAR).rc == 0
    return engine


@pytest.fixture(scope="module")
def keys(tpm):
    srk = int.from_bytes(ok(tpm, create_primary_cmd(ecc_template())).raw[10:14], "big")
    return {
        "srk": Key(srk, None),
        "rsa": make(tpm, srk, rsa_template(SIGNING, bits=2048, sym=NO_SYM)),
        "rsa1024": make(tpm, srk, rsa_signer()),
        "rsa_pss": make(tpm, srk, rsa_signer(TPM_ALG.RSAPSS, TPM_ALG.SHA256)),
        "ecc": make(tpm, srk, ecc_signer()),
        "ecc384": make(tpm, srk, ecc_signer(0x0004, TPM_ALG.ECDSA, TPM_ALG.SHA384)),
        "x509": make(tpm, srk, ecc_signer(attrs=SIGNING | X509SIGN)),
        "decrypt": make(tpm, srk, ecc_signer(attrs=FIXED_TPM | FIXED_PARENT | SDO | USER_WITH_AUTH | DECRYPT)),
        "unfixed": make(tpm, srk, ecc_signer(attrs=SDO | USER_WITH_AUTH | SIGN)),
        "hmac": make(
            tpm, srk, keyedhash_template(FIXED_TPM | FIXED_PARENT | SDO | USER_WITH_AUTH | SIGN, TPM_ALG.HMAC)
        ),
    }


# --- certificates that verify ---------------------------------------------------------------------

CASES = [
    ("rsa", "ecc", TPM_ALG.RSASSA, TPM_ALG.SHA256),
    ("rsa", "rsa1024", TPM_ALG.RSASSA, TPM_ALG.SHA1),
    ("rsa", "ecc384", TPM_ALG.RSAPSS, TPM_ALG.SHA384),
    ("rsa1024", "ecc", TPM_ALG.RSAPSS, TPM_ALG.SHA512),  # the salt is shorter than the digest
    ("rsa1024", "rsa", TPM_ALG.RSAPSS, TPM_ALG.SHA1),
    ("rsa_pss", "ecc", TPM_ALG.NULL, None),  # the key's own scheme
    ("ecc", "rsa", TPM_ALG.ECDSA, TPM_ALG.SHA256),
    ("ecc", "ecc384", TPM_ALG.ECDSA, TPM_ALG.SHA512),
    ("ecc384", "ecc", TPM_ALG.NULL, None),
    ("x509", "rsa1024", TPM_ALG.ECDSA, TPM_ALG.SHA256),
]


@pytest.mark.parametrize(("signer", "subject", "sch", "alg"), CASES, ids=[f"{c[0]}-{c[1]}-{c[2].name}" for c in CASES])
def test_certificate_parses_verifies_and_holds_the_object_key(tpm, keys, signer, subject, sch, alg):
    cert_in = partial()
    out = certify(tpm, keys[subject].handle, keys[signer].handle, cert_in, scheme(sch, alg))
    der, tbs, _ = assemble(cert_in, out)
    cert = x509.load_der_x509_certificate(der)
    assert cert.version == x509.Version.v3
    assert same_key(cert.public_key(), public_key(keys[subject].public))
    verify_cert(cert, public_key(keys[signer].public))
    used = out.signature.signature.hash
    assert (
        out.tbsDigest
        == hashlib.new(HASHES[used], tbs).digest()
        == hashlib.new(HASHES[used], cert.tbs_certificate_bytes).digest()
    )
    assert cert.subject.rfc4514_string() == "CN=leaf,O=vtpm-cuse"
    assert cert.issuer.rfc4514_string() == "CN=vtpm CA,O=vtpm-cuse"
    assert cert.not_valid_before_utc == NOT_BEFORE
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value == key_usage(**SIGN_USAGE)


def test_serial_number_is_the_name_bound_digest_of_the_request(tpm, keys):
    """serialNumber = H_nameAlg(signer)(signature alg, issuer, validity, subject, key, extensions,
    Name(signer), Name(object)) cut to 20 octets: the same request gives the same certificate."""
    signer, subject = keys["ecc"], keys["rsa"]
    cert_in = partial(subject="deterministic")
    first, second = (
        certify(tpm, subject.handle, signer.handle, cert_in, scheme(TPM_ALG.ECDSA, TPM_ALG.SHA256)) for _ in "12"
    )
    assert first.addedToCertificate == second.addedToCertificate and first.tbsDigest == second.tbsDigest
    _, serial, algorithm, spki = elements(contents(first.addedToCertificate))
    issuer, valid, subj, exts = elements(contents(cert_in))
    digest = hashlib.sha256(algorithm + issuer + valid + subj + spki + exts + signer.name + subject.name).digest()
    assert contents(serial).lstrip(b"\0") == digest[:20].lstrip(b"\0")
    other = certify(tpm, subject.handle, signer.handle, partial(subject="other"), scheme(TPM_ALG.ECDSA, TPM_ALG.SHA256))
    assert elements(contents(other.addedToCertificate))[1] != serial


def test_caller_signature_algorithm_is_used_and_not_added(tpm, keys):
    """With four SEQUENCEs the first is the caller's AlgorithmIdentifier: the TPM adds only version,
    serial and key, and signs with its scheme (libtpms does not compare the two either)."""
    ecdsa_sha256 = tlv(0x30, tlv(0x06, bytes.fromhex("2a8648ce3d040302")))
    cert_in = partial(signature=ecdsa_sha256)
    out = certify(tpm, keys["rsa"].handle, keys["ecc"].handle, cert_in, scheme(TPM_ALG.ECDSA, TPM_ALG.SHA256))
    assert len(elements(contents(out.addedToCertificate))) == 3
    der, _, algorithm = assemble(cert_in, out)
    assert algorithm == ecdsa_sha256
    cert = x509.load_der_x509_certificate(der)
    verify_cert(cert, public_key(keys["ecc"].public))


def test_matching_tpma_object_extension_is_accepted(tpm, keys):
    obj = keys["ecc"]
    exts = [extension(key_usage(digital_signature=True)), extension(tpma_object(obj.public.objectAttributes))]
    cert_in = partial(exts=exts)
    der, _, _ = assemble(
        cert_in, certify(tpm, obj.handle, keys["rsa"].handle, cert_in, scheme(TPM_ALG.RSASSA, TPM_ALG.SHA256))
    )
    ext = x509.load_der_x509_certificate(der).extensions.get_extension_for_oid(TPMA_OBJECT_OID)
    assert ext.value.value[-4:] == obj.public.objectAttributes.to_bytes(4, "big")


def test_hmac_signer_with_caller_algorithm_signs_with_hmac(tpm, keys):
    """An HMAC key has no X.509 algorithm of its own, but signs when the caller names one."""
    cert_in = partial(signature=tlv(0x30, tlv(0x06, bytes.fromhex("2a864886f70d01010b"))))
    out = certify(tpm, keys["ecc"].handle, keys["hmac"].handle, cert_in)
    assert out.signature.sigAlg == TPM_ALG.HMAC and len(out.signature.signature.digest) == 32
    _, tbs, _ = assemble(cert_in, out)
    assert out.tbsDigest == hashlib.sha256(tbs).digest()
    verify = tpm2b(out.tbsDigest) + T.TPMT_SIGNATURE_PLUS.pack(out.signature)
    ok(tpm, command(TPM_CC.VerifySignature, [keys["hmac"].handle], verify))


def test_openssl_verifies_a_chain_the_tpm_issued(tpm, keys, tmp_path):
    """A self-signed CA certificate for the TPM's key, and a leaf it issues: ``openssl verify``."""
    ca, leaf = keys["rsa"], keys["ecc"]
    basic = extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    ca_in = partial(subject="vtpm CA", exts=[extension(key_usage(**SIGN_USAGE), critical=True), basic])
    leaf_in = partial(exts=[extension(key_usage(digital_signature=True), critical=True)])
    for file, obj, cert_in in (("ca.der", ca, ca_in), ("leaf.der", leaf, leaf_in)):
        out = certify(tpm, obj.handle, ca.handle, cert_in, scheme(TPM_ALG.RSASSA, TPM_ALG.SHA256))
        pem = x509.load_der_x509_certificate(assemble(cert_in, out)[0]).public_bytes(serialization.Encoding.PEM)
        (tmp_path / file).write_bytes(pem)
    ca_pem, leaf_pem = str(tmp_path / "ca.der"), str(tmp_path / "leaf.der")
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", leaf_pem], capture_output=True, text=True, check=True
    ).stdout
    assert "Version: 3 (0x2)" in text and "sha256WithRSAEncryption" in text and "id-ecPublicKey" in text
    when = str(int((NOT_BEFORE + datetime.timedelta(days=1)).timestamp()))
    verify = ["openssl", "verify", "-attime", when, "-CAfile", ca_pem, leaf_pem]
    result = subprocess.run(verify, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stdout + result.stderr


# --- errors ---------------------------------------------------------------------------------------


def error_cases(keys) -> list[tuple[str, bytes, int]]:
    """(what, command, expected code) for every check, in Part 3's order of checks."""
    rsa_k, ecc, hmac_k, dec = (keys[k].handle for k in ("rsa", "ecc", "hmac", "decrypt"))
    sha256 = scheme(TPM_ALG.RSASSA, TPM_ALG.SHA256)
    good = partial()
    no_ext = tlv(0x30, name("a") + validity() + name("b"))
    ku = extension(key_usage(digital_signature=True))
    return [
        ("reserved not empty", certify_x509_cmd(ecc, rsa_k, good, sha256, reserved=b"x"), p(TPM_RC.SIZE, 1)),
        ("decrypt key signs", certify_x509_cmd(ecc, dec, good), h(TPM_RC.KEY, 2)),
        (
            "scheme of the wrong key type",
            certify_x509_cmd(ecc, rsa_k, good, scheme(TPM_ALG.ECDSA, TPM_ALG.SHA256)),
            p(TPM_RC.SCHEME, 2),
        ),
        ("no scheme at all", certify_x509_cmd(ecc, rsa_k, good), p(TPM_RC.SCHEME, 2)),
        ("keyed-hash object", certify_x509_cmd(hmac_k, rsa_k, good, sha256), h(TPM_RC.ASYMMETRIC, 1)),
        ("empty partial", certify_x509_cmd(ecc, rsa_k, b"", sha256), p(TPM_RC.VALUE, 3)),
        ("not a SEQUENCE", certify_x509_cmd(ecc, rsa_k, tlv(0x31, contents(good)), sha256), p(TPM_RC.SIZE, 3)),
        ("trailing octets", certify_x509_cmd(ecc, rsa_k, good + b"\0", sha256), p(TPM_RC.SIZE, 3)),
        ("truncated", certify_x509_cmd(ecc, rsa_k, good[:-1], sha256), p(TPM_RC.SIZE, 3)),
        (
            "two SEQUENCEs",
            certify_x509_cmd(ecc, rsa_k, tlv(0x30, name("a") + name("b") + tlv(0xA3, tlv(0x30, ku))), sha256),
            p(TPM_RC.VALUE, 3),
        ),
        (
            "five SEQUENCEs",
            certify_x509_cmd(ecc, rsa_k, tlv(0x30, name("z") + contents(partial(signature=name("s")))), sha256),
            p(TPM_RC.VALUE, 3),
        ),
        ("no extensions", certify_x509_cmd(ecc, rsa_k, no_ext, sha256), p(TPM_RC.VALUE, 3)),
        (
            "two extensions",
            certify_x509_cmd(ecc, rsa_k, tlv(0x30, contents(good) + tlv(0xA3, tlv(0x30, ku))), sha256),
            p(TPM_RC.VALUE, 3),
        ),
        (
            "stray INTEGER",
            certify_x509_cmd(ecc, rsa_k, tlv(0x30, b"\x02\x01\x05" + contents(good)), sha256),
            p(TPM_RC.VALUE, 3),
        ),
        (
            "broken inner element",
            certify_x509_cmd(ecc, rsa_k, tlv(0x30, contents(good) + b"\x30\x05\x00"), sha256),
            p(TPM_RC.VALUE, 3),
        ),
        ("HMAC key chooses no algorithm", certify_x509_cmd(ecc, hmac_k, good), h(TPM_RC.SCHEME, 2)),
        (
            "no keyUsage",
            certify_x509_cmd(
                ecc, rsa_k, partial(exts=[extension(x509.BasicConstraints(ca=False, path_length=None))]), sha256
            ),
            p(TPM_RC.VALUE, 3),
        ),
        (
            "extensions not a SEQUENCE",
            certify_x509_cmd(ecc, rsa_k, tlv(0x30, contents(no_ext) + tlv(0xA3, tlv(0x31, ku))), sha256),
            p(TPM_RC.VALUE, 3),
        ),
        (
            "keyUsage not a BIT STRING",
            certify_x509_cmd(
                ecc,
                rsa_k,
                partial(
                    exts=[extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.15"), b"\x04\x01\x80"))]
                ),
                sha256,
            ),
            p(TPM_RC.VALUE, 3),
        ),
        ("signing usage, decrypt key", certify_x509_cmd(dec, rsa_k, good, sha256), h(TPM_RC.ATTRIBUTES, 1)),
        (
            "keyEncipherment, signing key",
            certify_x509_cmd(ecc, rsa_k, partial(exts=[extension(key_usage(key_encipherment=True))]), sha256),
            h(TPM_RC.ATTRIBUTES, 1),
        ),
        (
            "nonRepudiation, key not fixedTPM",
            certify_x509_cmd(
                keys["unfixed"].handle, rsa_k, partial(exts=[extension(key_usage(content_commitment=True))]), sha256
            ),
            h(TPM_RC.ATTRIBUTES, 1),
        ),
        (
            "keyAgreement, unrestricted",
            certify_x509_cmd(dec, rsa_k, partial(exts=[extension(key_usage(key_agreement=True))]), sha256),
            h(TPM_RC.ATTRIBUTES, 1),
        ),
        (
            "TPMA_OBJECT differs",
            certify_x509_cmd(ecc, rsa_k, partial(exts=[ku, extension(tpma_object(SIGNING | RESTRICTED))]), sha256),
            h(TPM_RC.ATTRIBUTES, 1),
        ),
    ]


def test_error_paths_name_the_offending_handle_or_parameter(tpm, keys):
    got = {what: rc_name(run(tpm, cmd).rc) for what, cmd, _ in error_cases(keys)}
    assert got == {what: rc_name(code) for what, _, code in error_cases(keys)}


def test_null_sign_handle_is_refused(tpm, keys):
    """A certificate is its signature: TPM_RH_NULL is TPM_RC_KEY (libtpms 0.9 crashes on it)."""
    assert rc_name(run(tpm, certify_x509_cmd(keys["ecc"].handle, TPM_RH.NULL, partial())).rc) == rc_name(
        h(TPM_RC.KEY, 2)
    )
