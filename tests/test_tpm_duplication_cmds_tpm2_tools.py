"""TPM2_Duplicate and TPM2_Import with Debian's tpm2-tools against ``vtpm-cuse socket``,
following tpm2_duplicate(1)'s own examples.

A key whose policy allows only TPM2_CC_Duplicate is duplicated (no inner wrapper, an
AES inner wrapper with a TPM-made or a given key) to a new RSA or ECC parent, loaded
as a full object or as a public-only external key, imported, loaded and used: the same
signature / the same plaintext shows it is the same key.  tpm2-tools also builds
duplication blobs in software (``tpm2_duplicate --tcti none -k key.pem``, and
tpm2_import of PEM/AES/HMAC keys), which our Import must accept.

tpm2_rewrap is not part of Debian's tpm2-tools 5.4, so TPM2_Rewrap is not covered here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 43 keeps CFB among the "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from tests.support.tpm2_tools import module_tpm2_fixtures

DUP_ATTRS = "sensitivedataorigin|userwithauth|decrypt|sign"
PARENT_ATTRS = "restricted|sensitivedataorigin|decrypt|userwithauth"


daemon, tpm2 = module_tpm2_fixtures()


def step(tpm2, *args: str) -> subprocess.CompletedProcess[bytes]:
    """One tool run, then flush what it left loaded (there is no resource manager)."""
    try:
        return tpm2(*args)
    finally:
        tpm2("flushcontext", "-t")


def failing(tpm2, *args: str) -> bytes:
    result = tpm2(*args, check=False)
    tpm2("flushcontext", "-t")
    assert result.returncode != 0, f"tpm2_{args[0]} succeeded"
    return result.stderr.lower()


@pytest.fixture(scope="module")
def setup(tpm2, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A primary, the Duplicate-only policy, and RSA and ECC new parents (storage keys)."""
    d = tmp_path_factory.mktemp("dup")
    p = {n: str(d / n) for n in ("primary.ctx", "dpolicy.dat", "trial.ctx")}
    step(tpm2, "createprimary", "-C", "o", "-g", "sha256", "-G", "rsa", "-c", p["primary.ctx"])
    tpm2("startauthsession", "-S", p["trial.ctx"])
    tpm2("policycommandcode", "-S", p["trial.ctx"], "-L", p["dpolicy.dat"], "TPM2_CC_Duplicate")
    tpm2("flushcontext", p["trial.ctx"])
    for alg in ("rsa", "ecc"):
        pub, priv, ctx, tpub = (str(d / f"parent-{alg}.{ext}") for ext in ("pub", "priv", "ctx", "tpub"))
        step(
            tpm2, "create", "-C", p["primary.ctx"], "-g", "sha256", "-G", alg, "-a", PARENT_ATTRS, "-u", pub, "-r", priv
        )
        step(tpm2, "load", "-C", p["primary.ctx"], "-u", pub, "-r", priv, "-c", ctx)
        step(tpm2, "readpublic", "-c", ctx, "-o", tpub)
        p[f"parent-{alg}"], p[f"parent-{alg}.pub"] = ctx, tpub
    return p


def duplicable_key(tpm2, setup, tmp_path: Path, alg: str, *extra: str) -> dict[str, str]:
    k = {n: str(tmp_path / n) for n in ("key.pub", "key.priv", "key.ctx", "key.name")}
    create = ["create", "-C", setup["primary.ctx"], "-g", "sha256", "-G", alg, "-a", DUP_ATTRS, *extra]
    step(tpm2, *create, "-L", setup["dpolicy.dat"], "-u", k["key.pub"], "-r", k["key.priv"])
    step(tpm2, "load", "-C", setup["primary.ctx"], "-u", k["key.pub"], "-r", k["key.priv"], "-c", k["key.ctx"])
    step(tpm2, "readpublic", "-c", k["key.ctx"], "-n", k["key.name"])
    return k


def duplicate(tpm2, tmp_path: Path, key_ctx: str, new_parent: str, *wrapper: str, check: bool = True):
    """tpm2_duplicate under a TPM2_CC_Duplicate policy session."""
    session = str(tmp_path / "session.ctx")
    tpm2("startauthsession", "--policy-session", "-S", session)
    try:
        tpm2("policycommandcode", "-S", session, "TPM2_CC_Duplicate")
        out = ["-r", str(tmp_path / "dup.dpriv"), "-s", str(tmp_path / "dup.seed")]
        args = ["duplicate", "-C", new_parent, "-c", key_ctx, *wrapper, "-p", f"session:{session}", *out]
        return tpm2(*args, check=check)
    finally:
        tpm2("flushcontext", session)
        tpm2("flushcontext", "-t")


def import_and_load(tpm2, tmp_path: Path, parent: str, public: str, *inner: str) -> str:
    imported, ctx = str(tmp_path / "imported.priv"), str(tmp_path / "imported.ctx")
    dup = ["-i", str(tmp_path / "dup.dpriv"), "-s", str(tmp_path / "dup.seed")]
    step(tpm2, "import", "-C", parent, "-u", public, *dup, *inner, "-r", imported)
    step(tpm2, "load", "-C", parent, "-u", public, "-r", imported, "-c", ctx)
    return ctx


def same_key(tpm2, tmp_path: Path, alg: str, original: str, imported: str, auth: tuple[str, ...] = ()) -> None:
    """The imported key signs like the original (and decrypts what the original encrypted)."""
    msg = tmp_path / "file.txt"
    msg.write_bytes(b"meet me at.. " + os.urandom(8))
    ours, theirs = tmp_path / "sig.orig", tmp_path / "sig.imported"
    if alg == "rsa":  # RSASSA is deterministic: the very same signature
        step(tpm2, "sign", "-c", original, *auth, "-g", "sha256", "-f", "plain", "-o", str(ours), str(msg))
        step(tpm2, "sign", "-c", imported, *auth, "-g", "sha256", "-f", "plain", "-o", str(theirs), str(msg))
        assert ours.read_bytes() == theirs.read_bytes()
        enc, dec = tmp_path / "data.enc", tmp_path / "data.dec"
        step(tpm2, "rsaencrypt", "-c", original, "-o", str(enc), str(msg))
        step(tpm2, "rsadecrypt", "-c", imported, *auth, "-o", str(dec), str(enc))
        assert dec.read_bytes() == msg.read_bytes()
    else:  # ECDSA is randomized: the original verifies the imported key's signature
        step(tpm2, "sign", "-c", imported, *auth, "-g", "sha256", "-o", str(theirs), str(msg))
        step(tpm2, "verifysignature", "-c", original, "-g", "sha256", "-m", str(msg), "-s", str(theirs))


def name_of(tpm2, tmp_path: Path, ctx: str) -> bytes:
    out = tmp_path / "name.bin"
    step(tpm2, "readpublic", "-c", ctx, "-n", str(out))
    return out.read_bytes()


# --- duplicate, import, load, use ------------------------------------------------------------


@pytest.mark.parametrize("parent", ["rsa", "ecc"])
@pytest.mark.parametrize("alg", ["rsa", "ecc"])
def test_duplicate_without_inner_wrapper_then_import(tpm2, setup, tmp_path: Path, alg, parent) -> None:
    key = duplicable_key(tpm2, setup, tmp_path, alg, "-p", "foo")
    duplicate(tpm2, tmp_path, key["key.ctx"], setup[f"parent-{parent}"], "-G", "null")
    imported = import_and_load(tpm2, tmp_path, setup[f"parent-{parent}"], key["key.pub"])
    assert name_of(tpm2, tmp_path, imported) == Path(key["key.name"]).read_bytes()
    same_key(tpm2, tmp_path, alg, key["key.ctx"], imported, ("-p", "foo"))


@pytest.mark.parametrize("given_key", [False, True], ids=["tpm-made-inner-key", "given-inner-key"])
def test_duplicate_with_aes_inner_wrapper_then_import(tpm2, setup, tmp_path: Path, given_key) -> None:
    key = duplicable_key(tpm2, setup, tmp_path, "rsa")
    inner = tmp_path / "inner.key"
    if given_key:
        inner.write_bytes(os.urandom(16))
        duplicate(tpm2, tmp_path, key["key.ctx"], setup["parent-rsa"], "-G", "aes", "-i", str(inner))
    else:
        duplicate(tpm2, tmp_path, key["key.ctx"], setup["parent-rsa"], "-G", "aes", "-o", str(inner))
        assert len(inner.read_bytes()) == 16
    imported = import_and_load(tpm2, tmp_path, setup["parent-rsa"], key["key.pub"], "-k", str(inner))
    same_key(tpm2, tmp_path, "rsa", key["key.ctx"], imported)


def test_inner_wrapped_blob_needs_its_inner_key(tpm2, setup, tmp_path: Path) -> None:
    key = duplicable_key(tpm2, setup, tmp_path, "ecc")
    inner = tmp_path / "inner.key"
    duplicate(tpm2, tmp_path, key["key.ctx"], setup["parent-ecc"], "-G", "aes", "-o", str(inner))
    dup = ["-i", str(tmp_path / "dup.dpriv"), "-s", str(tmp_path / "dup.seed"), "-r", str(tmp_path / "x.priv")]
    base = ["import", "-C", setup["parent-ecc"], "-u", key["key.pub"], *dup]
    # Without the inner wrapper the blob does not parse as a TPM2B_SENSITIVE (duplicate, parameter 3).
    assert b"parameter(3)" in failing(tpm2, *base)
    # With another inner key the decrypted innerIntegrity is garbage: TPM_RC_INTEGRITY, or
    # TPM_RC_SIZE when its size field does not even parse, on duplicate (parameter 3).
    inner.write_bytes(bytes(a ^ 1 for a in inner.read_bytes()))
    err = failing(tpm2, *base, "-k", str(inner))
    assert b"0x3df" in err or b"0x3d5" in err, err


def test_duplicate_to_an_external_public_parent(tpm2, setup, tmp_path: Path) -> None:
    """Example 2 of tpm2_duplicate(1): the new parent's public part loaded with tpm2_loadexternal."""
    key = duplicable_key(tpm2, setup, tmp_path, "ecc")
    external = str(tmp_path / "new_parent.ctx")
    step(tpm2, "loadexternal", "-C", "o", "-u", setup["parent-ecc.pub"], "-c", external)
    duplicate(tpm2, tmp_path, key["key.ctx"], external, "-G", "null")
    imported = import_and_load(tpm2, tmp_path, setup["parent-ecc"], key["key.pub"])
    same_key(tpm2, tmp_path, "ecc", key["key.ctx"], imported)


def test_import_under_the_wrong_parent_fails(tpm2, setup, tmp_path: Path) -> None:
    key = duplicable_key(tpm2, setup, tmp_path, "rsa")
    duplicate(tpm2, tmp_path, key["key.ctx"], setup["parent-rsa"], "-G", "null")
    dup = ["-i", str(tmp_path / "dup.dpriv"), "-s", str(tmp_path / "dup.seed"), "-r", str(tmp_path / "x.priv")]
    # The seed is encrypted to parent-rsa: the primary (also RSA) cannot recover it.
    err = failing(tpm2, "import", "-C", setup["primary.ctx"], "-u", key["key.pub"], *dup)
    assert b"parameter(4)" in err or b"parameter(3)" in err, err  # inSymSeed, or the outer HMAC over duplicate


# --- what Duplicate refuses ---------------------------------------------------------------


def test_duplicate_needs_a_policy_session(tpm2, setup, tmp_path: Path) -> None:
    key = duplicable_key(tpm2, setup, tmp_path, "rsa", "-p", "foo")
    out = ["-r", str(tmp_path / "d"), "-s", str(tmp_path / "s")]
    # The DUP role takes a policy session only: TPM_RC_AUTH_TYPE (0x124).
    err = failing(tpm2, "duplicate", "-C", setup["parent-rsa"], "-c", key["key.ctx"], "-G", "null", "-p", "foo", *out)
    assert b"0x124" in err


@pytest.mark.parametrize("policy", ["unseal", "empty"])
def test_duplicate_with_the_wrong_policy(tpm2, setup, tmp_path: Path, policy) -> None:
    key = duplicable_key(tpm2, setup, tmp_path, "rsa")
    session = str(tmp_path / "session.ctx")
    tpm2("startauthsession", "--policy-session", "-S", session)
    try:
        if policy == "unseal":
            tpm2("policycommandcode", "-S", session, "TPM2_CC_Unseal")
        out = ["-r", str(tmp_path / "d"), "-s", str(tmp_path / "s")]
        args = ["duplicate", "-C", setup["parent-rsa"], "-c", key["key.ctx"], "-G", "null", "-p", f"session:{session}"]
        result = tpm2(*args, *out, check=False)
    finally:
        tpm2("flushcontext", session)
        tpm2("flushcontext", "-t")
    # policyDigest is not the key's authPolicy: TPM_RC_POLICY_FAIL, session 1 (0x99d).
    assert result.returncode != 0 and b"0x99d" in result.stderr.lower()


def test_fixedparent_key_is_not_duplicable(tpm2, setup, tmp_path: Path) -> None:
    k = {n: str(tmp_path / n) for n in ("fp.pub", "fp.priv", "fp.ctx")}
    step(
        tpm2,
        "create",
        "-C",
        setup["primary.ctx"],
        "-G",
        "ecc",
        "-L",
        setup["dpolicy.dat"],
        "-u",
        k["fp.pub"],
        "-r",
        k["fp.priv"],
    )
    step(tpm2, "load", "-C", setup["primary.ctx"], "-u", k["fp.pub"], "-r", k["fp.priv"], "-c", k["fp.ctx"])
    assert "fixedparent" in step(tpm2, "readpublic", "-c", k["fp.ctx"]).stdout.decode()
    result = duplicate(tpm2, tmp_path, k["fp.ctx"], setup["parent-rsa"], "-G", "null", check=False)
    # TPM_RC_ATTRIBUTES on objectHandle (handle 1): 0x182.
    assert result.returncode != 0 and b"0x182" in result.stderr.lower()


# --- blobs tpm2-tools builds in software ----------------------------------------------------


def test_offline_duplicate_of_an_openssl_rsa_key(tpm2, setup, tmp_path: Path) -> None:
    """Example 3 of tpm2_duplicate(1): tpm2-tools wraps a PEM key for the parent's public key
    without a TPM; our Import unwraps it."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "rsa.pem"
    pem.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pub, dpriv, seed, priv, ctx = (
        str(tmp_path / n) for n in ("rsa.pub", "rsa.dpriv", "rsa.seed", "rsa.priv", "rsa.ctx")
    )
    tpm2(
        "duplicate",
        "--tcti",
        "none",
        "-U",
        setup["parent-rsa.pub"],
        "-G",
        "rsa",
        "-k",
        str(pem),
        "-u",
        pub,
        "-r",
        dpriv,
        "-s",
        seed,
    )
    step(tpm2, "import", "-C", setup["parent-rsa"], "-G", "rsa", "-i", dpriv, "-s", seed, "-u", pub, "-r", priv)
    step(tpm2, "load", "-C", setup["parent-rsa"], "-u", pub, "-r", priv, "-c", ctx)
    msg, sig = tmp_path / "m", tmp_path / "sig"
    msg.write_bytes(b"offline duplicated")
    step(tpm2, "sign", "-c", ctx, "-g", "sha256", "-f", "plain", "-o", str(sig), str(msg))
    private.public_key().verify(sig.read_bytes(), msg.read_bytes(), padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize("parent", ["rsa", "ecc"])
def test_import_of_a_pem_ecc_key(tpm2, setup, tmp_path: Path, parent) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "ec.pem"
    pem.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pub, priv, ctx = (str(tmp_path / n) for n in ("ec.pub", "ec.priv", "ec.ctx"))
    step(tpm2, "import", "-C", setup[f"parent-{parent}"], "-G", "ecc", "-i", str(pem), "-u", pub, "-r", priv)
    step(tpm2, "load", "-C", setup[f"parent-{parent}"], "-u", pub, "-r", priv, "-c", ctx)
    msg, sig = tmp_path / "m", tmp_path / "sig"
    msg.write_bytes(b"imported ecc")
    step(tpm2, "sign", "-c", ctx, "-g", "sha256", "-f", "plain", "-o", str(sig), str(msg))
    private.public_key().verify(sig.read_bytes(), msg.read_bytes(), ec.ECDSA(hashes.SHA256()))


def test_import_of_aes_and_hmac_keys(tpm2, setup, tmp_path: Path) -> None:
    key = os.urandom(16)
    raw = tmp_path / "raw.key"
    raw.write_bytes(key)
    parent = setup["parent-rsa"]
    data = tmp_path / "data"
    data.write_bytes(os.urandom(48))
    aes = {n: str(tmp_path / f"aes.{n}") for n in ("pub", "priv", "ctx")}
    step(tpm2, "import", "-C", parent, "-G", "aes", "-i", str(raw), "-u", aes["pub"], "-r", aes["priv"])
    step(tpm2, "load", "-C", parent, "-u", aes["pub"], "-r", aes["priv"], "-c", aes["ctx"])
    enc = tmp_path / "enc"
    step(tpm2, "encryptdecrypt", "-c", aes["ctx"], "-G", "cfb", "-o", str(enc), str(data))
    encryptor = Cipher(algorithms.AES(key), CFB(bytes(16))).encryptor()
    assert enc.read_bytes() == encryptor.update(data.read_bytes()) + encryptor.finalize()

    mac = {n: str(tmp_path / f"hmac.{n}") for n in ("pub", "priv", "ctx")}
    step(tpm2, "import", "-C", parent, "-G", "hmac", "-i", str(raw), "-u", mac["pub"], "-r", mac["priv"])
    step(tpm2, "load", "-C", parent, "-u", mac["pub"], "-r", mac["priv"], "-c", mac["ctx"])
    out = step(tpm2, "hmac", "-c", mac["ctx"], "--hex", str(data)).stdout.decode().strip()
    assert out == hmac.new(key, data.read_bytes(), hashlib.sha256).hexdigest()


def test_nothing_is_left_loaded(tpm2) -> None:
    assert tpm2("getcap", "handles-transient").stdout.strip() == b""
    assert tpm2("getcap", "handles-loaded-session").stdout.strip() == b""
