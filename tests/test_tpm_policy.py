"""Enhanced Authorization through Engine.execute: every policy assertion of Part 3 clause 23
in a real policy session that then authorizes a command, and its error paths.

The digests are computed here from Part 3 (tests/support/policy_commands.py), the caller's
session side by tests/support/session_client.py; neither uses the engine's code.  The
engine's clock is a fake, so expirations are tested without waiting.
"""

from __future__ import annotations

import pytest

from support import policy_commands as pc
from support.engine_oracle import EngineOracle
from support.object_templates import NO_SYM, SIGN, USER_WITH_AUTH, creation_params, rsa_template
from support.policy_commands import ExternalKey
from support.session_client import CONTINUE, SE_POLICY, SE_TRIAL, SHA256, ClientSession, Use, digest, run, start_session
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_EO, TPM_RH, TPMA_NV
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_P, RC_S, TPM_RC

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
SHUTDOWN_STATE = bytes.fromhex("80010000000c000001450001")
STARTUP_STATE = bytes.fromhex("80010000000c000001440001")
OWNER = (TPM_RH.OWNER, u32(TPM_RH.OWNER))
INDEX = 0x01500020
ZERO = bytes(32)


def P(n: int) -> int:
    return RC_P | (n << 8)


def S(n: int) -> int:
    return RC_S | (n << 8)


def H(n: int) -> int:
    return n << 8


class FakeClock:
    def __init__(self) -> None:
        self.ms = 5_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tpm(clock) -> EngineOracle:
    engine = EngineOracle(Engine(monotonic_ms=clock))
    assert Response(engine.execute(STARTUP_CLEAR)).rc == 0
    return engine


def rc(tpm, cmd: bytes) -> int:
    return Response(tpm.execute(cmd)).rc


def ok(tpm, cmd: bytes) -> Response:
    resp = Response(tpm.execute(cmd))
    assert resp.rc == 0, f"0x{resp.rc:x}"
    return resp


def current_digest(tpm, session: ClientSession) -> bytes:
    return ok(tpm, pc.get_digest(session.handle)).raw[12:]


def set_owner_policy(tpm, policy: bytes) -> None:
    ok(tpm, command(TPM_CC.SetPrimaryPolicy, tpm2b(policy) + u16(SHA256), u32(TPM_RH.OWNER), b""))


def clock_set(tpm, ahead_ms: int = 10_000) -> bytes:
    return (tpm.clock() + ahead_ms).to_bytes(8, "big")


def as_owner(tpm, session: ClientSession, params: bytes | None = None, cc: int = TPM_CC.ClockSet, **use) -> int:
    """Run ``cc`` (ClockSet by default) with the owner authorized by ``session``."""
    params = clock_set(tpm) if params is None else params
    return run(tpm.execute, cc, [OWNER], params, [Use(session, CONTINUE, OWNER[1], include_auth=False, **use)]).rc


def policy_session(tpm) -> ClientSession:
    return start_session(tpm.execute, SE_POLICY)


def flush(tpm, *sessions: ClientSession) -> None:
    for session in sessions:
        ok(tpm, command(TPM_CC.FlushContext, u32(session.handle)))


# --- keys ------------------------------------------------------------------------------------


@pytest.fixture
def key(tpm) -> ExternalKey:
    return ExternalKey(tpm.execute)


def signed_params(nonce: bytes, cp_hash: bytes, ref: bytes, expiration: int) -> bytes:
    """What PolicySigned's key signs: nonceTPM || expiration || cpHashA || policyRef."""
    return nonce + expiration.to_bytes(4, "big", signed=True) + cp_hash + ref


def policy_signed(tpm, key: ExternalKey, session, nonce=None, cp_hash=b"", ref=b"", expiration=0, sig=None):
    nonce = session.nonce_tpm if nonce is None else nonce
    sig = key.sign(signed_params(nonce, cp_hash, ref, expiration)) if sig is None else sig
    return Response(tpm.execute(pc.signed(session.handle, key.handle, nonce, cp_hash, ref, expiration, sig)))


# --- PolicySigned ------------------------------------------------------------------------------


def test_policy_signed_authorizes_the_owner(tpm, key):
    expected = pc.update(SHA256, ZERO, TPM_CC.PolicySigned, key.name, b"ref")
    set_owner_policy(tpm, expected)
    session = policy_session(tpm)
    resp = policy_signed(tpm, key, session, ref=b"ref")
    assert resp.rc == 0
    assert resp.params() == tpm2b(b"") + u16(pc.ST_AUTH_SIGNED) + u32(TPM_RH.NULL) + tpm2b(b"")  # no ticket asked for
    assert current_digest(tpm, session) == expected
    assert as_owner(tpm, session) == 0


def test_policy_signed_errors(tpm, key):
    session = policy_session(tpm)
    assert policy_signed(tpm, key, session, nonce=bytes(len(session.nonce_tpm))).rc == TPM_RC.NONCE | P(1)
    wrong = key.sign(b"something else")
    assert policy_signed(tpm, key, session, sig=wrong).rc == TPM_RC.SIGNATURE | P(5)
    assert policy_signed(tpm, key, session, cp_hash=b"short").rc == TPM_RC.SIZE | P(2)
    assert current_digest(tpm, session) == ZERO  # nothing was asserted
    # A trial session checks nothing: the digest is the same.
    trial = start_session(tpm.execute, SE_TRIAL)
    assert policy_signed(tpm, key, trial, sig=wrong).rc == 0
    assert current_digest(tpm, trial) == pc.update(SHA256, ZERO, TPM_CC.PolicySigned, key.name, b"")


def test_policy_signed_expiration_and_ticket(tpm, clock, key):
    expected = pc.update(SHA256, ZERO, TPM_CC.PolicySigned, key.name, b"")
    set_owner_policy(tpm, expected)
    session = policy_session(tpm)
    resp = policy_signed(tpm, key, session, expiration=-10)
    assert resp.rc == 0
    body = resp.params()
    timeout = body[2 : 2 + int.from_bytes(body[:2], "big")]
    ticket = body[2 + len(timeout) :]
    assert len(timeout) == 8 and ticket[:2] == u16(pc.ST_AUTH_SIGNED) and len(ticket) > 8
    assert as_owner(tpm, session) == 0
    # The ticket stands in for the signature in another session, until it expires.
    other = policy_session(tpm)
    assert rc(tpm, pc.ticket(other.handle, timeout, b"", b"", key.name, ticket)) == 0
    assert current_digest(tpm, other) == expected
    assert as_owner(tpm, other) == 0
    flush(tpm, session)
    tampered = ticket[:-1] + bytes([ticket[-1] ^ 1])
    assert rc(tpm, pc.ticket(other.handle, timeout, b"", b"", key.name, tampered)) == TPM_RC.TICKET | P(5)
    assert rc(tpm, pc.ticket(other.handle, timeout, b"", b"other", key.name, ticket)) == TPM_RC.TICKET | P(5)
    assert rc(tpm, pc.ticket(other.handle, timeout[:4], b"", b"", key.name, ticket)) == TPM_RC.SIZE | P(1)
    # Ten seconds after the session started, the authorization and the ticket are void.
    late = policy_session(tpm)
    assert policy_signed(tpm, key, late, expiration=10).rc == 0
    clock.ms += 11_000
    assert as_owner(tpm, late) == TPM_RC.EXPIRED | S(1)
    assert rc(tpm, pc.ticket(late.handle, timeout, b"", b"", key.name, ticket)) == TPM_RC.EXPIRED | P(1)
    assert policy_signed(tpm, key, late, expiration=5).rc == TPM_RC.EXPIRED | P(4)
    trial = start_session(tpm.execute, SE_TRIAL)
    assert rc(tpm, pc.ticket(trial.handle, timeout, b"", b"", key.name, ticket)) == TPM_RC.ATTRIBUTES | H(1)


def test_policy_signed_ticket_dies_with_tpm_restart(tpm, key):
    session = policy_session(tpm)
    body = policy_signed(tpm, key, session, expiration=-100).params()
    timeout, ticket = body[2:10], body[10:]
    fresh = EngineOracle(Engine.from_blobs(tpm.permanent_blob()))
    ok(fresh, STARTUP_CLEAR)
    other = policy_session(fresh)
    assert rc(fresh, pc.ticket(other.handle, timeout, b"", b"", key.name, ticket)) == TPM_RC.TICKET | P(5)


# --- PolicySecret ------------------------------------------------------------------------------


def test_policy_secret_with_cp_hash_and_ticket(tpm):
    params = clock_set(tpm)
    cp = digest(SHA256, u32(TPM_CC.ClockSet) + OWNER[1] + params)
    expected = pc.update(SHA256, ZERO, TPM_CC.PolicySecret, OWNER[1], b"")
    set_owner_policy(tpm, expected)
    session = policy_session(tpm)
    resp = ok(tpm, pc.secret(session.handle, TPM_RH.OWNER, session.nonce_tpm, cp, b"", -60))
    body = resp.params()
    timeout, ticket = body[2:10], body[10:]
    assert ticket[:6] == u16(pc.ST_AUTH_SECRET) + u32(TPM_RH.OWNER)
    assert current_digest(tpm, session) == expected
    # cpHashA binds the authorization to this ClockSet only.
    assert as_owner(tpm, session, clock_set(tpm, 20_000)) == TPM_RC.POLICY_FAIL | S(1)
    assert as_owner(tpm, session, params) == 0
    other = policy_session(tpm)
    assert rc(tpm, pc.ticket(other.handle, timeout, cp, b"", OWNER[1], ticket)) == 0
    assert as_owner(tpm, other, params) == 0
    # A second, different cpHash: TPM_RC_CPHASH.
    ok(tpm, pc.policy(TPM_CC.PolicyCpHash, other.handle, tpm2b(cp)))
    assert rc(tpm, pc.secret(other.handle, TPM_RH.OWNER, b"", bytes(32))) == TPM_RC.CPHASH


def test_policy_secret_errors(tpm):
    session = policy_session(tpm)
    assert rc(tpm, pc.secret(session.handle, TPM_RH.OWNER, bytes(16))) == TPM_RC.NONCE | P(1)
    assert rc(tpm, pc.secret(session.handle, TPM_RH.OWNER, auth=b"wrong")) == TPM_RC.BAD_AUTH | S(1)
    # Authorizing PolicySecret with a policy that does not prove the authValue: TPM_RC_MODE.
    cc_only = pc.extend(SHA256, ZERO, TPM_CC.PolicyCommandCode, u32(TPM_CC.PolicySecret))
    set_owner_policy(tpm, cc_only)
    inner = policy_session(tpm)
    ok(tpm, pc.policy(TPM_CC.PolicyCommandCode, inner.handle, u32(TPM_CC.PolicySecret)))
    body = pc.authorization_params(b"", b"", b"", 0)
    uses = [Use(inner, CONTINUE, OWNER[1], include_auth=False)]
    target = (session.handle, u32(session.handle))
    assert run(tpm.execute, TPM_CC.PolicySecret, [OWNER, target], body, uses).rc == TPM_RC.MODE | S(1)


# --- PolicyAuthorize / PolicyAuthorizeNV ----------------------------------------------------


def verify_ticket(tpm, key: ExternalKey, approved: bytes, ref: bytes) -> bytes:
    a_hash = digest(SHA256, approved + ref)
    resp = ok(tpm, command(TPM_CC.VerifySignature, tpm2b(a_hash) + key.sign(approved + ref), u32(key.handle)))
    return resp.params()


def test_policy_authorize(tpm, key):
    approved = pc.extend(SHA256, ZERO, TPM_CC.PolicyCommandCode, u32(TPM_CC.ClockSet))
    authorized = pc.update(SHA256, ZERO, TPM_CC.PolicyAuthorize, key.name, b"ref")
    set_owner_policy(tpm, authorized)
    check = verify_ticket(tpm, key, approved, b"ref")
    session = policy_session(tpm)
    cmd = pc.authorize(session.handle, approved, b"ref", key.name, check)
    assert rc(tpm, cmd) == TPM_RC.VALUE | P(1)  # the approved policy has not been run yet
    ok(tpm, pc.policy(TPM_CC.PolicyCommandCode, session.handle, u32(TPM_CC.ClockSet)))
    assert rc(tpm, pc.authorize(session.handle, approved, b"ref", key.name, pc.null_verified_ticket())) == (
        TPM_RC.VALUE | P(4)
    )
    assert rc(tpm, pc.authorize(session.handle, approved, b"other", key.name, check)) == TPM_RC.VALUE | P(4)
    assert rc(tpm, pc.authorize(session.handle, approved, b"ref", b"\x00", check)) == TPM_RC.HASH | P(3)
    assert rc(tpm, pc.authorize(session.handle, approved, b"ref", u16(0x0099) + ZERO, check)) == TPM_RC.HASH | P(3)
    ok(tpm, cmd)
    assert current_digest(tpm, session) == authorized
    assert as_owner(tpm, session) == 0


def define_index(tpm, attrs: int, size: int, policy: bytes = b"", index: int = INDEX) -> bytes:
    public = u32(index) + u16(SHA256) + u32(attrs) + tpm2b(policy) + u16(size)
    ok(tpm, command(TPM_CC.NV_DefineSpace, tpm2b(b"") + tpm2b(public), u32(TPM_RH.OWNER), b""))
    return nv_name(tpm, index)


def nv_name(tpm, index: int = INDEX) -> bytes:
    raw = ok(tpm, command(TPM_CC.NV_ReadPublic, b"", u32(index))).raw
    size = int.from_bytes(raw[10:12], "big")
    name_at = 12 + size
    return raw[name_at + 2 : name_at + 2 + int.from_bytes(raw[name_at : name_at + 2], "big")]


def nv_write(tpm, data: bytes, offset: int = 0, index: int = INDEX) -> int:
    return rc(tpm, command(TPM_CC.NV_Write, tpm2b(data) + u16(offset), u32(index) + u32(index), b""))


AUTH_RW = TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE


def test_policy_authorize_nv(tpm):
    approved = pc.extend(SHA256, ZERO, TPM_CC.PolicyCommandCode, u32(TPM_CC.ClockSet))
    define_index(tpm, AUTH_RW, 34)
    name = nv_name(tpm)
    session = policy_session(tpm)
    ok(tpm, pc.policy(TPM_CC.PolicyCommandCode, session.handle, u32(TPM_CC.ClockSet)))
    assert rc(tpm, pc.authorize_nv(session.handle, INDEX)) == TPM_RC.NV_UNINITIALIZED
    assert nv_write(tpm, u16(SHA256) + ZERO) == 0
    name = nv_name(tpm)  # WRITTEN is part of the Name
    assert rc(tpm, pc.authorize_nv(session.handle, INDEX)) == TPM_RC.VALUE
    assert nv_write(tpm, u16(TPM_ALG.SHA1) + approved) == 0
    assert rc(tpm, pc.authorize_nv(session.handle, INDEX)) == TPM_RC.HASH | H(2)
    assert nv_write(tpm, u16(SHA256) + approved) == 0
    authorized = pc.extend(SHA256, ZERO, TPM_CC.PolicyAuthorizeNV, name)
    set_owner_policy(tpm, authorized)
    ok(tpm, pc.authorize_nv(session.handle, INDEX))
    assert current_digest(tpm, session) == authorized
    assert as_owner(tpm, session) == 0


# --- PolicyNV, PolicyCounterTimer, PolicyCapability -------------------------------------------


def test_policy_nv_comparisons(tpm):
    define_index(tpm, AUTH_RW, 8)
    session = policy_session(tpm)
    assert rc(tpm, pc.nv(session.handle, INDEX, b"\x05", 0, TPM_EO.EQ)) == TPM_RC.NV_UNINITIALIZED
    assert nv_write(tpm, bytes([0x00, 0x10, 0xF0, 0x80, 0, 0, 0, 0])) == 0
    name = nv_name(tpm)
    cases = [
        (b"\x00\x10", 0, TPM_EO.EQ, True),
        (b"\x00\x11", 0, TPM_EO.NEQ, True),
        (b"\x0f", 1, TPM_EO.UNSIGNED_GT, True),
        (b"\x7f", 3, TPM_EO.SIGNED_LT, True),  # 0x80 is -128
        (b"\x7f", 3, TPM_EO.UNSIGNED_GT, True),
        (b"\xf0", 2, TPM_EO.UNSIGNED_GE, True),
        (b"\xf0", 2, TPM_EO.SIGNED_LE, True),
        (b"\x30", 2, TPM_EO.BITSET, True),
        (b"\x0f", 2, TPM_EO.BITCLEAR, True),
        (b"\x01", 2, TPM_EO.BITSET, False),
        (b"\x00\x10", 0, TPM_EO.NEQ, False),
        (b"\x80", 3, TPM_EO.SIGNED_GT, False),
    ]
    for operand, offset, operation, holds in cases:
        flush(tpm, session)
        session = policy_session(tpm)
        want = 0 if holds else TPM_RC.POLICY
        assert rc(tpm, pc.nv(session.handle, INDEX, operand, offset, operation)) == want, (operand, operation)
    assert rc(tpm, pc.nv(session.handle, INDEX, b"\x00", 9, TPM_EO.EQ)) == TPM_RC.VALUE | P(2)
    assert rc(tpm, pc.nv(session.handle, INDEX, bytes(4), 6, TPM_EO.EQ)) == TPM_RC.SIZE | P(1)
    assert rc(tpm, pc.nv(session.handle, INDEX, b"\x00", 0, 0x0C)) == TPM_RC.VALUE | P(3)
    # Authorize ClockSet by the index's contents.
    flush(tpm, session)
    operand = b"\x00\x10"
    expected = pc.extend(SHA256, ZERO, TPM_CC.PolicyNV, pc.args_digest(SHA256, operand, 0, TPM_EO.EQ), name)
    set_owner_policy(tpm, expected)
    session = policy_session(tpm)
    ok(tpm, pc.nv(session.handle, INDEX, operand, 0, TPM_EO.EQ))
    assert current_digest(tpm, session) == expected
    assert as_owner(tpm, session) == 0


def test_policy_counter_timer(tpm, clock):
    # TPMS_TIME_INFO: time (0-7), clock (8-15), resetCount, restartCount, safe.
    operand = (tpm.clock() + 60_000).to_bytes(8, "big")
    expected = pc.extend(
        SHA256, ZERO, TPM_CC.PolicyCounterTimer, pc.args_digest(SHA256, operand, 8, TPM_EO.UNSIGNED_LT)
    )
    set_owner_policy(tpm, expected)
    session = policy_session(tpm)
    assert rc(tpm, pc.counter_timer(session.handle, operand, 8, TPM_EO.UNSIGNED_LT)) == 0
    assert current_digest(tpm, session) == expected
    assert as_owner(tpm, session) == 0
    clock.ms += 120_000
    assert rc(tpm, pc.counter_timer(session.handle, operand, 8, TPM_EO.UNSIGNED_LT)) == TPM_RC.POLICY
    assert rc(tpm, pc.counter_timer(session.handle, operand, 20, TPM_EO.EQ)) == TPM_RC.RANGE
    assert rc(tpm, pc.counter_timer(session.handle, b"\x00", 26, TPM_EO.EQ)) == TPM_RC.VALUE | P(2)


def test_policy_capability(tpm):
    policy_cc = u32(TPM_CC.PolicyCapability)
    session = policy_session(tpm)
    # TPM_CAP_COMMANDS lists TPMA_CC, whose low 16 bits are the command index.
    cmd = pc.capability(session.handle, policy_cc[2:], 2, TPM_EO.EQ, TPM_CAP.COMMANDS, TPM_CC.PolicyCapability)
    ok(tpm, cmd)
    more = u32(TPM_CAP.COMMANDS) + u32(TPM_CC.PolicyCapability)
    assert current_digest(tpm, session) == pc.extend(
        SHA256, ZERO, TPM_CC.PolicyCapability, pc.args_digest(SHA256, policy_cc[2:], 2, TPM_EO.EQ, more)
    )
    # No such handle: only NEQ holds.
    absent = pc.capability(session.handle, b"", 0, TPM_EO.EQ, TPM_CAP.HANDLES, 0x81000099)
    assert rc(tpm, absent) == TPM_RC.POLICY
    ok(tpm, pc.capability(session.handle, b"", 0, TPM_EO.NEQ, TPM_CAP.HANDLES, 0x81000099))
    ok(tpm, pc.capability(session.handle, u32(TPM_RH.OWNER), 0, TPM_EO.EQ, TPM_CAP.HANDLES, TPM_RH.OWNER))
    assert rc(tpm, pc.capability(session.handle, b"", 0, TPM_EO.EQ, TPM_CAP.PCRS, 0)) == TPM_RC.VALUE | P(4)
    assert rc(tpm, pc.capability(session.handle, b"", 0, TPM_EO.EQ, TPM_CAP.HANDLES, 0x7F000000)) == (
        TPM_RC.HANDLE | P(5)
    )
    too_long = pc.capability(session.handle, bytes(8), 0, TPM_EO.EQ, TPM_CAP.HANDLES, TPM_RH.OWNER)
    assert rc(tpm, too_long) == TPM_RC.SIZE | P(1)


# --- digests of the command: cpHash, nameHash, templateHash, pHash ---------------------------


def test_policy_cp_hash(tpm):
    params = clock_set(tpm)
    cp = digest(SHA256, u32(TPM_CC.ClockSet) + OWNER[1] + params)
    expected = pc.extend(SHA256, ZERO, TPM_CC.PolicyCpHash, cp)
    set_owner_policy(tpm, expected)
    session = policy_session(tpm)
    assert rc(tpm, pc.policy(TPM_CC.PolicyCpHash, session.handle, tpm2b(cp[:20]))) == TPM_RC.SIZE | P(1)
    ok(tpm, pc.policy(TPM_CC.PolicyCpHash, session.handle, tpm2b(cp)))
    assert rc(tpm, pc.policy(TPM_CC.PolicyCpHash, session.handle, tpm2b(ZERO))) == TPM_RC.CPHASH
    assert rc(tpm, pc.policy(TPM_CC.PolicyNameHash, session.handle, tpm2b(ZERO))) == TPM_RC.CPHASH
    assert current_digest(tpm, session) == expected
    # A failed authorization leaves the session as it was.
    assert as_owner(tpm, session, clock_set(tpm, 30_000)) == TPM_RC.POLICY_FAIL | S(1)
    assert as_owner(tpm, session, params) == 0


def test_policy_cp_hash_survives_context_save(tpm):
    params = clock_set(tpm)
    cp = digest(SHA256, u32(TPM_CC.ClockSet) + OWNER[1] + params)
    set_owner_policy(tpm, pc.extend(SHA256, ZERO, TPM_CC.PolicyCpHash, cp))
    session = policy_session(tpm)
    ok(tpm, pc.policy(TPM_CC.PolicyCpHash, session.handle, tpm2b(cp)))
    saved = ok(tpm, command(TPM_CC.ContextSave, b"", u32(session.handle))).params()
    ok(tpm, command(TPM_CC.ContextLoad, saved))
    assert as_owner(tpm, session, clock_set(tpm, 30_000)) == TPM_RC.POLICY_FAIL | S(1)
    saved = ok(tpm, command(TPM_CC.ContextSave, b"", u32(session.handle))).params()
    ok(tpm, command(TPM_CC.ContextLoad, saved))
    assert as_owner(tpm, session, params) == 0


def test_policy_name_hash(tpm):
    name_hash = digest(SHA256, OWNER[1])
    expected = pc.extend(SHA256, ZERO, TPM_CC.PolicyNameHash, name_hash)
    set_owner_policy(tpm, expected)
    session = policy_session(tpm)
    ok(tpm, pc.policy(TPM_CC.PolicyNameHash, session.handle, tpm2b(name_hash)))
    assert rc(tpm, pc.policy(TPM_CC.PolicyNameHash, session.handle, tpm2b(name_hash))) == TPM_RC.CPHASH
    assert as_owner(tpm, session) == 0
    # A nameHash of other handles fails at use.
    session = policy_session(tpm)
    ok(tpm, pc.policy(TPM_CC.PolicyNameHash, session.handle, tpm2b(digest(SHA256, u32(TPM_RH.PLATFORM)))))
    assert as_owner(tpm, session) == TPM_RC.POLICY_FAIL | S(1)


def test_policy_template_binds_create_primary(tpm):
    template = rsa_template(bits=2048)
    template_hash = digest(SHA256, T.TPMT_PUBLIC.pack(template))
    expected = pc.extend(SHA256, ZERO, TPM_CC.PolicyTemplate, template_hash)
    set_owner_policy(tpm, expected)
    session = policy_session(tpm)
    assert rc(tpm, pc.policy(TPM_CC.PolicyTemplate, session.handle, tpm2b(b"\x01"))) == TPM_RC.SIZE | P(1)
    ok(tpm, pc.policy(TPM_CC.PolicyTemplate, session.handle, tpm2b(template_hash)))
    # Another template digest: TPM_RC_VALUE at templateHash, as libtpms (tests/support/differential.py);
    # TPM_RC_CPHASH is for a session bound to another kind of command digest.
    assert rc(tpm, pc.policy(TPM_CC.PolicyTemplate, session.handle, tpm2b(ZERO))) == TPM_RC.VALUE | P(1)
    assert rc(tpm, pc.policy(TPM_CC.PolicyCpHash, session.handle, tpm2b(ZERO))) == TPM_RC.CPHASH
    assert current_digest(tpm, session) == expected
    other = creation_params(rsa_template(bits=2048, sym=NO_SYM, attrs=SIGN | USER_WITH_AUTH))
    assert as_owner(tpm, session, other, TPM_CC.CreatePrimary) == TPM_RC.POLICY_FAIL | S(1)
    assert as_owner(tpm, session) == TPM_RC.POLICY_FAIL | S(1)  # ClockSet has no template
    result = run(
        tpm.execute,
        TPM_CC.CreatePrimary,
        [OWNER],
        creation_params(template),
        [Use(session, CONTINUE, OWNER[1], include_auth=False)],
        response_handles=1,
    )
    assert result.rc == 0


def test_policy_parameters(tpm):
    params = clock_set(tpm)
    p_hash = digest(SHA256, u32(TPM_CC.ClockSet) + params)
    expected = pc.extend(SHA256, ZERO, TPM_CC.PolicyParameters, p_hash)
    set_owner_policy(tpm, expected)
    session = policy_session(tpm)
    assert rc(tpm, pc.policy(TPM_CC.PolicyParameters, session.handle, tpm2b(b"xx"))) == TPM_RC.SIZE | P(1)
    ok(tpm, pc.policy(TPM_CC.PolicyParameters, session.handle, tpm2b(p_hash)))
    assert rc(tpm, pc.policy(TPM_CC.PolicyCpHash, session.handle, tpm2b(p_hash))) == TPM_RC.CPHASH
    assert current_digest(tpm, session) == expected
    assert as_owner(tpm, session, clock_set(tpm, 40_000)) == TPM_RC.POLICY_FAIL | S(1)
    assert as_owner(tpm, session, params) == 0


def test_policy_duplication_select_digest_and_checks(tpm):
    obj, parent = u16(SHA256) + bytes(range(32)), u16(SHA256) + bytes(range(32, 64))
    for include in (0, 1):
        trial = start_session(tpm.execute, SE_TRIAL)
        ok(tpm, pc.duplication_select(trial.handle, obj, parent, include))
        named = obj if include else b""
        assert current_digest(tpm, trial) == pc.extend(
            SHA256, ZERO, TPM_CC.PolicyDuplicationSelect, named, parent, bytes([include])
        )
        flush(tpm, trial)
    session = policy_session(tpm)
    ok(tpm, pc.policy(TPM_CC.PolicyCommandCode, session.handle, u32(TPM_CC.ClockSet)))
    assert rc(tpm, pc.duplication_select(session.handle, obj, parent, 1)) == TPM_RC.COMMAND_CODE
    flush(tpm, session)
    session = policy_session(tpm)
    ok(tpm, pc.duplication_select(session.handle, obj, parent, 0))
    # It sets the command to TPM2_Duplicate.
    assert rc(tpm, pc.policy(TPM_CC.PolicyCommandCode, session.handle, u32(TPM_CC.ClockSet))) == TPM_RC.VALUE | P(1)
    assert rc(tpm, pc.duplication_select(session.handle, obj, parent, 0)) == TPM_RC.CPHASH


# --- PolicyPhysicalPresence, PolicyNvWritten ------------------------------------------------


def test_policy_physical_presence(tpm):
    expected = pc.extend(SHA256, ZERO, TPM_CC.PolicyPhysicalPresence)
    set_owner_policy(tpm, expected)
    session = policy_session(tpm)
    ok(tpm, pc.policy(TPM_CC.PolicyPhysicalPresence, session.handle))
    assert current_digest(tpm, session) == expected
    tpm.engine.physical_presence = False
    assert as_owner(tpm, session) == TPM_RC.PP | S(1)
    tpm.engine.physical_presence = True
    assert as_owner(tpm, session) == 0


def test_policy_nv_written_allows_one_first_write(tpm):
    """An index whose policy says "not written yet" can be written once by that policy."""
    nv_policy = pc.extend(
        SHA256,
        pc.extend(SHA256, ZERO, TPM_CC.PolicyNvWritten, b"\x00"),
        TPM_CC.PolicyCommandCode,
        u32(TPM_CC.NV_Write),
    )
    define_index(tpm, TPMA_NV.POLICYWRITE | TPMA_NV.AUTHREAD, 4, nv_policy)

    def write_by_policy(data: bytes) -> int:
        session = policy_session(tpm)
        ok(tpm, pc.policy(TPM_CC.PolicyNvWritten, session.handle, b"\x00"))
        assert rc(tpm, pc.policy(TPM_CC.PolicyNvWritten, session.handle, b"\x01")) == TPM_RC.VALUE | P(1)
        ok(tpm, pc.policy(TPM_CC.PolicyCommandCode, session.handle, u32(TPM_CC.NV_Write)))
        name = nv_name(tpm)
        uses = [Use(session, CONTINUE, name, include_auth=False)]
        return run(tpm.execute, TPM_CC.NV_Write, [(INDEX, name), (INDEX, name)], tpm2b(data) + u16(0), uses).rc

    assert write_by_policy(b"once") == 0
    assert write_by_policy(b"again") == TPM_RC.POLICY_FAIL | S(1)
    # And used for an entity that is no NV index it fails too.
    set_owner_policy(tpm, pc.extend(SHA256, ZERO, TPM_CC.PolicyNvWritten, b"\x01"))
    session = policy_session(tpm)
    ok(tpm, pc.policy(TPM_CC.PolicyNvWritten, session.handle, b"\x01"))
    assert as_owner(tpm, session) == TPM_RC.POLICY_FAIL | S(1)


# --- the session's recorded conditions survive a context save and a state snapshot -----------


def test_policy_state_survives_context_save(tpm, clock, key):
    """PolicyPhysicalPresence and a PolicySigned time limit are still required after
    ContextSave / ContextLoad of the session."""
    expected = pc.extend(
        SHA256, pc.update(SHA256, ZERO, TPM_CC.PolicySigned, key.name, b""), TPM_CC.PolicyPhysicalPresence
    )
    set_owner_policy(tpm, expected)
    session = policy_session(tpm)
    assert policy_signed(tpm, key, session, expiration=30).rc == 0
    ok(tpm, pc.policy(TPM_CC.PolicyPhysicalPresence, session.handle))
    saved = ok(tpm, command(TPM_CC.ContextSave, b"", u32(session.handle))).params()
    ok(tpm, command(TPM_CC.ContextLoad, saved))
    tpm.engine.physical_presence = False
    assert as_owner(tpm, session) == TPM_RC.PP | S(1)
    tpm.engine.physical_presence = True
    clock.ms += 31_000
    assert as_owner(tpm, session) == TPM_RC.EXPIRED | S(1)


def test_policy_state_survives_a_state_snapshot(tpm):
    params = clock_set(tpm)
    cp = digest(SHA256, u32(TPM_CC.ClockSet) + OWNER[1] + params)
    set_owner_policy(tpm, pc.extend(SHA256, ZERO, TPM_CC.PolicyCpHash, cp))
    session = policy_session(tpm)
    ok(tpm, pc.policy(TPM_CC.PolicyCpHash, session.handle, tpm2b(cp)))
    restored = EngineOracle(Engine.from_blobs(tpm.permanent_blob(), tpm.volatile_blob()))
    assert as_owner(restored, session, clock_set(restored, 50_000)) == TPM_RC.POLICY_FAIL | S(1)
    assert as_owner(restored, session, params) == 0


def test_policy_capability_authorizes(tpm):
    """The owner may set the clock while TPM2_PolicyCapability is implemented."""
    operand = u32(TPM_CC.PolicyCapability)[2:]
    more = u32(TPM_CAP.COMMANDS) + u32(TPM_CC.PolicyCapability)
    args = pc.args_digest(SHA256, operand, 2, TPM_EO.EQ, more)
    set_owner_policy(tpm, pc.extend(SHA256, ZERO, TPM_CC.PolicyCapability, args))
    session = policy_session(tpm)
    ok(tpm, pc.capability(session.handle, operand, 2, TPM_EO.EQ, TPM_CAP.COMMANDS, TPM_CC.PolicyCapability))
    assert as_owner(tpm, session) == 0


def test_policy_secret_of_a_pin_pass_index_gives_no_ticket(tpm):
    """Each use of a PIN Pass index is counted, so PolicySecret does not hand out a ticket for it."""
    attrs = TPMA_NV.OWNERREAD | TPMA_NV.OWNERWRITE | TPMA_NV.AUTHREAD | TPMA_NV.NO_DA | (0x9 << 4)  # TPM_NT_PIN_PASS
    public = u32(INDEX) + u16(SHA256) + u32(attrs) + tpm2b(b"") + u16(8)
    ok(tpm, command(TPM_CC.NV_DefineSpace, tpm2b(b"pin") + tpm2b(public), u32(TPM_RH.OWNER), b""))
    ok(tpm, command(TPM_CC.NV_Write, tpm2b(u32(0) + u32(5)) + u16(0), u32(TPM_RH.OWNER) + u32(INDEX), b""))
    session = policy_session(tpm)
    resp = ok(tpm, pc.secret(session.handle, INDEX, session.nonce_tpm, expiration=-60, auth=b"pin"))
    assert resp.params() == tpm2b(b"") + u16(pc.ST_AUTH_SECRET) + u32(TPM_RH.NULL) + tpm2b(b"")
    data = ok(tpm, command(TPM_CC.NV_Read, u16(8) + u16(0), u32(TPM_RH.OWNER) + u32(INDEX), b"")).params()
    assert data == tpm2b(u32(1) + u32(5))  # the use was counted
