"""TPM2_MakeCredential and TPM2_ActivateCredential (Part 3, 12.5-12.6; Part 1, "Credential
Protection") through Engine.execute with real command bytes.

The credential a privacy CA would make is also computed here, outside the TPM, from Part 1's
text with ``cryptography`` and the test side's own KDFs (support/session_client.py): seed
encrypted to the key (RSA-OAEP with label "IDENTITY", or one-pass ECDH + KDFe), then
symKey = KDFa(nameAlg, seed, "STORAGE", Name, "", keyBits),
HMACkey = KDFa(nameAlg, seed, "INTEGRITY", "", "", digestBits),
encIdentity = AES-CFB(symKey, IV 0, TPM2B_DIGEST(credential)) and
credentialBlob = TPM2B_DIGEST(HMAC(HMACkey, encIdentity || Name)) || encIdentity.
None of the engine's protection code is used for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from support.engine_oracle import EngineOracle
from support.object_templates import (
    ADMIN_WITH_POLICY,
    DECRYPT,
    FIXED_PARENT,
    FIXED_TPM,
    NO_SYM,
    RESTRICTED,
    SDO,
    SIGNING,
    STORAGE,
    create_primary_cmd,
    ecc_template,
    rsa_template,
)
from support.session_client import SE_POLICY, SHA256, Use, digest, kdfa, kdfe, mac, run, start_session
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_P, TPM_RC, rc_name
from vtpm_cuse.tpm.marshal import Reader

try:  # cryptography >= 43 keeps CFB among the "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
AES_BLOCK = 16
#: An EK-like key: restricted decryption, usable only through a policy (userWithAuth CLEAR).
EK_ATTRS = FIXED_TPM | FIXED_PARENT | SDO | ADMIN_WITH_POLICY | RESTRICTED | DECRYPT
SIGNER = ecc_template(SIGNING, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256)


def P(n: int) -> int:
    return RC_P | (n << 8)


def H(n: int) -> int:
    return n << 8


@pytest.fixture
def tpm() -> EngineOracle:
    engine = EngineOracle(Engine())
    assert engine.execute(STARTUP_CLEAR) == bytes.fromhex("80010000000a00000000")
    return engine


@dataclasses.dataclass
class Key:
    handle: int
    area: object
    name: bytes

    @property
    def ref(self) -> tuple[int, bytes]:
        return self.handle, self.name


def primary(tpm, area) -> Key:
    resp = Response(tpm.execute(create_primary_cmd(area)))
    assert resp.rc == 0, rc_name(resp.rc)
    out = T.TPM2B_PUBLIC.unmarshal(Reader(resp.params(1)))
    handle = int.from_bytes(resp.raw[10:14], "big")
    return Key(handle, out, name_of(out))


def name_of(area) -> bytes:
    return u16(area.nameAlg) + hashlib.sha256(T.TPMT_PUBLIC.pack(area)).digest()


def make_credential(tpm, key: Key, credential: bytes, object_name: bytes) -> Response:
    return Response(
        tpm.execute(command(TPM_CC.MakeCredential, tpm2b(credential) + tpm2b(object_name), u32(key.handle)))
    )


def split_credential(resp: Response) -> tuple[bytes, bytes]:
    """(credentialBlob, secret) of a MakeCredential response."""
    params = resp.params()
    size = int.from_bytes(params[:2], "big")
    blob, rest = params[2 : 2 + size], params[2 + size :]
    return blob, rest[2 : 2 + int.from_bytes(rest[:2], "big")]


def activate(tpm, activated: Key, key: Key, blob: bytes, secret: bytes, uses=None):
    uses = uses or [Use(None, name=activated.name), Use(None, name=key.name)]
    return run(tpm.execute, TPM_CC.ActivateCredential, [activated.ref, key.ref], tpm2b(blob) + tpm2b(secret), uses)


# --- the credential made outside the TPM, from Part 1 ---------------------------------------------


def _cfb(key: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), CFB(bytes(AES_BLOCK))).encryptor()
    return enc.update(data) + enc.finalize()


def outside_seed(key: Key, label: bytes) -> tuple[bytes, bytes]:
    """(seed, encrypted seed) for the key's public area, as a remote party computes them."""
    if key.area.type == TPM_ALG.RSA:
        public = rsa.RSAPublicNumbers(65537, int.from_bytes(key.area.unique, "big")).public_key()
        seed = os.urandom(32)
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label + b"\0")
        return seed, public.encrypt(seed, oaep)
    qs = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + key.area.unique.x + key.area.unique.y)
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    z = ephemeral.exchange(ec.ECDH(), qs)
    numbers = ephemeral.public_key().public_numbers()
    qe_x, qe_y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
    return kdfe(SHA256, z, label, qe_x, key.area.unique.x, 256), tpm2b(qe_x) + tpm2b(qe_y)


def outside_credential(key: Key, object_name: bytes, credential: bytes, seed: bytes) -> bytes:
    sym_key = kdfa(SHA256, seed, b"STORAGE", object_name, b"", 128)
    hmac_key = kdfa(SHA256, seed, b"INTEGRITY", b"", b"", 256)
    enc_identity = _cfb(sym_key, tpm2b(credential))
    return tpm2b(mac(SHA256, hmac_key, enc_identity + object_name)) + enc_identity


# --- round trips ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_tpm():
    """One engine with an RSA-2048 storage key for every RSA test: key generation is slow."""
    engine = EngineOracle(Engine())
    assert engine.execute(STARTUP_CLEAR) == bytes.fromhex("80010000000a00000000")
    return engine, primary(engine, rsa_template())


def _setup(kind: str, tpm, rsa_tpm) -> tuple[object, Key, Key]:
    if kind == "rsa":
        engine, key = rsa_tpm
    else:
        engine, key = tpm, primary(tpm, ecc_template())
    return engine, key, primary(engine, SIGNER)


def _flush(engine, key: Key) -> None:
    engine.execute(command(TPM_CC.FlushContext, u32(key.handle)))


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_make_and_activate_round_trip(kind, tpm, rsa_tpm):
    engine, key, signer = _setup(kind, tpm, rsa_tpm)
    try:
        resp = make_credential(engine, key, b"the credential", signer.name)
        assert resp.rc == 0, rc_name(resp.rc)
        blob, secret = split_credential(resp)
        # integrityHMAC (TPM2B_DIGEST of SHA-256) then the encrypted TPM2B_DIGEST.
        assert len(blob) == 2 + 32 + 2 + len(b"the credential") and blob[:2] == u16(32)
        assert len(secret) == (256 if kind == "rsa" else 2 + 32 + 2 + 32)
        result = activate(engine, signer, key, blob, secret)
        assert result.rc == 0, rc_name(result.rc)
        assert result.params == tpm2b(b"the credential")
    finally:
        _flush(engine, signer)


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_credential_made_outside_activates_inside(kind, tpm, rsa_tpm):
    engine, key, signer = _setup(kind, tpm, rsa_tpm)
    try:
        credential = os.urandom(32)
        seed, secret = outside_seed(key, b"IDENTITY")
        blob = outside_credential(key, signer.name, credential, seed)
        result = activate(engine, signer, key, blob, secret)
        assert result.rc == 0, rc_name(result.rc)
        assert result.params == tpm2b(credential)
        # The same seed under another label is another secret: the credential does not open.
        seed, secret = outside_seed(key, b"DUPLICATE")
        blob = outside_credential(key, signer.name, credential, seed)
        expected = TPM_RC.VALUE | P(2) if kind == "rsa" else TPM_RC.INTEGRITY | P(1)
        assert activate(engine, signer, key, blob, secret).rc == expected
    finally:
        _flush(engine, signer)


def test_tampered_credential_is_integrity(tpm):
    key, signer = primary(tpm, ecc_template()), primary(tpm, SIGNER)
    blob, secret = split_credential(make_credential(tpm, key, b"secret", signer.name))
    for position in (2, 20, len(blob) - 1):  # the HMAC, and the encrypted credential
        bad = bytearray(blob)
        bad[position] ^= 1
        assert activate(tpm, signer, key, bytes(bad), secret).rc == TPM_RC.INTEGRITY | P(1)
    assert activate(tpm, signer, key, blob[:-1], secret).rc == TPM_RC.INTEGRITY | P(1)
    # An integrity field longer than any digest, or one running past the blob.
    assert activate(tpm, signer, key, u16(65) + bytes(65), secret).rc == TPM_RC.SIZE | P(1)
    assert activate(tpm, signer, key, u16(40) + bytes(4), secret).rc == TPM_RC.INSUFFICIENT | P(1)
    assert activate(tpm, signer, key, blob, secret).rc == 0


def test_credential_for_another_name_is_integrity(tpm):
    key, signer = primary(tpm, ecc_template()), primary(tpm, SIGNER)
    other = primary(
        tpm, ecc_template(SIGNING, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256, unique_x=b"x")
    )
    assert other.name != signer.name
    blob, secret = split_credential(make_credential(tpm, key, b"secret", signer.name))
    assert activate(tpm, other, key, blob, secret).rc == TPM_RC.INTEGRITY | P(1)
    assert activate(tpm, signer, key, blob, secret).rc == 0


def test_secret_for_another_key_is_value_or_integrity(tpm):
    key, signer = primary(tpm, ecc_template()), primary(tpm, SIGNER)
    other_key = primary(tpm, ecc_template(unique_x=b"another"))
    blob, secret = split_credential(make_credential(tpm, other_key, b"secret", signer.name))
    # ECDH with another private key yields another seed: the HMAC fails.
    assert activate(tpm, signer, key, blob, secret).rc == TPM_RC.INTEGRITY | P(1)
    # A secret that is no point at all, or a point off the curve: the codes Part 3 (12.5) lists
    # for an ECC key, as libtpms answers them (found by tests/support/differential.py).
    assert activate(tpm, signer, key, blob, b"\x00\x01").rc == TPM_RC.INSUFFICIENT | P(2)
    assert activate(tpm, signer, key, blob, tpm2b(bytes(32)) + tpm2b(bytes(32))).rc == TPM_RC.ECC_POINT | P(2)


def test_make_credential_errors(tpm):
    key, signer = primary(tpm, ecc_template()), primary(tpm, SIGNER)
    unrestricted = primary(tpm, ecc_template(STORAGE & ~RESTRICTED, sym=NO_SYM))
    assert make_credential(tpm, signer, b"x", key.name).rc == TPM_RC.TYPE | H(1)
    assert make_credential(tpm, unrestricted, b"x", key.name).rc == TPM_RC.TYPE | H(1)
    assert make_credential(tpm, key, bytes(33), key.name).rc == TPM_RC.SIZE | P(1)
    assert make_credential(tpm, key, bytes(32), key.name).rc == 0
    assert make_credential(tpm, key, bytes(32), b"").rc == 0
    # A sequence at the handle has no public area.
    seq = Response(tpm.execute(command(TPM_CC.HashSequenceStart, tpm2b(b"") + u16(TPM_ALG.SHA256))))
    seq_handle = int.from_bytes(seq.raw[10:14], "big")
    resp = Response(tpm.execute(command(TPM_CC.MakeCredential, tpm2b(b"x") + tpm2b(key.name), u32(seq_handle))))
    assert resp.rc == TPM_RC.TYPE | H(1)


def test_activate_credential_errors(tpm):
    key, signer = primary(tpm, ecc_template()), primary(tpm, SIGNER)
    blob, secret = split_credential(make_credential(tpm, key, b"secret", signer.name))
    # keyHandle must be a restricted decryption key.
    assert activate(tpm, signer, signer, blob, secret).rc == TPM_RC.TYPE | H(2)
    # ActivateCredential needs ADMIN of activateHandle: with adminWithPolicy SET only a policy.
    admin_policy = primary(tpm, dataclasses.replace(SIGNER, objectAttributes=SIGNING | ADMIN_WITH_POLICY))
    blob2, secret2 = split_credential(make_credential(tpm, key, b"secret", admin_policy.name))
    assert activate(tpm, admin_policy, key, blob2, secret2).rc == TPM_RC.AUTH_TYPE


def cc(code: int) -> bytes:
    return code.to_bytes(4, "big")


def test_ek_like_key_activates_through_a_policy_session(tpm):
    """An EK has userWithAuth CLEAR: its USER role needs a policy (here PolicyCommandCode)."""
    policy = digest(SHA256, bytes(32) + cc(TPM_CC.PolicyCommandCode) + cc(TPM_CC.ActivateCredential))
    template = dataclasses.replace(ecc_template(EK_ATTRS), authPolicy=policy)
    ek, signer = primary(tpm, template), primary(tpm, SIGNER)
    credential = os.urandom(16)
    seed, secret = outside_seed(ek, b"IDENTITY")
    blob = outside_credential(ek, signer.name, credential, seed)
    assert activate(tpm, signer, ek, blob, secret).rc == TPM_RC.AUTH_UNAVAILABLE
    session = start_session(tpm.execute, SE_POLICY)
    assert (
        Response(tpm.execute(command(TPM_CC.PolicyCommandCode, cc(TPM_CC.ActivateCredential), u32(session.handle)))).rc
        == 0
    )
    uses = [Use(None, name=signer.name), Use(session, name=ek.name, include_auth=False)]
    result = activate(tpm, signer, ek, blob, secret, uses)
    assert result.rc == 0, rc_name(result.rc)
    assert result.params == tpm2b(credential)


# --- libtpms (swtpm) as the other side ---------------------------------------------------------------


def load_external_public(tpm, area) -> Key:
    """TPM2_LoadExternal of a public area only, in the NULL hierarchy."""
    body = u16(0) + T.TPM2B_PUBLIC.pack(area) + u32(0x40000007)
    resp = Response(tpm.execute(command(TPM_CC.LoadExternal, body)))
    assert resp.rc == 0, rc_name(resp.rc)
    return Key(int.from_bytes(resp.raw[10:14], "big"), area, name_of(area))


@pytest.mark.swtpm
@pytest.mark.parametrize("maker", ["libtpms", "ours"])
def test_credentials_cross_libtpms(tpm, maker):
    """One TPM makes the credential with the other's key loaded by LoadExternal (public part only);
    the TPM holding the private key activates it."""
    from support.swtpm_oracle import SwtpmOracle

    oracle = SwtpmOracle()
    try:
        assert oracle.execute(STARTUP_CLEAR) == bytes.fromhex("80010000000a00000000")
        holder, maker_tpm = (tpm, oracle) if maker == "libtpms" else (oracle, tpm)
        key, signer = primary(holder, ecc_template()), primary(holder, SIGNER)
        external = load_external_public(maker_tpm, key.area)
        credential = os.urandom(32)
        resp = make_credential(maker_tpm, external, credential, signer.name)
        assert resp.rc == 0, rc_name(resp.rc)
        blob, secret = split_credential(resp)
        result = activate(holder, signer, key, blob, secret)
        assert result.rc == 0, rc_name(result.rc)
        assert result.params == tpm2b(credential)
        bad = bytearray(blob)
        bad[-1] ^= 1
        assert activate(holder, signer, key, bytes(bad), secret).rc == TPM_RC.INTEGRITY | P(1)
    finally:
        oracle.close()
