"""Debian's tpm2-tools against ``vtpm-cuse socket``: tpm2_rsaencrypt / tpm2_rsadecrypt (RSAES,
OAEP with and without a label, raw), tpm2_ecdhkeygen / tpm2_ecdhzgen, tpm2_geteccparameters.

The outside party is ``cryptography``: it encrypts to the public key tpm2_readpublic exports and
checks the ECDH secrets the tools report.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from tests.support.tpm2_tools import module_tpm2_fixtures
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_ECC_CURVE

DECRYPT_ATTRS = "decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth"
P256_SIZE = 32


daemon, tpm2 = module_tpm2_fixtures()


@pytest.fixture(scope="module")
def rsa_key(tpm2, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, object]:
    """A persistent-free RSA-2048 decryption primary, saved as a context, and its public key."""
    d = tmp_path_factory.mktemp("rsa")
    ctx, pem = str(d / "rsa.ctx"), d / "rsa.pem"
    tpm2("createprimary", "-C", "o", "-G", "rsa2048:null:null", "-a", DECRYPT_ATTRS, "-c", ctx)
    tpm2("readpublic", "-c", ctx, "-f", "pem", "-o", str(pem))
    tpm2("flushcontext", "-t")
    return ctx, serialization.load_pem_public_key(pem.read_bytes())


@pytest.fixture(scope="module")
def ecc_key(tpm2, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, object]:
    d = tmp_path_factory.mktemp("ecc")
    ctx, pem = str(d / "ecc.ctx"), d / "ecc.pem"
    tpm2("createprimary", "-C", "o", "-G", "ecc256:null:null", "-a", DECRYPT_ATTRS, "-c", ctx)
    tpm2("readpublic", "-c", ctx, "-f", "pem", "-o", str(pem))
    tpm2("flushcontext", "-t")
    return ctx, serialization.load_pem_public_key(pem.read_bytes())


def oaep(label: bytes | None = None) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label)


def decrypt(tpm2, ctx: str, ciphertext: bytes, tmp_path: Path, *options: str) -> bytes:
    src, out = tmp_path / "cipher.bin", tmp_path / "plain.bin"
    src.write_bytes(ciphertext)
    tpm2("rsadecrypt", "-c", ctx, *options, "-o", str(out), str(src))
    tpm2("flushcontext", "-t")
    return out.read_bytes()


def encrypt(tpm2, ctx: str, message: bytes, tmp_path: Path, *options: str) -> bytes:
    src, out = tmp_path / "message.bin", tmp_path / "cipher.bin"
    src.write_bytes(message)
    tpm2("rsaencrypt", "-c", ctx, *options, "-o", str(out), str(src))
    tpm2("flushcontext", "-t")
    return out.read_bytes()


@pytest.mark.parametrize(
    ("scheme", "outside"), [("rsaes", padding.PKCS1v15()), ("oaep", oaep())], ids=["rsaes", "oaep"]
)
def test_rsadecrypt_of_a_ciphertext_made_outside(tpm2, rsa_key, tmp_path: Path, scheme, outside) -> None:
    ctx, public = rsa_key
    message = os.urandom(32)
    assert decrypt(tpm2, ctx, public.encrypt(message, outside), tmp_path, "-s", scheme) == message


@pytest.mark.parametrize("scheme", ["rsaes", "oaep"])
def test_rsaencrypt_and_rsadecrypt_round_trip(tpm2, rsa_key, tmp_path: Path, scheme) -> None:
    ctx, _ = rsa_key
    message = os.urandom(48)
    ciphertext = encrypt(tpm2, ctx, message, tmp_path, "-s", scheme)
    assert len(ciphertext) == 256
    assert decrypt(tpm2, ctx, ciphertext, tmp_path, "-s", scheme) == message


def test_oaep_label_from_tpm2_tools(tpm2, rsa_key, tmp_path: Path) -> None:
    """tpm2-tools sends a string label with its terminating zero, which is part of L."""
    ctx, public = rsa_key
    ciphertext = public.encrypt(b"labelled", oaep(b"my-label\0"))
    assert decrypt(tpm2, ctx, ciphertext, tmp_path, "-s", "oaep", "-l", "my-label") == b"labelled"
    inside = encrypt(tpm2, ctx, b"labelled", tmp_path, "-s", "oaep", "-l", "my-label")
    assert decrypt(tpm2, ctx, inside, tmp_path, "-s", "oaep", "-l", "my-label") == b"labelled"
    # Another label: the OAEP check fails and the tool reports the TPM's error.
    src = tmp_path / "cipher.bin"
    src.write_bytes(inside)
    result = tpm2(
        "rsadecrypt", "-c", ctx, "-s", "oaep", "-l", "other", "-o", str(tmp_path / "x"), str(src), check=False
    )
    tpm2("flushcontext", "-t")
    assert result.returncode != 0


def test_raw_rsa_round_trip(tpm2, rsa_key, tmp_path: Path) -> None:
    ctx, public = rsa_key
    message = b"\x00" + os.urandom(255)
    ciphertext = encrypt(tpm2, ctx, message, tmp_path, "-s", "null")
    n, e = public.public_numbers().n, public.public_numbers().e
    assert int.from_bytes(ciphertext, "big") == pow(int.from_bytes(message, "big"), e, n)
    assert decrypt(tpm2, ctx, ciphertext, tmp_path, "-s", "null") == message


def point_file(path: Path, numbers: ec.EllipticCurvePublicNumbers) -> str:
    point = T.TPMS_ECC_POINT(x=numbers.x.to_bytes(P256_SIZE, "big"), y=numbers.y.to_bytes(P256_SIZE, "big"))
    path.write_bytes(T.TPM2B_ECC_POINT.pack(point))
    return str(path)


def test_ecdhzgen_equals_the_exchange_outside(tpm2, ecc_key, tmp_path: Path) -> None:
    ctx, public = ecc_key
    theirs = ec.generate_private_key(ec.SECP256R1())
    out = tmp_path / "z.bin"
    tpm2(
        "ecdhzgen",
        "-c",
        ctx,
        "-u",
        point_file(tmp_path / "peer.bin", theirs.public_key().public_numbers()),
        "-o",
        str(out),
    )
    tpm2("flushcontext", "-t")
    z = T.TPM2B_ECC_POINT.unpack(out.read_bytes())
    assert z.x == theirs.exchange(ec.ECDH(), public)


def test_ecdhkeygen_and_ecdhzgen_agree(tpm2, ecc_key, tmp_path: Path) -> None:
    ctx, _ = ecc_key
    pub, z = tmp_path / "pub.bin", tmp_path / "z.bin"
    tpm2("ecdhkeygen", "-c", ctx, "-u", str(pub), "-o", str(z))
    tpm2("flushcontext", "-t")
    again = tmp_path / "z2.bin"
    tpm2("ecdhzgen", "-c", ctx, "-u", str(pub), "-o", str(again))
    tpm2("flushcontext", "-t")
    assert T.TPM2B_ECC_POINT.unpack(again.read_bytes()) == T.TPM2B_ECC_POINT.unpack(z.read_bytes())


def test_geteccparameters(tpm2, tmp_path: Path) -> None:
    out = tmp_path / "params.bin"
    tpm2("geteccparameters", "ecc256", "-o", str(out))
    detail = T.TPMS_ALGORITHM_DETAIL_ECC.unpack(out.read_bytes())
    generator = ec.derive_private_key(1, ec.SECP256R1()).public_key().public_numbers()
    assert detail.curveID == TPM_ECC_CURVE.NIST_P256 and detail.keySize == 256
    assert detail.gX == generator.x.to_bytes(P256_SIZE, "big") and detail.gY == generator.y.to_bytes(P256_SIZE, "big")
    assert detail.kdf.scheme == TPM_ALG.KDF1_SP800_56A
