"""HMAC, policy and trial sessions through Engine.execute, driven by an
independent client implementation (tests/support/session_client.py), and
compared with libtpms (Debian's swtpm) where the exchange is the same."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from support.session_client import (
    AES128,
    CONTINUE,
    DECRYPT,
    ENCRYPT,
    SE_POLICY,
    SE_TRIAL,
    SHA1,
    SHA256,
    SHA384,
    XOR_SHA256,
    ClientSession,
    Sym,
    Use,
    digest,
    kdfa,
    kdfe,
    mac,
    run,
    start_auth_session_command,
    start_session,
)
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm.constants import TPM_CC, TPM_RH
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_P, RC_S, TPM_RC

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
OWNER = (TPM_RH.OWNER, u32(TPM_RH.OWNER))
PCR16 = (16, u32(16))
EXTEND = u32(1) + u16(SHA256) + bytes(range(32))
ALG_AES, ALG_XOR = 0x0006, 0x000A


def S(n: int) -> int:
    return RC_S | (n << 8)


def P(n: int) -> int:
    return RC_P | (n << 8)


def H(n: int) -> int:
    return n << 8


@pytest.fixture
def tpm() -> Engine:
    engine = Engine()
    assert engine.execute(STARTUP_CLEAR) == bytes.fromhex("80010000000a00000000")
    return engine


def rc(raw: bytes) -> int:
    return int.from_bytes(raw[6:10], "big")


def pcr16(tpm: Engine) -> bytes:
    resp = Response(tpm.execute(command(TPM_CC.PCR_Read, u32(1) + u16(SHA256) + b"\x03\x00\x00\x01")))
    return resp.raw[-32:]


def clock_set(tpm: Engine, ahead_ms: int = 10_000) -> bytes:
    return (tpm.clock() + ahead_ms).to_bytes(8, "big")


def flush(tpm: Engine, handle: int) -> int:
    return rc(tpm.execute(command(TPM_CC.FlushContext, u32(handle))))


def policy_command(tpm: Engine, code: int, session: ClientSession, body: bytes = b"") -> Response:
    return Response(tpm.execute(command(code, body, u32(session.handle))))


def policy_digest(tpm: Engine, session: ClientSession) -> bytes:
    resp = policy_command(tpm, TPM_CC.PolicyGetDigest, session)
    assert resp.rc == 0
    return resp.raw[12:]


# --- StartAuthSession ---------------------------------------------------------------------------


def test_handles_share_one_slot_space_and_nonce_tpm_matches_nonce_caller(tpm):
    hmac_session = start_session(tpm.execute, nonce_caller=b"\x01" * 16)
    policy = start_session(tpm.execute, SE_POLICY, nonce_caller=b"\x02" * 20)
    trial = start_session(tpm.execute, SE_TRIAL, SHA384, nonce_caller=b"\x03" * 48)
    assert (hmac_session.handle, policy.handle, trial.handle) == (0x02000000, 0x03000001, 0x03000002)
    assert [len(s.nonce_tpm) for s in (hmac_session, policy, trial)] == [16, 20, 48]


@pytest.mark.parametrize(
    "body, expected",
    [
        (start_auth_session_command(b"\x01" * 15), TPM_RC.SIZE | P(1)),
        (start_auth_session_command(b"\x01" * 33), TPM_RC.SIZE | P(1)),
        (start_auth_session_command(b"\x01" * 21, auth_hash=SHA1), TPM_RC.SIZE | P(1)),
        (start_auth_session_command(b"\x01" * 16, salt=b"salt"), TPM_RC.VALUE | P(2)),
        (start_auth_session_command(b"\x01" * 16, kind=2), TPM_RC.VALUE | P(3)),
        (start_auth_session_command(b"\x01" * 16, sym=Sym(ALG_AES, 100)), TPM_RC.VALUE | P(4)),
        (start_auth_session_command(b"\x01" * 16, auth_hash=0x0010), TPM_RC.HASH | P(5)),
    ],
)
def test_start_auth_session_parameter_errors(tpm, body, expected):
    assert rc(tpm.execute(body)) == expected


def test_block_cipher_modes_other_than_cfb_are_mode(tpm):
    body = (
        u32(TPM_RH.NULL) * 2
        + tpm2b(b"\x01" * 16)
        + tpm2b(b"")
        + b"\x00"
        + u16(ALG_AES)
        + u16(128)
        + u16(0x0040)
        + u16(SHA256)
    )  # CTR
    cmd = u16(0x8001) + u32(10 + len(body)) + u32(TPM_CC.StartAuthSession) + body
    assert rc(tpm.execute(cmd)) == TPM_RC.MODE | P(4)


def test_tpm_key_must_be_an_asymmetric_key(tpm):
    resp = tpm.execute(command(TPM_CC.HashSequenceStart, tpm2b(b"") + u16(SHA256)))
    sequence = int.from_bytes(resp[10:14], "big")
    cmd = start_auth_session_command(b"\x01" * 16, tpm_key=sequence, salt=b"\x00" * 16)
    assert rc(tpm.execute(cmd)) == TPM_RC.KEY | H(1)
    assert rc(tpm.execute(start_auth_session_command(b"\x01" * 16, tpm_key=sequence))) == TPM_RC.VALUE | P(2)


def test_session_memory_and_flush(tpm):
    sessions = [start_session(tpm.execute) for _ in range(3)]
    assert rc(tpm.execute(start_auth_session_command(b"\x01" * 16))) == TPM_RC.SESSION_MEMORY
    assert flush(tpm, sessions[1].handle) == 0
    assert flush(tpm, sessions[1].handle) == TPM_RC.HANDLE | P(1)
    assert start_session(tpm.execute).handle == sessions[1].handle  # the freed slot is reused
    assert rc(tpm.execute(start_auth_session_command(b"\x01" * 16))) == TPM_RC.SESSION_MEMORY


def test_active_sessions_are_limited_to_64_handles(tpm):
    """Saved sessions keep their handle: 64 of them exhaust the handles, not the slots."""
    saved = []
    for _ in range(64):
        session = start_session(tpm.execute)
        resp = tpm.execute(command(TPM_CC.ContextSave, handles=u32(session.handle)))
        assert rc(resp) == 0
        saved.append(session.handle)
    assert rc(tpm.execute(start_auth_session_command(b"\x01" * 16))) == TPM_RC.SESSION_HANDLES
    assert flush(tpm, saved[5]) == 0  # a saved session is flushed by its handle
    assert start_session(tpm.execute).handle == saved[5]


# --- HMAC sessions ----------------------------------------------------------------------------


@pytest.mark.parametrize("auth_hash", [SHA1, SHA256, SHA384])
def test_hmac_authorized_pcr_extend(tpm, auth_hash):
    session = start_session(tpm.execute, auth_hash=auth_hash)
    result = run(tpm.execute, TPM_CC.PCR_Extend, [PCR16], EXTEND, [Use(session, CONTINUE, u32(16))])
    assert result.rc == 0
    assert pcr16(tpm) == hashlib.sha256(bytes(32) + bytes(range(32))).digest()


def test_hmac_authorized_clock_set_with_owner_auth(tpm):
    tpm.permanent.owner_auth = b"owner-secret\x00\x00"  # trailing zeros do not count
    session = start_session(tpm.execute)
    use = Use(session, CONTINUE, OWNER[1], b"owner-secret")
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [use]).rc == 0
    # The nonces rolled: the same session goes on working for the next command.
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm, 20_000), [use]).rc == 0


def test_bound_session_leaves_the_bind_auth_out_of_the_hmac_key(tpm):
    tpm.permanent.owner_auth = b"owner-secret"
    session = start_session(tpm.execute, bind=(TPM_RH.OWNER, OWNER[1], b"owner-secret"))
    assert session.session_key  # the bind authValue went into the session key
    use = Use(session, CONTINUE, OWNER[1], b"owner-secret")
    assert session.hmac_key(OWNER[1], b"owner-secret") == session.session_key
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [use]).rc == 0
    # For another entity the bound session adds that entity's authValue (PCR 16: empty).
    assert run(tpm.execute, TPM_CC.PCR_Extend, [PCR16], EXTEND, [Use(session, CONTINUE, u32(16))]).rc == 0
    # Once the bind entity's authValue changed, the session is no longer bound to it.
    tpm.permanent.owner_auth = b"new"
    stale = Use(session, CONTINUE, OWNER[1], b"new", include_auth=False)
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [stale]).rc == TPM_RC.BAD_AUTH | S(1)
    fresh = Use(session, CONTINUE, OWNER[1], b"new", include_auth=True)
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [fresh]).rc == 0


def test_wrong_hmac_is_bad_auth_and_changes_nothing(tpm):
    session = start_session(tpm.execute)
    before = pcr16(tpm)
    wrong = Use(session, CONTINUE, u32(16), hmac_override=b"\x00" * 32)
    assert run(tpm.execute, TPM_CC.PCR_Extend, [PCR16], EXTEND, [wrong]).rc == TPM_RC.BAD_AUTH | S(1)
    tpm.permanent.owner_auth = b"right"
    assert run(
        tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [Use(session, CONTINUE, OWNER[1], b"wrong")]
    ).rc == TPM_RC.BAD_AUTH | S(1)
    assert pcr16(tpm) == before
    # A failed command does not roll the nonce: the session still works.
    assert run(tpm.execute, TPM_CC.PCR_Extend, [PCR16], EXTEND, [Use(session, CONTINUE, u32(16))]).rc == 0


def test_wrong_hmac_for_a_dictionary_attack_protected_key_is_auth_fail(tpm):
    handle, public = create_primary(tpm, ECC_STORAGE)  # noDA clear
    key = (handle, u16(SHA256) + hashlib.sha256(public).digest())
    session = start_session(tpm.execute)
    sealed = tpm2b(u16(0x0008) + u16(SHA256) + u32(0x52) + tpm2b(b"") + u16(0x0010) + tpm2b(b""))
    params = tpm2b(tpm2b(b"") + tpm2b(b"sealed")) + sealed + tpm2b(b"") + u32(0)
    wrong = Use(session, CONTINUE, key[1], b"not the key's auth")
    assert run(tpm.execute, TPM_CC.Create, [key], params, [wrong]).rc == TPM_RC.AUTH_FAIL | S(1)
    assert run(tpm.execute, TPM_CC.Create, [key], params, [Use(session, CONTINUE, key[1])]).rc == 0


def test_a_replayed_command_fails_because_the_nonce_rolled(tpm):
    session = start_session(tpm.execute)
    sent = []
    run(
        lambda cmd: sent.append(cmd) or tpm.execute(cmd),
        TPM_CC.PCR_Extend,
        [PCR16],
        EXTEND,
        [Use(session, CONTINUE, u32(16))],
    )
    assert rc(tpm.execute(sent[0])) == TPM_RC.BAD_AUTH | S(1)


def test_empty_hmac_accepted_only_without_any_key(tpm):
    unbound = start_session(tpm.execute)
    empty = Use(unbound, CONTINUE, u32(16), hmac_override=b"")
    assert run(tpm.execute, TPM_CC.PCR_Extend, [PCR16], EXTEND, [empty], check=False).rc == 0
    bound = start_session(tpm.execute, bind=(16, u32(16), b""))
    empty = Use(bound, CONTINUE, u32(16), hmac_override=b"")
    assert run(tpm.execute, TPM_CC.PCR_Extend, [PCR16], EXTEND, [empty]).rc == TPM_RC.BAD_AUTH | S(1)


def test_continue_session_clear_flushes_the_session(tpm):
    session = start_session(tpm.execute)
    assert run(tpm.execute, TPM_CC.PCR_Extend, [PCR16], EXTEND, [Use(session, 0, u32(16))]).rc == 0
    assert (
        run(tpm.execute, TPM_CC.PCR_Extend, [PCR16], EXTEND, [Use(session, CONTINUE, u32(16))]).rc
        == TPM_RC.REFERENCE_S0
    )
    assert flush(tpm, session.handle) == TPM_RC.HANDLE | P(1)


def test_session_attribute_rules(tpm):
    session = start_session(tpm.execute)
    # auditReset only means something in an audit session (audit sessions: test_tpm_audit.py).
    reset = Use(session, CONTINUE | 0x04, u32(16))
    assert run(tpm.execute, TPM_CC.PCR_Extend, [PCR16], EXTEND, [reset]).rc == TPM_RC.ATTRIBUTES | S(1)
    # A session that authorizes nothing must at least encrypt.
    assert run(tpm.execute, TPM_CC.GetRandom, [], u16(8), [Use(session)]).rc == TPM_RC.ATTRIBUTES | S(1)
    # Encryption needs a symmetric algorithm and a TPM2B to work on.
    assert run(
        tpm.execute, TPM_CC.GetRandom, [], u16(8), [Use(session, CONTINUE | ENCRYPT)]
    ).rc == TPM_RC.SYMMETRIC | S(1)
    aes = start_session(tpm.execute, sym=AES128)
    assert run(
        tpm.execute, TPM_CC.PCR_Extend, [PCR16], EXTEND, [Use(aes, CONTINUE | DECRYPT, u32(16))]
    ).rc == TPM_RC.ATTRIBUTES | S(1)
    # Only one session may decrypt; the same session twice is TPM_RC_HANDLE.
    xor = start_session(tpm.execute, sym=XOR_SHA256)
    two = [Use(aes, CONTINUE | DECRYPT), Use(xor, CONTINUE | DECRYPT)]
    data = tpm2b(b"abc") + u16(SHA256) + u32(TPM_RH.NULL)
    assert run(tpm.execute, TPM_CC.Hash, [], data, two).rc == TPM_RC.ATTRIBUTES | S(2)
    assert run(
        tpm.execute, TPM_CC.Hash, [], data, [Use(aes, CONTINUE | DECRYPT), Use(aes, CONTINUE | ENCRYPT)]
    ).rc == TPM_RC.HANDLE | S(2)


def test_wrong_hmac_of_a_non_authorization_session(tpm):
    aes = start_session(tpm.execute, sym=AES128)
    wrong = Use(aes, CONTINUE | ENCRYPT, hmac_override=b"\x01" * 32)
    assert run(tpm.execute, TPM_CC.GetRandom, [], u16(8), [wrong]).rc == TPM_RC.BAD_AUTH | S(1)


def test_sequence_authorized_by_hmac_uses_the_empty_name(tpm):
    resp = tpm.execute(command(TPM_CC.HashSequenceStart, tpm2b(b"seq-auth") + u16(SHA256)))
    handle = int.from_bytes(resp[10:14], "big")
    session = start_session(tpm.execute)
    sequence = (handle, b"")  # a sequence object's Name is the Empty Buffer
    use = Use(session, CONTINUE, b"", b"seq-auth")
    assert run(tpm.execute, TPM_CC.SequenceUpdate, [sequence], tpm2b(b"abc"), [use]).rc == 0
    # The response of the command that flushes the sequence still proves its authValue.
    result = run(tpm.execute, TPM_CC.SequenceComplete, [sequence], tpm2b(b"def") + u32(TPM_RH.NULL), [use])
    assert result.rc == 0 and result.params[2:34] == hashlib.sha256(b"abcdef").digest()


# --- parameter encryption ----------------------------------------------------------------------


def counting_random():
    """A predictable RNG for the engine, so an encrypted GetRandom can be checked."""
    state = {"n": 0}

    def random(n: int) -> bytes:
        state["n"] += 1
        return hashlib.shake_256(state["n"].to_bytes(8, "big")).digest(n)

    return random, state


@pytest.mark.parametrize("sym", [AES128, Sym(ALG_AES, 256), XOR_SHA256], ids=["aes128", "aes256", "xor"])
def test_get_random_response_encryption(sym):
    random, state = counting_random()
    tpm = Engine(random=random)
    tpm.execute(STARTUP_CLEAR)
    session = start_session(tpm.execute, sym=sym)
    result = run(tpm.execute, TPM_CC.GetRandom, [], u16(24), [Use(session, CONTINUE | ENCRYPT)])
    assert result.rc == 0
    # GetRandom drew its octets first, then the response drew the new nonceTPM.
    expected = hashlib.shake_256((state["n"] - 1).to_bytes(8, "big")).digest(24)
    assert result.params == tpm2b(expected)
    assert result.raw[16 : 16 + 24] != expected  # on the wire it was encrypted


@pytest.mark.parametrize("sym", [AES128, XOR_SHA256], ids=["aes", "xor"])
@pytest.mark.parametrize("auth_hash", [SHA256, SHA1])
def test_hash_command_decryption_and_response_encryption(tpm, sym, auth_hash):
    session = start_session(tpm.execute, auth_hash=auth_hash, sym=sym)
    data = os.urandom(200)
    params = tpm2b(data) + u16(SHA256) + u32(TPM_RH.NULL)
    result = run(tpm.execute, TPM_CC.Hash, [], params, [Use(session, CONTINUE | DECRYPT | ENCRYPT)])
    assert result.rc == 0
    assert result.params[:34] == tpm2b(hashlib.sha256(data).digest())


def test_encrypted_parameter_longer_than_the_parameters_is_size(tpm):
    session = start_session(tpm.execute, sym=AES128)
    params = u16(100) + b"short"
    assert run(tpm.execute, TPM_CC.Hash, [], params, [Use(session, CONTINUE | DECRYPT)]).rc == TPM_RC.SIZE | S(1)


def test_encryption_key_includes_the_auth_of_a_bound_entity(tpm):
    """The reference TPM keys parameter encryption with sessionKey || authValue even when the
    session is bound to the entity (the HMAC key leaves the authValue out)."""
    resp = tpm.execute(command(TPM_CC.HashSequenceStart, tpm2b(b"pw") + u16(SHA256)))
    handle = int.from_bytes(resp[10:14], "big")
    session = start_session(tpm.execute, sym=AES128, bind=(handle, b"", b"pw"))
    use = Use(session, CONTINUE | DECRYPT, b"", b"pw")
    assert run(tpm.execute, TPM_CC.SequenceUpdate, [(handle, b"")], tpm2b(b"secret data"), [use]).rc == 0
    result = run(
        tpm.execute,
        TPM_CC.SequenceComplete,
        [(handle, b"")],
        tpm2b(b"") + u32(TPM_RH.NULL),
        [Use(session, CONTINUE, b"", b"pw")],
    )
    assert result.params[2:34] == hashlib.sha256(b"secret data").digest()


def test_first_session_hmac_covers_the_nonces_of_encryption_sessions(tpm):
    """Separate decrypt and encrypt sessions: the authorizing session's HMAC includes their nonceTPMs."""
    resp = tpm.execute(command(TPM_CC.HashSequenceStart, tpm2b(b"pw") + u16(SHA256)))
    sequence = (int.from_bytes(resp[10:14], "big"), b"")
    auth = start_session(tpm.execute)
    dec = start_session(tpm.execute, sym=AES128)
    enc = start_session(tpm.execute, sym=XOR_SHA256)
    uses = [Use(auth, CONTINUE, b"", b"pw"), Use(dec, CONTINUE | DECRYPT)]
    assert run(tpm.execute, TPM_CC.SequenceUpdate, [sequence], tpm2b(b"abc"), uses).rc == 0
    # An HMAC over cpHash and the nonces without the decrypt session's nonceTPM is refused.
    nonce = os.urandom(16)
    cp = digest(SHA256, u32(TPM_CC.SequenceUpdate) + tpm2b(b"abc"))
    plain = mac(SHA256, b"pw", cp + nonce + auth.nonce_tpm + bytes([CONTINUE]))
    uses = [Use(auth, CONTINUE, b"", b"pw", nonce=nonce, hmac_override=plain), Use(dec, CONTINUE | DECRYPT)]
    assert run(tpm.execute, TPM_CC.SequenceUpdate, [sequence], tpm2b(b"abc"), uses).rc == TPM_RC.BAD_AUTH | S(1)
    uses = [Use(auth, CONTINUE, b"", b"pw"), Use(dec, CONTINUE | DECRYPT), Use(enc, CONTINUE | ENCRYPT)]
    result = run(tpm.execute, TPM_CC.SequenceComplete, [sequence], tpm2b(b"def") + u32(TPM_RH.NULL), uses)
    assert result.rc == 0 and result.params[:34] == tpm2b(hashlib.sha256(b"abcdef").digest())


# --- salted sessions ----------------------------------------------------------------------------

ECC_STORAGE = (
    u16(0x0023)
    + u16(SHA256)
    + u32(0x30072)
    + tpm2b(b"")
    + u16(ALG_AES)
    + u16(128)
    + u16(0x43)
    + u16(0x0010)
    + u16(0x0003)
    + u16(0x0010)
    + tpm2b(b"")
    + tpm2b(b"")
)
RSA_STORAGE = (
    u16(0x0001)
    + u16(SHA256)
    + u32(0x30072)
    + tpm2b(b"")
    + u16(ALG_AES)
    + u16(128)
    + u16(0x43)
    + u16(0x0010)
    + u16(2048)
    + u32(0)
    + tpm2b(b"")
)


def create_primary(tpm: Engine, template: bytes) -> tuple[int, bytes]:
    """CreatePrimary under the owner; returns the handle and the public area octets."""
    sensitive = tpm2b(tpm2b(b"") + tpm2b(b""))
    resp = tpm.execute(
        command(TPM_CC.CreatePrimary, sensitive + tpm2b(template) + tpm2b(b"") + u32(0), u32(TPM_RH.OWNER), b"")
    )
    assert rc(resp) == 0
    size = int.from_bytes(resp[18:20], "big")
    return int.from_bytes(resp[10:14], "big"), resp[20 : 20 + size]


def test_salted_session_with_an_ecc_key(tpm):
    handle, public = create_primary(tpm, ECC_STORAGE)
    x = public[-68 + 2 : -34]
    y = public[-32:]
    tpm_point = ec.EllipticCurvePublicNumbers(
        int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
    ).public_key()
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    z = ephemeral.exchange(ec.ECDH(), tpm_point)
    numbers = ephemeral.public_key().public_numbers()
    qe_x, qe_y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
    salt = kdfe(SHA256, z, b"SECRET", qe_x, x, 256)
    session = salted_session(tpm, handle, tpm2b(qe_x) + tpm2b(qe_y), salt)
    assert run(tpm.execute, TPM_CC.PCR_Extend, [PCR16], EXTEND, [Use(session, CONTINUE, u32(16))]).rc == 0
    # A point off the curve is TPM_RC_VALUE on encryptedSalt.
    cmd = start_auth_session_command(b"\x01" * 16, tpm_key=handle, salt=tpm2b(qe_x) + tpm2b(bytes(32)))
    assert rc(tpm.execute(cmd)) == TPM_RC.VALUE | P(2)


def test_salted_session_with_an_rsa_key(tpm):
    handle, public = create_primary(tpm, RSA_STORAGE)
    modulus = public[-256:]
    key = rsa.RSAPublicNumbers(65537, int.from_bytes(modulus, "big")).public_key()
    salt = os.urandom(32)
    encrypted = key.encrypt(salt, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"SECRET\x00"))
    session = salted_session(tpm, handle, encrypted, salt)
    assert run(tpm.execute, TPM_CC.PCR_Extend, [PCR16], EXTEND, [Use(session, CONTINUE, u32(16))]).rc == 0
    cmd = start_auth_session_command(b"\x01" * 16, tpm_key=handle, salt=b"\x01" * 256)
    assert rc(tpm.execute(cmd)) == TPM_RC.VALUE | P(2)


def salted_session(tpm: Engine, handle: int, encrypted_salt: bytes, salt: bytes) -> ClientSession:
    nonce_caller = os.urandom(32)
    resp = tpm.execute(start_auth_session_command(nonce_caller, tpm_key=handle, salt=encrypted_salt))
    assert rc(resp) == 0
    nonce_tpm = resp[16:48]
    key = kdfa(SHA256, salt, b"ATH", nonce_tpm, nonce_caller, 256)
    return ClientSession(int.from_bytes(resp[10:14], "big"), SHA256, nonce_tpm, key, nonce_size=32)


# --- policy sessions ---------------------------------------------------------------------------


def cc(code: int) -> bytes:
    return code.to_bytes(4, "big")


def test_policy_command_code_and_auth_value_authorize_clock_set(tpm):
    expected = digest(
        SHA256,
        digest(SHA256, bytes(32) + cc(TPM_CC.PolicyCommandCode) + cc(TPM_CC.ClockSet)) + cc(TPM_CC.PolicyAuthValue),
    )
    trial = start_session(tpm.execute, SE_TRIAL)
    assert policy_command(tpm, TPM_CC.PolicyCommandCode, trial, cc(TPM_CC.ClockSet)).rc == 0
    assert policy_command(tpm, TPM_CC.PolicyAuthValue, trial).rc == 0
    assert policy_digest(tpm, trial) == expected
    # A trial session computes digests but authorizes nothing.
    assert run(
        tpm.execute, TPM_CC.PCR_Extend, [PCR16], EXTEND, [Use(trial, CONTINUE, u32(16))]
    ).rc == TPM_RC.ATTRIBUTES | S(1)

    tpm.permanent.owner_auth = b"owner"
    tpm.permanent.owner_policy = (SHA256, expected)
    policy = start_session(tpm.execute, SE_POLICY)
    use = Use(policy, CONTINUE, OWNER[1], b"owner", include_auth=True)
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [use]).rc == TPM_RC.POLICY_FAIL | S(1)
    assert policy_command(tpm, TPM_CC.PolicyCommandCode, policy, cc(TPM_CC.ClockSet)).rc == 0
    assert policy_command(tpm, TPM_CC.PolicyAuthValue, policy).rc == 0
    wrong = Use(policy, CONTINUE, OWNER[1], b"not the owner", include_auth=True)
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [wrong]).rc == TPM_RC.BAD_AUTH | S(1)
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [use]).rc == 0
    # A policy authorizes one command: the session starts over afterwards.
    assert policy_digest(tpm, policy) == bytes(32)
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [use]).rc == TPM_RC.POLICY_FAIL | S(1)


def test_policy_command_code_is_enforced(tpm):
    tpm.permanent.owner_policy = (
        SHA256,
        digest(SHA256, bytes(32) + cc(TPM_CC.PolicyCommandCode) + cc(TPM_CC.ClockRateAdjust)),
    )
    policy = start_session(tpm.execute, SE_POLICY)
    assert policy_command(tpm, TPM_CC.PolicyCommandCode, policy, cc(0x1FF)).rc == TPM_RC.POLICY_CC | P(1)
    assert policy_command(tpm, TPM_CC.PolicyCommandCode, policy, cc(TPM_CC.ClockRateAdjust)).rc == 0
    assert policy_command(tpm, TPM_CC.PolicyCommandCode, policy, cc(TPM_CC.ClockSet)).rc == TPM_RC.VALUE | P(1)
    use = Use(policy, CONTINUE, OWNER[1], include_auth=False)
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [use]).rc == TPM_RC.POLICY_CC | S(1)
    assert run(tpm.execute, TPM_CC.ClockRateAdjust, [OWNER], b"\x01", [use]).rc == 0


def test_policy_password_sends_the_auth_value_in_the_clear(tpm):
    policy_value = digest(SHA256, bytes(32) + cc(TPM_CC.PolicyAuthValue))
    tpm.permanent.owner_auth = b"pw"
    tpm.permanent.owner_policy = (SHA256, policy_value)
    policy = start_session(tpm.execute, SE_POLICY)
    assert policy_command(tpm, TPM_CC.PolicyPassword, policy).rc == 0
    assert policy_digest(tpm, policy) == policy_value  # same digest as PolicyAuthValue
    wrong = Use(policy, CONTINUE, OWNER[1], b"nope", password=True)
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [wrong]).rc == TPM_RC.BAD_AUTH | S(1)
    result = run(
        tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [Use(policy, CONTINUE, OWNER[1], b"pw", password=True)]
    )
    assert result.rc == 0
    assert result.raw.endswith(b"\x01\x00\x00")  # no response HMAC for a password policy


def test_policy_without_auth_value_needs_no_hmac(tpm):
    """An unbound, unsalted policy session without PolicyAuthValue has no key: empty HMAC."""
    policy_value = digest(SHA256, bytes(32) + cc(TPM_CC.PolicyCommandCode) + cc(TPM_CC.ClockSet))
    tpm.permanent.owner_policy = (SHA256, policy_value)
    tpm.permanent.owner_auth = b"unused"
    policy = start_session(tpm.execute, SE_POLICY)
    assert policy_command(tpm, TPM_CC.PolicyCommandCode, policy, cc(TPM_CC.ClockSet)).rc == 0
    use = Use(policy, CONTINUE, OWNER[1], hmac_override=b"")
    result = run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [use], check=False)
    assert result.rc == 0 and result.raw.endswith(b"\x01\x00\x00")


def test_policy_or(tpm):
    branch_a = digest(SHA256, bytes(32) + cc(TPM_CC.PolicyCommandCode) + cc(TPM_CC.ClockSet))
    branch_b = digest(SHA256, bytes(32) + cc(TPM_CC.PolicyCommandCode) + cc(TPM_CC.ClockRateAdjust))
    expected = digest(SHA256, bytes(32) + cc(TPM_CC.PolicyOR) + branch_a + branch_b)
    or_list = u32(2) + tpm2b(branch_a) + tpm2b(branch_b)
    tpm.permanent.owner_policy = (SHA256, expected)
    policy = start_session(tpm.execute, SE_POLICY)
    assert policy_command(tpm, TPM_CC.PolicyOR, policy, or_list).rc == TPM_RC.VALUE | P(1)
    assert policy_command(tpm, TPM_CC.PolicyOR, policy, u32(1) + tpm2b(branch_a)).rc == TPM_RC.SIZE | P(1)
    assert policy_command(tpm, TPM_CC.PolicyCommandCode, policy, cc(TPM_CC.ClockRateAdjust)).rc == 0
    assert policy_command(tpm, TPM_CC.PolicyOR, policy, or_list).rc == 0
    assert policy_digest(tpm, policy) == expected
    use = Use(policy, CONTINUE, OWNER[1], include_auth=False)
    assert run(tpm.execute, TPM_CC.ClockRateAdjust, [OWNER], b"\x01", [use]).rc == 0
    # A trial session ORs without checking the current digest.
    trial = start_session(tpm.execute, SE_TRIAL)
    assert policy_command(tpm, TPM_CC.PolicyOR, trial, or_list).rc == 0
    assert policy_digest(tpm, trial) == expected


def test_policy_pcr(tpm):
    selection = u32(1) + u16(SHA256) + b"\x03\x00\x00\x01"  # PCR 16
    current = pcr16(tpm)
    expected = digest(SHA256, bytes(32) + cc(TPM_CC.PolicyPCR) + selection + digest(SHA256, current))
    trial = start_session(tpm.execute, SE_TRIAL)
    assert policy_command(tpm, TPM_CC.PolicyPCR, trial, tpm2b(b"") + selection).rc == 0
    assert policy_digest(tpm, trial) == expected
    tpm.permanent.owner_policy = (SHA256, expected)

    policy = start_session(tpm.execute, SE_POLICY)
    assert policy_command(tpm, TPM_CC.PolicyPCR, policy, tpm2b(bytes(32)) + selection).rc == TPM_RC.VALUE | P(1)
    assert policy_command(tpm, TPM_CC.PolicyPCR, policy, tpm2b(digest(SHA256, current)) + selection).rc == 0
    assert policy_digest(tpm, policy) == expected
    use = Use(policy, CONTINUE, OWNER[1], include_auth=False)
    # A PCR changes between the assertion and the use: TPM_RC_PCR_CHANGED.  (PCR 16 itself
    # does not count: the debug PCR is exempt from the update counter.)
    assert run(tpm.execute, TPM_CC.PCR_Extend, [PCR16], EXTEND, [Use(None, CONTINUE, u32(16))]).rc == 0
    assert run(tpm.execute, TPM_CC.PCR_Extend, [(8, u32(8))], EXTEND, [Use(None, CONTINUE, u32(8))]).rc == 0
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [use]).rc == TPM_RC.PCR_CHANGED
    assert policy_command(tpm, TPM_CC.PolicyPCR, policy, tpm2b(b"") + selection).rc == TPM_RC.PCR_CHANGED


def test_policy_locality(tpm):
    expected = digest(SHA256, bytes(32) + cc(TPM_CC.PolicyLocality) + b"\x06")
    tpm.permanent.owner_policy = (SHA256, expected)
    policy = start_session(tpm.execute, SE_POLICY)
    assert policy_command(tpm, TPM_CC.PolicyLocality, policy, b"\x00").rc == TPM_RC.RANGE | P(1)
    assert policy_command(tpm, TPM_CC.PolicyLocality, policy, b"\x06").rc == 0  # localities 1 and 2
    assert policy_digest(tpm, policy) == expected
    assert policy_command(tpm, TPM_CC.PolicyLocality, policy, b"\x21").rc == TPM_RC.RANGE | P(1)
    use = Use(policy, CONTINUE, OWNER[1], include_auth=False)
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [use]).rc == TPM_RC.LOCALITY
    assert run(lambda c: tpm.execute(c, 2), TPM_CC.ClockSet, [OWNER], clock_set(tpm), [use]).rc == 0


def test_policy_restart_and_errors(tpm):
    policy = start_session(tpm.execute, SE_POLICY)
    assert policy_command(tpm, TPM_CC.PolicyAuthValue, policy).rc == 0
    assert policy_digest(tpm, policy) != bytes(32)
    assert policy_command(tpm, TPM_CC.PolicyRestart, policy).rc == 0
    assert policy_digest(tpm, policy) == bytes(32)
    hmac_session = start_session(tpm.execute)
    assert policy_command(tpm, TPM_CC.PolicyAuthValue, hmac_session).rc == TPM_RC.VALUE | H(1)
    assert rc(tpm.execute(command(TPM_CC.PolicyAuthValue, handles=u32(0x03000010)))) == TPM_RC.REFERENCE_H0
    # An entity without an authPolicy cannot be authorized by a policy.
    use = Use(policy, CONTINUE, OWNER[1], include_auth=False)
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [use]).rc == TPM_RC.AUTH_UNAVAILABLE


# --- capabilities, contexts, snapshots -----------------------------------------------------------


def handles(tpm: Engine, start: int) -> list[int]:
    resp = tpm.execute(command(TPM_CC.GetCapability, u32(1) + u32(start) + u32(64)))
    count = int.from_bytes(resp[15:19], "big")
    return [int.from_bytes(resp[19 + 4 * i : 23 + 4 * i], "big") for i in range(count)]


def properties(tpm: Engine) -> dict[int, int]:
    resp = tpm.execute(command(TPM_CC.GetCapability, u32(6) + u32(0x203) + u32(4)))
    return {
        int.from_bytes(resp[19 + 8 * i : 23 + 8 * i], "big"): int.from_bytes(resp[23 + 8 * i : 27 + 8 * i], "big")
        for i in range(4)
    }


def test_capabilities_report_loaded_and_saved_sessions(tpm):
    first = start_session(tpm.execute)
    policy = start_session(tpm.execute, SE_POLICY)
    assert handles(tpm, 0x02000000) == [first.handle, policy.handle]
    assert handles(tpm, 0x02000001) == [policy.handle]
    assert handles(tpm, 0x03000000) == []
    assert properties(tpm) == {0x203: 2, 0x204: 1, 0x205: 2, 0x206: 62}
    saved = tpm.execute(command(TPM_CC.ContextSave, handles=u32(policy.handle)))
    assert rc(saved) == 0
    assert handles(tpm, 0x02000000) == [first.handle]
    assert handles(tpm, 0x03000000) == [0x02000001]  # saved sessions are listed by slot
    assert properties(tpm) == {0x203: 1, 0x204: 2, 0x205: 2, 0x206: 62}


def test_context_save_and_load_keep_the_session_working(tpm):
    tpm.permanent.owner_policy = (
        SHA256,
        digest(SHA256, bytes(32) + cc(TPM_CC.PolicyCommandCode) + cc(TPM_CC.ClockSet)),
    )
    policy = start_session(tpm.execute, SE_POLICY)
    assert policy_command(tpm, TPM_CC.PolicyCommandCode, policy, cc(TPM_CC.ClockSet)).rc == 0
    saved = tpm.execute(command(TPM_CC.ContextSave, handles=u32(policy.handle)))
    assert rc(saved) == 0
    context = saved[10:]
    assert policy_command(tpm, TPM_CC.PolicyGetDigest, policy).rc == TPM_RC.REFERENCE_H0
    loaded = tpm.execute(command(TPM_CC.ContextLoad, context))
    assert rc(loaded) == 0 and loaded[10:14] == u32(policy.handle)
    use = Use(policy, CONTINUE, OWNER[1], include_auth=False)
    assert run(tpm.execute, TPM_CC.ClockSet, [OWNER], clock_set(tpm), [use]).rc == 0
    # A session context loads once: the old one is refused after the session came back.
    assert rc(tpm.execute(command(TPM_CC.ContextLoad, context))) == TPM_RC.HANDLE | P(1)


def test_context_gap(tpm):
    """The oldest saved session may not fall more than TPM_PT_CONTEXT_GAP_MAX saves behind."""
    old = start_session(tpm.execute)
    assert rc(tpm.execute(command(TPM_CC.ContextSave, handles=u32(old.handle)))) == 0
    tpm.volatile.sessions.context_counter += 0xFFFF  # as if 65535 more contexts had been saved
    newer = start_session(tpm.execute)
    assert rc(tpm.execute(command(TPM_CC.ContextSave, handles=u32(newer.handle)))) == TPM_RC.CONTEXT_GAP
    assert flush(tpm, old.handle) == 0
    assert rc(tpm.execute(command(TPM_CC.ContextSave, handles=u32(newer.handle)))) == 0


def test_sessions_survive_a_volatile_state_snapshot(tpm):
    tpm.permanent.owner_auth = b"o"
    session = start_session(tpm.execute, sym=AES128, bind=(TPM_RH.OWNER, OWNER[1], b"o"))
    policy = start_session(tpm.execute, SE_POLICY)
    assert (
        policy_command(tpm, TPM_CC.PolicyPCR, policy, tpm2b(b"") + u32(1) + u16(SHA256) + b"\x03\x00\x00\x01").rc == 0
    )
    restored = Engine.from_blobs(tpm.permanent_blob(), tpm.volatile_blob())
    assert restored.volatile.sessions == tpm.volatile.sessions
    use = Use(session, CONTINUE, OWNER[1], b"o")
    assert run(restored.execute, TPM_CC.ClockSet, [OWNER], clock_set(restored), [use]).rc == 0
    assert run(restored.execute, TPM_CC.GetRandom, [], u16(8), [Use(session, CONTINUE | ENCRYPT)]).rc == 0
    assert policy_digest(restored, policy) == policy_digest(tpm, policy)


# --- the same exchanges against libtpms ---------------------------------------------------------


def exchange(execute, set_owner_policy) -> list[tuple[str, int, int]]:
    """An HMAC/policy session walk-through; returns (step, response code, response size)."""
    steps: list[tuple[str, int, int]] = []

    def step(name: str, raw: bytes) -> bytes:
        steps.append((name, rc(raw), len(raw)))
        return raw

    def via(name: str):
        return lambda cmd: step(name, execute(cmd))

    execute(STARTUP_CLEAR)
    nonce = bytes(range(16))
    session = start_session(via("start hmac"), nonce_caller=nonce)
    run(via("pcr_extend hmac"), TPM_CC.PCR_Extend, [PCR16], EXTEND, [Use(session, CONTINUE, u32(16), nonce=nonce)])
    run(
        via("wrong hmac"),
        TPM_CC.PCR_Extend,
        [PCR16],
        EXTEND,
        [Use(session, CONTINUE, u32(16), nonce=nonce, hmac_override=bytes(32))],
    )
    run(
        via("clockset hmac"),
        TPM_CC.ClockSet,
        [OWNER],
        (1 << 40).to_bytes(8, "big"),
        [Use(session, CONTINUE, OWNER[1], nonce=nonce)],
    )
    run(via("hmac no continue"), TPM_CC.PCR_Event, [PCR16], tpm2b(b"event"), [Use(session, 0, u32(16), nonce=nonce)])
    run(via("flushed session"), TPM_CC.PCR_Event, [PCR16], tpm2b(b"event"), [Use(session, 0, u32(16), nonce=nonce)])
    for sym in (AES128, XOR_SHA256):
        enc = start_session(via("start encrypting"), sym=sym, nonce_caller=nonce)
        run(
            via("hash decrypt+encrypt"),
            TPM_CC.Hash,
            [],
            tpm2b(b"abc") + u16(SHA256) + u32(TPM_RH.NULL),
            [Use(enc, CONTINUE | DECRYPT | ENCRYPT, nonce=nonce)],
        )
        run(via("getrandom encrypt"), TPM_CC.GetRandom, [], u16(20), [Use(enc, 0 | ENCRYPT, nonce=nonce)])
    step("too small nonce", execute(start_auth_session_command(b"\x01" * 15)))
    step("salt without key", execute(start_auth_session_command(nonce, salt=b"x")))
    trial = start_session(via("start trial"), SE_TRIAL, nonce_caller=nonce)
    step("trial cc", execute(command(TPM_CC.PolicyCommandCode, cc(TPM_CC.ClockSet), u32(trial.handle))))
    step("trial authvalue", execute(command(TPM_CC.PolicyAuthValue, b"", u32(trial.handle))))
    value = step("trial digest", execute(command(TPM_CC.PolicyGetDigest, b"", u32(trial.handle))))[12:]
    run(via("trial authorizes"), TPM_CC.PCR_Extend, [PCR16], EXTEND, [Use(trial, CONTINUE, u32(16), nonce=nonce)])
    step("flush trial", execute(command(TPM_CC.FlushContext, u32(trial.handle))))
    policy = start_session(via("start policy"), SE_POLICY, nonce_caller=nonce)
    use = Use(policy, CONTINUE, OWNER[1], include_auth=True, nonce=nonce)
    run(via("policy without owner policy"), TPM_CC.ClockSet, [OWNER], (1 << 41).to_bytes(8, "big"), [use])
    set_owner_policy(value)
    step("policy cc", execute(command(TPM_CC.PolicyCommandCode, cc(TPM_CC.ClockSet), u32(policy.handle))))
    step("policy locality 0", execute(command(TPM_CC.PolicyLocality, b"\x00", u32(policy.handle))))
    run(via("policy incomplete"), TPM_CC.ClockSet, [OWNER], (1 << 41).to_bytes(8, "big"), [use])
    step("policy authvalue", execute(command(TPM_CC.PolicyAuthValue, b"", u32(policy.handle))))
    run(via("policy clockset"), TPM_CC.ClockSet, [OWNER], (1 << 41).to_bytes(8, "big"), [use])
    run(via("policy used up"), TPM_CC.ClockSet, [OWNER], (1 << 42).to_bytes(8, "big"), [use])
    step("handles", execute(command(TPM_CC.GetCapability, u32(1) + u32(0x02000000) + u32(16))))
    return steps


@pytest.mark.swtpm
def test_session_exchange_matches_libtpms():
    from support.swtpm_oracle import SwtpmOracle

    oracle = SwtpmOracle()
    try:

        def set_policy(value: bytes) -> None:
            body = tpm2b(value) + u16(SHA256)
            assert rc(oracle.execute(command(TPM_CC.SetPrimaryPolicy, body, u32(TPM_RH.OWNER), b""))) == 0

        theirs = exchange(oracle.execute, set_policy)
    finally:
        oracle.close()
    ours_engine = Engine()

    def set_ours(value: bytes) -> None:
        ours_engine.permanent.owner_policy = (SHA256, value)

    ours = exchange(ours_engine.execute, set_ours)
    assert ours == theirs
