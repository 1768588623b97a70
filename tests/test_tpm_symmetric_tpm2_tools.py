"""Symmetric keys, HMAC, Unseal and LoadExternal with Debian's tpm2-tools against
``vtpm-cuse socket`` (the swtpm TCTI).

tpm2_encryptdecrypt round-trips data through TPM-made AES keys in every block mode, and
ciphers with a known AES key loaded by tpm2_loadexternal so the ciphertext is checked
against ``cryptography``; tpm2_hmac with a known key is checked against Python's hmac,
both through TPM2_HMAC and (for inputs over 1024 bytes) through an HMAC_Start sequence;
tpm2_unseal with a password and with a PolicyPCR session; tpm2_loadexternal of
public-only RSA/ECC PEM keys, their Names and a signature made by ``cryptography``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

try:  # cryptography >= 43 keeps CFB and OFB among the "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB, OFB
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.modes import CFB, OFB

from tests.support.daemon import Daemon
from tests.support.tpm2_tools import TOOL_TIMEOUT, module_tpm2_fixtures, tpm2_runner

MODES = ["cfb", "cbc", "ctr", "ofb", "ecb"]


daemon, tpm2 = module_tpm2_fixtures()


@pytest.fixture(scope="module")
def primary(tpm2, tmp_path_factory: pytest.TempPathFactory) -> str:
    ctx = str(tmp_path_factory.mktemp("primary") / "primary.ctx")
    step(tpm2, "createprimary", "-C", "o", "-G", "rsa", "-c", ctx)
    return ctx


def step(tpm2, *args: str) -> subprocess.CompletedProcess[bytes]:
    """One tool run, then flush what it left loaded (there is no resource manager)."""
    try:
        return tpm2(*args)
    finally:
        tpm2("flushcontext", "-t")


def failing(tpm2, *args: str) -> bytes:
    """Run a tool that must fail; its stderr, lowercased."""
    result = tpm2(*args, check=False)
    tpm2("flushcontext", "-t")
    assert result.returncode != 0, f"tpm2_{args[0]} succeeded"
    return result.stderr.lower()


def esys_calls(daemon: Daemon, *args: str) -> list[str]:
    """The Esys_* commands a tool sends (from tpm2-tss' trace log)."""
    env = dict(os.environ, TPM2TOOLS_TCTI=f"swtpm:host=127.0.0.1,port={daemon.data_port}", TSS2_LOG="esys+trace")
    result = subprocess.run(["tpm2_" + args[0], *args[1:]], env=env, capture_output=True, timeout=TOOL_TIMEOUT)
    tpm2_runner(daemon.data_port)("flushcontext", "-t")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return re.findall(r"(Esys_\w+)_Async\(", result.stderr.decode())


def cipher_mode(mode: str, iv: bytes):
    return {"cfb": CFB(iv), "cbc": modes.CBC(iv), "ctr": modes.CTR(iv), "ofb": OFB(iv), "ecb": modes.ECB()}[mode]


def aes_encrypt(key: bytes, mode: str, iv: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), cipher_mode(mode, iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def load_key(tpm2, tmp_path: Path, primary: str, *create: str) -> str:
    pub, priv, ctx = (str(tmp_path / n) for n in ("key.pub", "key.priv", "key.ctx"))
    step(tpm2, "create", "-C", primary, *create, "-u", pub, "-r", priv)
    step(tpm2, "load", "-C", primary, "-u", pub, "-r", priv, "-c", ctx)
    return ctx


# --- tpm2_encryptdecrypt ----------------------------------------------------------------------


@pytest.mark.parametrize("bits", [128, 256])
def test_encrypt_then_decrypt_every_mode_with_a_tpm_made_key(tpm2, primary, tmp_path: Path, bits) -> None:
    key = load_key(tpm2, tmp_path, primary, "-G", f"aes{bits}")
    data, iv = tmp_path / "data", tmp_path / "iv"
    data.write_bytes(os.urandom(96))
    iv.write_bytes(os.urandom(16))
    ciphertexts = set()
    for mode in MODES:
        enc, dec = tmp_path / f"{mode}.enc", tmp_path / f"{mode}.dec"
        step(tpm2, "encryptdecrypt", "-c", key, "-G", mode, "-t", str(iv), "-o", str(enc), str(data))
        step(tpm2, "encryptdecrypt", "-d", "-c", key, "-G", mode, "-t", str(iv), "-o", str(dec), str(enc))
        assert len(enc.read_bytes()) == 96 and enc.read_bytes() != data.read_bytes()
        assert dec.read_bytes() == data.read_bytes(), mode
        ciphertexts.add(enc.read_bytes())
    assert len(ciphertexts) == len(MODES)


@pytest.mark.parametrize("key_size", [16, 32])
@pytest.mark.parametrize("mode", MODES)
def test_loadexternal_aes_key_matches_cryptography(tpm2, tmp_path: Path, mode, key_size) -> None:
    key, iv, data = os.urandom(key_size), os.urandom(16), os.urandom(80)
    (tmp_path / "key.bin").write_bytes(key)
    (tmp_path / "iv").write_bytes(iv)
    (tmp_path / "data").write_bytes(data)
    ctx, enc, dec = (str(tmp_path / n) for n in ("key.ctx", "enc", "dec"))
    step(tpm2, "loadexternal", "-C", "n", "-G", "aes", "-r", str(tmp_path / "key.bin"), "-c", ctx)
    iv_args = [] if mode == "ecb" else ["-t", str(tmp_path / "iv")]
    step(tpm2, "encryptdecrypt", "-c", ctx, "-G", mode, *iv_args, "-o", enc, str(tmp_path / "data"))
    expected = aes_encrypt(key, mode, iv if mode != "ecb" else b"", data)
    assert Path(enc).read_bytes() == expected
    # And the TPM decrypts a ciphertext made by cryptography.
    (tmp_path / "theirs").write_bytes(aes_encrypt(key, mode, iv if mode != "ecb" else b"", data[::-1]))
    step(tpm2, "encryptdecrypt", "-d", "-c", ctx, "-G", mode, *iv_args, "-o", dec, str(tmp_path / "theirs"))
    assert Path(dec).read_bytes() == data[::-1]


def test_chained_iv_continues_the_stream(tpm2, tmp_path: Path) -> None:
    """The output IV (``-t in:out``) carries a CBC stream over two calls."""
    key, iv, data = os.urandom(16), os.urandom(16), os.urandom(64)
    (tmp_path / "key.bin").write_bytes(key)
    (tmp_path / "iv").write_bytes(iv)
    (tmp_path / "a").write_bytes(data[:32])
    (tmp_path / "b").write_bytes(data[32:])
    ctx = str(tmp_path / "key.ctx")
    step(tpm2, "loadexternal", "-C", "n", "-G", "aes", "-r", str(tmp_path / "key.bin"), "-c", ctx)
    iv1, iv2 = str(tmp_path / "iv"), str(tmp_path / "iv.next")
    step(
        tpm2,
        "encryptdecrypt",
        "-c",
        ctx,
        "-G",
        "cbc",
        "-t",
        f"{iv1}:{iv2}",
        "-o",
        str(tmp_path / "a.enc"),
        str(tmp_path / "a"),
    )
    step(tpm2, "encryptdecrypt", "-c", ctx, "-G", "cbc", "-t", iv2, "-o", str(tmp_path / "b.enc"), str(tmp_path / "b"))
    joined = (tmp_path / "a.enc").read_bytes() + (tmp_path / "b.enc").read_bytes()
    assert joined == aes_encrypt(key, "cbc", iv, data)


def test_encryptdecrypt_uses_encryptdecrypt2(daemon, tpm2, tmp_path: Path) -> None:
    (tmp_path / "key.bin").write_bytes(os.urandom(16))
    (tmp_path / "data").write_bytes(os.urandom(16))
    ctx = str(tmp_path / "key.ctx")
    step(tpm2, "loadexternal", "-C", "n", "-G", "aes", "-r", str(tmp_path / "key.bin"), "-c", ctx)
    calls = esys_calls(daemon, "encryptdecrypt", "-c", ctx, "-o", str(tmp_path / "enc"), str(tmp_path / "data"))
    assert "Esys_EncryptDecrypt2" in calls and "Esys_EncryptDecrypt" not in calls


def test_key_mode_and_block_size_are_enforced(tpm2, primary, tmp_path: Path) -> None:
    key = load_key(tpm2, tmp_path, primary, "-G", "aes256cbc")
    public = step(tpm2, "readpublic", "-c", key).stdout.decode()
    assert re.search(r"sym-mode:\s+value: cbc", public) and "sym-keybits: 256" in public
    data, iv = tmp_path / "data", tmp_path / "iv"
    data.write_bytes(os.urandom(32))
    iv.write_bytes(os.urandom(16))
    # The key's own mode (TPM_ALG_NULL given) and the same mode given explicitly agree.
    default, explicit = str(tmp_path / "default.enc"), str(tmp_path / "cbc.enc")
    step(tpm2, "encryptdecrypt", "-c", key, "-t", str(iv), "-o", default, str(data))
    step(tpm2, "encryptdecrypt", "-c", key, "-G", "cbc", "-t", str(iv), "-o", explicit, str(data))
    assert Path(default).read_bytes() == Path(explicit).read_bytes()
    # Another mode than the key's: TPM_RC_MODE on EncryptDecrypt2's mode (parameter 3).
    err = failing(tpm2, "encryptdecrypt", "-c", key, "-G", "cfb", "-t", str(iv), "-o", default, str(data))
    assert b"0x3c9" in err
    # CBC input that is not a whole number of blocks: TPM_RC_SIZE on inData (parameter 1).
    data.write_bytes(os.urandom(20))
    err = failing(tpm2, "encryptdecrypt", "-c", key, "-G", "cbc", "-t", str(iv), "-o", default, str(data))
    assert b"0x1d5" in err


# --- tpm2_hmac ----------------------------------------------------------------------------------


@pytest.fixture
def hmac_key(tpm2, tmp_path: Path) -> tuple[bytes, str]:
    key = os.urandom(32)
    (tmp_path / "hmac.key").write_bytes(key)
    ctx = str(tmp_path / "hmac.ctx")
    # A keyedhash key with an HMAC scheme must not also have decrypt SET (tpm2-tools'
    # default attributes are sign|decrypt), so ask for sign only.
    load = ["loadexternal", "-C", "n", "-G", "hmac", "-r", str(tmp_path / "hmac.key"), "-a", "sign|userwithauth"]
    step(tpm2, *load, "-c", ctx)
    return key, ctx


def test_hmac_default_attributes_are_an_inconsistent_scheme(tpm2, tmp_path: Path) -> None:
    """sign|decrypt with an HMAC scheme: TPM_RC_SCHEME on inPublic (parameter 2)."""
    (tmp_path / "hmac.key").write_bytes(os.urandom(32))
    err = failing(
        tpm2, "loadexternal", "-C", "n", "-G", "hmac", "-r", str(tmp_path / "hmac.key"), "-c", str(tmp_path / "k")
    )
    assert b"0x2d2" in err


@pytest.mark.parametrize("size", [0, 1, 100, 1024])
def test_hmac_matches_python(tpm2, hmac_key, tmp_path: Path, size) -> None:
    key, ctx = hmac_key
    data = os.urandom(size)
    (tmp_path / "data").write_bytes(data)
    out = tmp_path / "hmac.out"
    step(tpm2, "hmac", "-c", ctx, "-o", str(out), str(tmp_path / "data"))
    assert out.read_bytes() == hmac.new(key, data, hashlib.sha256).digest()


def test_hmac_key_with_a_sha384_name(tpm2, tmp_path: Path) -> None:
    """``-g`` names the key with SHA-384; its HMAC scheme keeps SHA-256, so TPM2_HMAC with
    hashAlg SHA-384 is TPM_RC_VALUE on hashAlg (parameter 2)."""
    key = os.urandom(48)
    (tmp_path / "k").write_bytes(key)
    (tmp_path / "data").write_bytes(b"abc" * 50)
    ctx, name = str(tmp_path / "hmac.ctx"), tmp_path / "name"
    load = ["loadexternal", "-C", "n", "-G", "hmac", "-g", "sha384", "-r", str(tmp_path / "k")]
    step(tpm2, *load, "-a", "sign|userwithauth", "-c", ctx, "-n", str(name))
    assert name.read_bytes()[:2] == b"\x00\x0c" and len(name.read_bytes()) == 50
    out = step(tpm2, "hmac", "-c", ctx, "--hex", str(tmp_path / "data")).stdout.decode().strip()
    assert out == hmac.new(key, b"abc" * 50, hashlib.sha256).hexdigest()
    assert b"0x2c4" in failing(tpm2, "hmac", "-c", ctx, "-g", "sha384", str(tmp_path / "data"))


@pytest.mark.parametrize("size", [1025, 5000, 20000])
def test_large_hmac_goes_through_an_hmac_sequence(daemon, tpm2, hmac_key, tmp_path: Path, size) -> None:
    key, ctx = hmac_key
    data = os.urandom(size)
    (tmp_path / "data").write_bytes(data)
    out = tmp_path / "hmac.out"
    calls = esys_calls(daemon, "hmac", "-c", ctx, "-o", str(out), str(tmp_path / "data"))
    assert "Esys_HMAC_Start" in calls and "Esys_SequenceComplete" in calls and "Esys_HMAC" not in calls
    assert calls.count("Esys_SequenceUpdate") >= 1
    assert out.read_bytes() == hmac.new(key, data, hashlib.sha256).digest()
    # The sequence object is gone: nothing but what we flush is left loaded.
    assert tpm2("getcap", "handles-transient").stdout.strip() == b""


def test_small_hmac_uses_tpm2_hmac(daemon, hmac_key, tmp_path: Path) -> None:
    _, ctx = hmac_key
    (tmp_path / "data").write_bytes(b"x" * 64)
    calls = esys_calls(daemon, "hmac", "-c", ctx, "-o", str(tmp_path / "out"), str(tmp_path / "data"))
    assert "Esys_HMAC" in calls and "Esys_HMAC_Start" not in calls


def test_tpm_made_hmac_key_sequence_agrees_with_single_shot(tpm2, primary, tmp_path: Path) -> None:
    key = load_key(tpm2, tmp_path, primary, "-G", "hmac")
    big = os.urandom(3000)
    (tmp_path / "big").write_bytes(big)
    (tmp_path / "head").write_bytes(big[:1000])
    whole = step(tpm2, "hmac", "-c", key, "--hex", str(tmp_path / "big")).stdout.strip()
    again = step(tpm2, "hmac", "-c", key, "--hex", str(tmp_path / "big")).stdout.strip()
    head = step(tpm2, "hmac", "-c", key, "--hex", str(tmp_path / "head")).stdout.strip()
    assert whole == again and len(whole) == 64 and head != whole


# --- tpm2_unseal ----------------------------------------------------------------------------


def test_unseal_with_a_password(tpm2, primary, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"sealed \x00 bytes " + os.urandom(16))
    sealed = load_key(tpm2, tmp_path, primary, "-i", str(secret), "-p", "pw")
    out = tmp_path / "out"
    step(tpm2, "unseal", "-c", sealed, "-p", "pw", "-o", str(out))
    assert out.read_bytes() == secret.read_bytes()
    # A wrong password: TPM_RC_AUTH_FAIL for session 1 (0x98e).
    assert b"0x98e" in failing(tpm2, "unseal", "-c", sealed, "-p", "wrong")


def test_unseal_of_stdin_secret_without_auth(tpm2, primary, tmp_path: Path) -> None:
    secret = os.urandom(128)
    (tmp_path / "s").write_bytes(secret)
    sealed = load_key(tpm2, tmp_path, primary, "-i", str(tmp_path / "s"))
    assert step(tpm2, "unseal", "-c", sealed).stdout == secret


def pcr_policy_object(tpm2, primary, tmp_path: Path, pcr: int, secret: bytes) -> str:
    (tmp_path / "secret").write_bytes(secret)
    trial, policy = str(tmp_path / "trial.ctx"), str(tmp_path / "policy.dat")
    tpm2("startauthsession", "-S", trial)
    tpm2("policypcr", "-S", trial, "-l", f"sha256:{pcr}", "-L", policy)
    tpm2("flushcontext", trial)
    return load_key(tpm2, tmp_path, primary, "-L", policy, "-i", str(tmp_path / "secret"))


def unseal_with_pcr_policy(tpm2, tmp_path: Path, sealed: str, pcr: int, extend_between: bool = False):
    session = str(tmp_path / "policy.ctx")
    tpm2("startauthsession", "--policy-session", "-S", session)
    try:
        tpm2("policypcr", "-S", session, "-l", f"sha256:{pcr}")
        if extend_between:
            extend(tpm2, pcr)
        return tpm2("unseal", "-c", sealed, "-p", f"session:{session}", check=False)
    finally:
        tpm2("flushcontext", session)
        tpm2("flushcontext", "-t")


def extend(tpm2, pcr: int) -> None:
    tpm2("pcrextend", f"{pcr}:sha256={hashlib.sha256(os.urandom(8)).hexdigest()}")


def test_unseal_with_a_pcr_policy_session(tpm2, primary, tmp_path: Path) -> None:
    secret = os.urandom(32)
    sealed = pcr_policy_object(tpm2, primary, tmp_path, 16, secret)
    public = step(tpm2, "readpublic", "-c", sealed).stdout.decode()
    assert "userwithauth" not in public  # only the policy authorizes it
    assert unseal_with_pcr_policy(tpm2, tmp_path, sealed, 16).stdout == secret
    # A password cannot stand in for the policy: TPM_RC_AUTH_UNAVAILABLE (0x12f).
    assert b"0x12f" in failing(tpm2, "unseal", "-c", sealed)
    extend(tpm2, 16)
    # The PCR now differs: the session's policyDigest is not the authPolicy, TPM_RC_POLICY_FAIL (0x99d).
    failed = unseal_with_pcr_policy(tpm2, tmp_path, sealed, 16)
    assert failed.returncode != 0 and b"0x99d" in failed.stderr.lower()
    assert failed.stdout == b""


def test_pcr_change_after_policypcr_is_caught(tpm2, primary, tmp_path: Path) -> None:
    """PCR 15 counts in pcrUpdateCounter: a change after TPM2_PolicyPCR gives TPM_RC_PCR_CHANGED."""
    secret = os.urandom(16)
    extend(tpm2, 15)  # pcrUpdateCounter is not 0 (0 means "PolicyPCR not used")
    sealed = pcr_policy_object(tpm2, primary, tmp_path, 15, secret)
    assert unseal_with_pcr_policy(tpm2, tmp_path, sealed, 15).stdout == secret
    sealed = pcr_policy_object(tpm2, primary, tmp_path, 15, secret)
    failed = unseal_with_pcr_policy(tpm2, tmp_path, sealed, 15, extend_between=True)
    assert failed.returncode != 0 and b"0x128" in failed.stderr.lower()


def test_pcr16_is_outside_the_update_counter(tpm2, primary, tmp_path: Path) -> None:
    """PCR 16 is in TPM_PT_PCR_NO_INCREMENT (as in libtpms/swtpm): extending it after
    TPM2_PolicyPCR does not invalidate the session, so the unseal goes through."""
    secret = os.urandom(16)
    sealed = pcr_policy_object(tpm2, primary, tmp_path, 16, secret)
    assert unseal_with_pcr_policy(tpm2, tmp_path, sealed, 16, extend_between=True).stdout == secret


# --- tpm2_loadexternal of public keys -----------------------------------------------------------


@pytest.mark.parametrize("hierarchy", ["o", "n"])
@pytest.mark.parametrize("alg", ["rsa", "ecc"])
def test_loadexternal_public_pem_name_and_signature(tpm2, tmp_path: Path, alg, hierarchy) -> None:
    if alg == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signature = private.sign(b"message", padding.PKCS1v15(), hashes.SHA256())
        scheme = "rsassa"
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        signature = private.sign(b"message", ec.ECDSA(hashes.SHA256()))
        scheme = "ecdsa"
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    ctx, name_file = str(tmp_path / "key.ctx"), tmp_path / "key.name"
    loaded = step(tpm2, "loadexternal", "-C", hierarchy, "-G", alg, "-u", str(pem), "-c", ctx, "-n", str(name_file))
    name = name_file.read_bytes()
    assert loaded.stdout.decode().split("name:")[1].strip() == name.hex()

    public_file, qname_file = tmp_path / "key.tpub", tmp_path / "key.qname"
    read_name = tmp_path / "read.name"
    readpublic = ["readpublic", "-c", ctx, "-o", str(public_file), "-n", str(read_name), "-q", str(qname_file)]
    public = step(tpm2, *readpublic).stdout.decode()
    assert read_name.read_bytes() == name
    # Name = nameAlg (sha256) || SHA-256(TPMT_PUBLIC); the file is a TPM2B_PUBLIC.
    blob = public_file.read_bytes()
    assert int.from_bytes(blob[:2], "big") == len(blob) - 2
    assert name == b"\x00\x0b" + hashlib.sha256(blob[2:]).digest()
    # An external object's Qualified Name is its Name in every hierarchy (as libtpms; Part 4).
    assert qname_file.read_bytes() == name
    numbers = private.public_key().public_numbers()
    if alg == "rsa":
        assert f"rsa: {numbers.n:0512x}" in public
    else:
        assert f"x: {numbers.x:064x}" in public and f"y: {numbers.y:064x}" in public

    (tmp_path / "message").write_bytes(b"message")
    (tmp_path / "sig").write_bytes(signature)
    verify = ["verifysignature", "-c", ctx, "-g", "sha256", "-m", str(tmp_path / "message"), "-f", scheme]
    step(tpm2, *verify, "-s", str(tmp_path / "sig"))
    (tmp_path / "message").write_bytes(b"massage")
    assert b"0x2db" in failing(tpm2, *verify, "-s", str(tmp_path / "sig"))  # TPM_RC_SIGNATURE, parameter 2


@pytest.mark.parametrize("use", ["ecc-sign", "rsa-sign", "rsa-decrypt"])
def test_loadexternal_public_only_key_has_no_usable_auth(tpm2, tmp_path: Path, use) -> None:
    """A public-only object has no authValue: USER-role use is TPM_RC_AUTH_UNAVAILABLE (0x12f)."""
    alg, _, operation = use.partition("-")
    private = ec.generate_private_key(ec.SECP256R1()) if alg == "ecc" else rsa.generate_private_key(65537, 2048)
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    ctx, data = str(tmp_path / "key.ctx"), tmp_path / "m"
    step(tpm2, "loadexternal", "-C", "n", "-G", alg, "-u", str(pem), "-c", ctx)
    data.write_bytes(b"m")
    if operation == "sign":
        err = failing(tpm2, "sign", "-c", ctx, "-g", "sha256", "-o", str(tmp_path / "sig"), str(data))
    else:
        step(tpm2, "rsaencrypt", "-c", ctx, "-o", str(tmp_path / "enc"), str(data))
        err = failing(tpm2, "rsadecrypt", "-c", ctx, "-o", str(tmp_path / "dec"), str(tmp_path / "enc"))
    assert b"0x12f" in err, err
