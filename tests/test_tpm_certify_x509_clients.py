"""TPM2_CertifyX509 with real clients against ``vtpm-cuse socket``: Debian tpm2-tools'
``tpm2_certifyX509certutil`` makes the partial certificate, tpm2-pytss's ESAPI (tpm2-tss's
marshalling) sends the command, ``cryptography`` and ``openssl`` check the certificate put
together from the response.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
import types

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from test_tpm_certify_x509 import assemble, public_key, same_key, verify_cert
from test_tpm_pytss_keys import SIGNING, daemon, esys, scheme, sensitive  # noqa: F401
from tpm2_pytss.constants import TPM2_ALG
from tpm2_pytss.types import TPM2B_MAX_BUFFER, TPM2B_PUBLIC

from vtpm_cuse.tpm import types as T

DAYS = 30


@pytest.fixture(scope="module")
def partial_cert(tmp_path_factory) -> bytes:
    if shutil.which("tpm2_certifyX509certutil") is None:
        raise RuntimeError("tpm2-tools is not installed (tpm2_certifyX509certutil)")
    out = tmp_path_factory.mktemp("x509") / "partial.der"
    subprocess.run(
        [
            "tpm2_certifyX509certutil",
            "-o",
            str(out),
            "-d",
            str(DAYS),
            "-i",
            "C=US;O=vtpm;CN=ca",
            "-s",
            "C=US;O=vtpm;CN=leaf",
        ],
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


def primary(esys, spec: str):  # noqa: F811 (the fixture)
    handle, public, _, _, _ = esys.create_primary(sensitive(), TPM2B_PUBLIC.parse(spec, objectAttributes=SIGNING))
    return handle, T.TPM2B_PUBLIC.unpack(public.marshal())


def test_pytss_certify_x509_of_a_tpm2_tools_partial_certificate(esys, partial_cert, tmp_path):  # noqa: F811
    signer, signer_public = primary(esys, "ecc256:ecdsa-sha256:null")
    subject, subject_public = primary(esys, "ecc384:null:null")
    try:
        added, digest, signature = esys.certify_x509(
            subject, signer, TPM2B_MAX_BUFFER(partial_cert), scheme(TPM2_ALG.ECDSA)
        )
    finally:
        esys.flush_context(subject)
        esys.flush_context(signer)
    out = types.SimpleNamespace(
        addedToCertificate=bytes(added),
        tbsDigest=bytes(digest),
        signature=T.TPMT_SIGNATURE_PLUS.unpack(signature.marshal()),
    )
    der, _, _ = assemble(partial_cert, out)
    cert = x509.load_der_x509_certificate(der)
    assert cert.subject.rfc4514_string() == "CN=leaf,O=vtpm,C=US"
    assert cert.issuer.rfc4514_string() == "CN=ca,O=vtpm,C=US"
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=DAYS)
    assert same_key(cert.public_key(), public_key(subject_public))
    verify_cert(cert, public_key(signer_public))
    pem = tmp_path / "leaf.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(pem)], capture_output=True, text=True)
    assert text.returncode == 0, text.stderr
    assert "ecdsa-with-SHA256" in text.stdout and "NIST CURVE: P-384" in text.stdout
    assert "Digital Signature, Certificate Sign, CRL Sign" in text.stdout
