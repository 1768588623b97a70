"""tpm2_sign and tpm2_verifysignature (Debian's tpm2-tools) against ``vtpm-cuse socket``.

Each scheme is signed by the TPM through the tools, verified by the TPM through the tools
(which also writes the TPMT_TK_VERIFIED ticket), and, in the tools' plain format, verified
outside with ``cryptography`` against the public key tpm2_readpublic exports as PEM.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from tests.test_sockets_tpm2_tools import daemon, tpm2  # noqa: F401 (the fixtures)
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_RH, TPM_ST

MESSAGE = b"signed through tpm2-tools"


@pytest.fixture(scope="module")
def primary(tpm2, tmp_path_factory):  # noqa: F811 (the fixture)
    ctx = str(tmp_path_factory.mktemp("signing") / "primary.ctx")
    tpm2("createprimary", "-C", "o", "-G", "ecc256", "-c", ctx)
    tpm2("flushcontext", "-t")
    return ctx


def step(tpm2, *args: str) -> subprocess.CompletedProcess[bytes]:  # noqa: F811 (the fixture)
    """One tool; then flush what it left in the object slots (there is no resource manager)."""
    result = tpm2(*args)
    tpm2("flushcontext", "-t")
    return result


def make_key(tpm2, primary: str, tmp_path: Path, alg: str, *extra: str) -> str:  # noqa: F811 (the fixture)
    pub, priv, ctx = (str(tmp_path / f"key.{n}") for n in ("pub", "priv", "ctx"))
    step(tpm2, "create", "-C", primary, "-G", alg, "-u", pub, "-r", priv, *extra)
    step(tpm2, "load", "-C", primary, "-u", pub, "-r", priv, "-c", ctx)
    return ctx


@pytest.mark.parametrize(
    ("alg", "scheme", "hash_name"),
    [
        ("rsa1024", "rsassa", "sha256"),
        ("rsa1024", "rsapss", "sha384"),
        ("ecc256", "ecdsa", "sha256"),
        ("ecc384", "ecdsa", "sha384"),
        ("ecc192", "ecdsa", "sha256"),
        ("ecc224", "ecdsa", "sha1"),
        ("hmac", "hmac", "sha256"),
    ],
)
def test_tpm2_sign_and_verifysignature(tpm2, primary, tmp_path, alg, scheme, hash_name):  # noqa: F811
    key = make_key(tpm2, primary, tmp_path, alg)
    message, sig, ticket = tmp_path / "msg", str(tmp_path / "sig"), str(tmp_path / "ticket")
    message.write_bytes(MESSAGE)
    step(tpm2, "sign", "-c", key, "-g", hash_name, "-s", scheme, "-o", sig, str(message))
    step(tpm2, "verifysignature", "-c", key, "-g", hash_name, "-m", str(message), "-s", sig, "-t", ticket)
    signature = T.TPMT_SIGNATURE.unpack(Path(sig).read_bytes())
    assert signature.sigAlg == getattr(TPM_ALG, scheme.upper())
    validation = T.TPMT_TK_VERIFIED.unpack(Path(ticket).read_bytes())
    assert (validation.tag, validation.hierarchy, len(validation.digest)) == (TPM_ST.VERIFIED, TPM_RH.OWNER, 64)
    # A signature over another message does not verify.
    other = tmp_path / "other"
    other.write_bytes(MESSAGE + b"!")
    refused = tpm2("verifysignature", "-c", key, "-g", hash_name, "-m", str(other), "-s", sig, check=False)
    tpm2("flushcontext", "-t")
    assert refused.returncode != 0


@pytest.mark.parametrize(
    ("alg", "scheme", "hash_name"),
    [
        ("rsa1024", "rsassa", "sha256"),
        ("rsa1024", "rsapss", "sha256"),
        ("ecc256", "ecdsa", "sha256"),
        ("ecc192", "ecdsa", "sha256"),
        ("ecc224", "ecdsa", "sha256"),
    ],
)
def test_tpm2_sign_plain_output_verifies_with_cryptography(tpm2, primary, tmp_path, alg, scheme, hash_name):  # noqa: F811
    key = make_key(tpm2, primary, tmp_path, alg)
    message, sig, pem = tmp_path / "msg", tmp_path / "sig.plain", tmp_path / "key.pem"
    message.write_bytes(MESSAGE)
    step(tpm2, "sign", "-c", key, "-g", hash_name, "-s", scheme, "-f", "plain", "-o", str(sig), str(message))
    step(tpm2, "readpublic", "-c", key, "-f", "pem", "-o", str(pem))
    public = serialization.load_pem_public_key(pem.read_bytes())
    if scheme == "rsassa":
        public.verify(sig.read_bytes(), MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    elif scheme == "rsapss":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=hashes.SHA256.digest_size)
        public.verify(sig.read_bytes(), MESSAGE, pss, hashes.SHA256())
    else:
        public.verify(sig.read_bytes(), MESSAGE, ec.ECDSA(hashes.SHA256()))  # DER, as openssl writes it


@pytest.mark.parametrize(("alg", "curve", "size"), [("ecc192", ec.SECP192R1, 24), ("ecc224", ec.SECP224R1, 28)])
def test_tpm2_createprimary_on_the_small_nist_curves(tpm2, tmp_path, alg, curve, size):  # noqa: F811
    """tpm2_createprimary -G ecc192/ecc224: a primary key whose PEM is a point of that curve."""
    ctx, pem = str(tmp_path / "primary.ctx"), tmp_path / "primary.pem"
    step(tpm2, "createprimary", "-C", "o", "-G", alg, "-c", ctx)
    step(tpm2, "readpublic", "-c", ctx, "-f", "pem", "-o", str(pem))
    public = serialization.load_pem_public_key(pem.read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, curve)
    assert (public.curve.key_size + 7) // 8 == size


def test_tpm2_sign_with_a_restricted_key_uses_the_hash_ticket(tpm2, primary, tmp_path):  # noqa: F811
    """tpm2_sign hashes on the TPM for a restricted key and passes the TPM2_Hash ticket."""
    key = make_key(
        tpm2,
        primary,
        tmp_path,
        "ecc256:ecdsa-sha256:null",
        "-a",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
    )
    message, sig = tmp_path / "msg", str(tmp_path / "sig")
    message.write_bytes(MESSAGE)
    digest, ticket = str(tmp_path / "digest"), str(tmp_path / "ticket")
    step(tpm2, "hash", "-C", "o", "-g", "sha256", "-o", digest, "-t", ticket, str(message))
    step(tpm2, "sign", "-c", key, "-g", "sha256", "-d", "-t", ticket, "-o", sig, digest)
    step(tpm2, "verifysignature", "-c", key, "-g", "sha256", "-m", str(message), "-s", sig)
    # The digest without its ticket is refused.
    refused = tpm2("sign", "-c", key, "-g", "sha256", "-d", "-o", sig, digest, check=False)
    tpm2("flushcontext", "-t")
    assert refused.returncode != 0 and b"0x3e0" in refused.stderr.lower()
