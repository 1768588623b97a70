"""The Enhanced Authorization commands against Debian's swtpm (libtpms) and our engine with
the same command bytes: the policy digests of trial sessions byte for byte, and the response
codes of the main bad inputs in real policy sessions.

Both TPMs get the same state: a P-256 public key loaded by TPM2_LoadExternal (from a fixed
scalar, so its Name is the same) and an NV index with the same public area and data.
TPM2_PolicyCapability and TPM2_PolicyParameters (TPM 2.0 Library 1.83) are not in
Debian's libtpms 0.9 and are checked in tests/test_tpm_policy.py instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from support import policy_commands as pc
from support.engine_oracle import EngineOracle
from support.policy_commands import ExternalKey
from support.session_client import CONTINUE, SE_POLICY, SE_TRIAL, SHA1, SHA256, SHA384, Use, digest, run
from support.session_client import start_session as client_start_session
from support.swtpm_oracle import SwtpmOracle
from support.tpm_client import command, tpm2b, u16, u32
from vtpm_cuse.tpm.constants import TPM_CC, TPM_EO, TPM_RH, TPMA_NV
from vtpm_cuse.tpm.engine import Engine

pytestmark = pytest.mark.swtpm

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
INDEX = 0x01500030
NV_DATA = bytes([0x00, 0x0B]) + bytes(range(32))  # a TPMT_HA, as PolicyAuthorizeNV reads it
KEY_SCALAR = 0x5EED_0000_1111_2222_3333_4444_5555_6666_7777_8888_9999_AAAA_BBBB_CCCC_DDDD_EEEE
OBJECT_NAME, PARENT_NAME = u16(SHA256) + bytes(range(32)), u16(SHA256) + bytes(range(32, 64))


@dataclasses.dataclass
class Tpm:
    """One of the two TPMs and the handles of what the test put in it."""

    execute: Callable[[bytes], bytes]
    key: ExternalKey


def rc(raw: bytes) -> int:
    return int.from_bytes(raw[6:10], "big")


def prepare(execute: Callable[[bytes], bytes]) -> Tpm:
    assert rc(execute(STARTUP_CLEAR)) == 0
    key = ExternalKey(execute, scalar=KEY_SCALAR)
    attrs = TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE
    public = u32(INDEX) + u16(SHA256) + u32(attrs) + tpm2b(b"") + u16(len(NV_DATA))
    assert rc(execute(command(TPM_CC.NV_DefineSpace, tpm2b(b"") + tpm2b(public), u32(TPM_RH.OWNER), b""))) == 0
    handles = u32(INDEX) + u32(INDEX)
    assert rc(execute(command(TPM_CC.NV_Write, tpm2b(NV_DATA) + u16(0), handles, b""))) == 0
    return Tpm(execute, key)


@pytest.fixture(scope="module")
def pair():
    oracle = SwtpmOracle()
    try:
        oracle.init()
        yield prepare(oracle.execute), prepare(EngineOracle(Engine()).execute)
    finally:
        oracle.close()


def in_session(tpm: Tpm, kind: int, alg: int, build: Callable[[Tpm, object], bytes]) -> tuple[int, bytes]:
    """Start a session, run ``build``'s command in it; the response code and the policyDigest."""
    session = client_start_session(tpm.execute, kind, alg)
    try:
        code = rc(tpm.execute(build(tpm, session)))
        resp = tpm.execute(pc.get_digest(session.handle))
        assert rc(resp) == 0
        return code, resp[12:]
    finally:
        assert rc(tpm.execute(command(TPM_CC.FlushContext, u32(session.handle)))) == 0


def nv_name(tpm: Tpm) -> bytes:
    raw = tpm.execute(command(TPM_CC.NV_ReadPublic, b"", u32(INDEX)))
    at = 12 + int.from_bytes(raw[10:12], "big")
    return raw[at + 2 : at + 2 + int.from_bytes(raw[at : at + 2], "big")]


# --- trial sessions: the digests -------------------------------------------------------------

SIG = pc.ecdsa_signature(SHA256, b"\x01" * 32, b"\x02" * 32)  # not checked in a trial session
TRIAL_CASES: dict[str, Callable[[Tpm, object], bytes]] = {
    "PolicySigned": lambda t, s: pc.signed(s.handle, t.key.handle, b"", b"", b"ref", 0, SIG),
    "PolicySigned/cpHash": lambda t, s: pc.signed(s.handle, t.key.handle, b"", bytes(s_size(s)), b"", -5, SIG),
    "PolicySecret": lambda t, s: pc.secret(s.handle, TPM_RH.OWNER, ref=b"policy ref"),
    "PolicySecret/nv": lambda t, s: pc.secret(s.handle, INDEX),
    "PolicyAuthorize": lambda t, s: pc.authorize(s.handle, b"", b"r", t.key.name, pc.null_verified_ticket()),
    "PolicyAuthorizeNV": lambda t, s: pc.authorize_nv(s.handle, INDEX),
    "PolicyNV": lambda t, s: pc.nv(s.handle, INDEX, b"\x00\x0b", 0, TPM_EO.EQ),
    "PolicyNV/bits": lambda t, s: pc.nv(s.handle, INDEX, b"\x05", 7, TPM_EO.BITSET),
    "PolicyCounterTimer": lambda t, s: pc.counter_timer(s.handle, bytes(8), 8, TPM_EO.UNSIGNED_GT),
    "PolicyCpHash": lambda t, s: pc.policy(TPM_CC.PolicyCpHash, s.handle, tpm2b(b"\x11" * s_size(s))),
    "PolicyNameHash": lambda t, s: pc.policy(TPM_CC.PolicyNameHash, s.handle, tpm2b(b"\x22" * s_size(s))),
    "PolicyTemplate": lambda t, s: pc.policy(TPM_CC.PolicyTemplate, s.handle, tpm2b(b"\x33" * s_size(s))),
    "PolicyDuplicationSelect/0": lambda t, s: pc.duplication_select(s.handle, OBJECT_NAME, PARENT_NAME, 0),
    "PolicyDuplicationSelect/1": lambda t, s: pc.duplication_select(s.handle, OBJECT_NAME, PARENT_NAME, 1),
    "PolicyPhysicalPresence": lambda t, s: pc.policy(TPM_CC.PolicyPhysicalPresence, s.handle),
    "PolicyNvWritten/0": lambda t, s: pc.policy(TPM_CC.PolicyNvWritten, s.handle, b"\x00"),
    "PolicyNvWritten/1": lambda t, s: pc.policy(TPM_CC.PolicyNvWritten, s.handle, b"\x01"),
    "PolicyTicket": lambda t, s: pc.ticket(s.handle, bytes(8), b"", b"", t.key.name, ticket_bytes()),
    # A trial session records PolicySigned's cpHashA, so another cpHash is TPM_RC_CPHASH.
    "PolicySigned/cpHash then PolicyCpHash": lambda t, s: twice(
        lambda t, s: pc.signed(s.handle, t.key.handle, b"", b"\x11" * s_size(s), b"", 0, SIG),
        lambda t, s: pc.policy(TPM_CC.PolicyCpHash, s.handle, tpm2b(b"\x22" * s_size(s))),
    )(t, s),
}


def s_size(session) -> int:
    return {SHA1: 20, SHA256: 32, SHA384: 48}[session.auth_hash]


def ticket_bytes(hierarchy: int = TPM_RH.OWNER) -> bytes:
    return u16(pc.ST_AUTH_SIGNED) + u32(hierarchy) + tpm2b(bytes(64))


@pytest.mark.parametrize("alg", [SHA256, SHA1, SHA384], ids=["sha256", "sha1", "sha384"])
@pytest.mark.parametrize("case", sorted(TRIAL_CASES))
def test_trial_digest_matches_libtpms(pair, case, alg):
    theirs, ours = (in_session(tpm, SE_TRIAL, alg, TRIAL_CASES[case]) for tpm in pair)
    assert ours == theirs, f"{case}: swtpm rc 0x{theirs[0]:x} {theirs[1].hex()}, ours rc 0x{ours[0]:x} {ours[1].hex()}"


# --- real sessions: response codes of bad inputs ---------------------------------------------


def twice(first: Callable[[Tpm, object], bytes], second: Callable[[Tpm, object], bytes]):
    """Run ``first`` (it must succeed), then answer ``second``'s command."""

    def build(tpm: Tpm, session) -> bytes:
        assert rc(tpm.execute(first(tpm, session))) == 0
        return second(tpm, session)

    return build


def other_signature(tpm: Tpm, session) -> bytes:
    return pc.signed(session.handle, tpm.key.handle, b"", b"", b"", 0, tpm.key.sign(b"not these parameters"))


CP_HASH = lambda t, s: pc.policy(TPM_CC.PolicyCpHash, s.handle, tpm2b(b"\x11" * 32))  # noqa: E731
ERROR_CASES: dict[str, Callable[[Tpm, object], bytes]] = {
    "signed/nonce": lambda t, s: pc.signed(s.handle, t.key.handle, bytes(len(s.nonce_tpm)), b"", b"", 0, SIG),
    "signed/signature": other_signature,
    "signed/cpHash size": lambda t, s: pc.signed(s.handle, t.key.handle, b"", b"\x01", b"", 0, SIG),
    "signed/null scheme": lambda t, s: pc.signed(s.handle, t.key.handle, b"", b"", b"", 0, u16(0x0010)),
    "secret/nonce": lambda t, s: pc.secret(s.handle, TPM_RH.OWNER, bytes(len(s.nonce_tpm))),
    "secret/bad auth": lambda t, s: pc.secret(s.handle, TPM_RH.OWNER, auth=b"wrong"),
    "ticket/forged": lambda t, s: pc.ticket(s.handle, bytes(8), b"", b"", t.key.name, ticket_bytes()),
    "ticket/timeout size": lambda t, s: pc.ticket(s.handle, bytes(4), b"", b"", t.key.name, ticket_bytes()),
    "ticket/tag": lambda t, s: pc.ticket(s.handle, bytes(8), b"", b"", t.key.name, u16(0x8022) + ticket_bytes()[2:]),
    "authorize/approved": lambda t, s: pc.authorize(s.handle, b"\x01" * 32, b"", t.key.name, pc.null_verified_ticket()),
    "authorize/ticket": lambda t, s: pc.authorize(s.handle, bytes(32), b"", t.key.name, pc.null_verified_ticket()),
    "authorize/keySign short": lambda t, s: pc.authorize(s.handle, bytes(32), b"", b"\x00", pc.null_verified_ticket()),
    "authorize/keySign hash": lambda t, s: pc.authorize(
        s.handle, bytes(32), b"", u16(0x0099) + bytes(32), pc.null_verified_ticket()
    ),
    "authorize/keySign size": lambda t, s: pc.authorize(
        s.handle, bytes(32), b"", u16(SHA256) + bytes(20), pc.null_verified_ticket()
    ),
    "authorizeNV/mismatch": lambda t, s: pc.authorize_nv(s.handle, INDEX),
    "nv/false": lambda t, s: pc.nv(s.handle, INDEX, b"\x00\x0c", 0, TPM_EO.EQ),
    "nv/unsigned gt": lambda t, s: pc.nv(s.handle, INDEX, b"\x00\x0a", 0, TPM_EO.UNSIGNED_GT),
    "nv/signed lt": lambda t, s: pc.nv(s.handle, INDEX, b"\x80", 5, TPM_EO.SIGNED_LT),
    "nv/offset": lambda t, s: pc.nv(s.handle, INDEX, b"\x00", 40, TPM_EO.EQ),
    "nv/operand size": lambda t, s: pc.nv(s.handle, INDEX, bytes(8), 30, TPM_EO.EQ),
    "nv/operation": lambda t, s: pc.nv(s.handle, INDEX, b"\x00", 0, 0x000C),
    "counterTimer/range": lambda t, s: pc.counter_timer(s.handle, bytes(8), 20, TPM_EO.EQ),
    "counterTimer/offset": lambda t, s: pc.counter_timer(s.handle, b"\x00", 26, TPM_EO.EQ),
    "counterTimer/false": lambda t, s: pc.counter_timer(s.handle, b"\xff" * 8, 8, TPM_EO.UNSIGNED_GT),
    "counterTimer/true": lambda t, s: pc.counter_timer(s.handle, bytes(8), 8, TPM_EO.UNSIGNED_GT),
    "cpHash/size": lambda t, s: pc.policy(TPM_CC.PolicyCpHash, s.handle, tpm2b(b"\x11" * 20)),
    "cpHash/twice": twice(CP_HASH, lambda t, s: pc.policy(TPM_CC.PolicyCpHash, s.handle, tpm2b(bytes(32)))),
    "cpHash/same twice": twice(CP_HASH, CP_HASH),
    "nameHash/after cpHash": twice(CP_HASH, lambda t, s: pc.policy(TPM_CC.PolicyNameHash, s.handle, tpm2b(bytes(32)))),
    "nameHash/size": lambda t, s: pc.policy(TPM_CC.PolicyNameHash, s.handle, tpm2b(bytes(31))),
    "template/size": lambda t, s: pc.policy(TPM_CC.PolicyTemplate, s.handle, tpm2b(bytes(31))),
    "template/after cpHash": twice(CP_HASH, lambda t, s: pc.policy(TPM_CC.PolicyTemplate, s.handle, tpm2b(bytes(32)))),
    "nvWritten/conflict": twice(
        lambda t, s: pc.policy(TPM_CC.PolicyNvWritten, s.handle, b"\x01"),
        lambda t, s: pc.policy(TPM_CC.PolicyNvWritten, s.handle, b"\x00"),
    ),
    "duplicationSelect/after commandCode": twice(
        lambda t, s: pc.policy(TPM_CC.PolicyCommandCode, s.handle, u32(TPM_CC.Duplicate)),
        lambda t, s: pc.duplication_select(s.handle, OBJECT_NAME, PARENT_NAME, 1),
    ),
    "duplicationSelect/after cpHash": twice(CP_HASH, lambda t, s: pc.duplication_select(s.handle, b"", b"", 0)),
    "commandCode/after duplicationSelect": twice(
        lambda t, s: pc.duplication_select(s.handle, OBJECT_NAME, PARENT_NAME, 0),
        lambda t, s: pc.policy(TPM_CC.PolicyCommandCode, s.handle, u32(TPM_CC.ClockSet)),
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_policy_session_errors_match_libtpms(pair, case):
    theirs, ours = (in_session(tpm, SE_POLICY, SHA256, ERROR_CASES[case]) for tpm in pair)
    assert ours == theirs, f"{case}: swtpm rc 0x{theirs[0]:x} {theirs[1].hex()}, ours rc 0x{ours[0]:x} {ours[1].hex()}"


def test_policy_signed_with_a_real_signature_matches_libtpms(pair):
    def build(tpm: Tpm, session) -> bytes:
        sig = tpm.key.sign(session.nonce_tpm + bytes(4) + b"" + b"ref")
        return pc.signed(session.handle, tpm.key.handle, session.nonce_tpm, b"", b"ref", 0, sig)

    theirs, ours = (in_session(tpm, SE_POLICY, SHA256, build) for tpm in pair)
    assert ours == theirs == (0, pc.update(SHA256, bytes(32), TPM_CC.PolicySigned, pair[0].key.name, b"ref"))


def test_authorize_nv_name_matches_libtpms(pair):
    theirs, ours = (nv_name(tpm) for tpm in pair)
    assert ours == theirs


# --- using the session: the checks at authorization ------------------------------------------


def use_for_clock_set(policy: bytes, assertion: Callable[[Tpm, object], bytes], params: bytes):
    """Set the owner's authPolicy, run ``assertion`` in a policy session and ClockSet with it."""

    def exchange(tpm: Tpm) -> int:
        set_policy = command(TPM_CC.SetPrimaryPolicy, tpm2b(policy) + u16(SHA256), u32(TPM_RH.OWNER), b"")
        assert rc(tpm.execute(set_policy)) == 0
        session = client_start_session(tpm.execute, SE_POLICY, SHA256)
        try:
            assert rc(tpm.execute(assertion(tpm, session))) == 0
            use = Use(session, CONTINUE, u32(TPM_RH.OWNER), include_auth=False)
            return run(tpm.execute, TPM_CC.ClockSet, [(TPM_RH.OWNER, u32(TPM_RH.OWNER))], params, [use]).rc
        finally:
            tpm.execute(command(TPM_CC.FlushContext, u32(session.handle)))

    return exchange


CLOCK = (1 << 40).to_bytes(8, "big")  # far ahead of both TPMs' Clock
CLOCK_CP = digest(SHA256, u32(TPM_CC.ClockSet) + u32(TPM_RH.OWNER) + CLOCK)
USE_CASES = {
    "cpHash/match": (CLOCK_CP, CLOCK),
    "cpHash/other parameters": (CLOCK_CP, (1 << 41).to_bytes(8, "big")),
    "nameHash/match": (digest(SHA256, u32(TPM_RH.OWNER)), CLOCK),
    "nameHash/other": (digest(SHA256, u32(TPM_RH.PLATFORM)), CLOCK),
}


@pytest.mark.parametrize("case", sorted(USE_CASES))
def test_bound_policy_use_matches_libtpms(pair, case):
    bound, params = USE_CASES[case]
    code = TPM_CC.PolicyCpHash if case.startswith("cpHash") else TPM_CC.PolicyNameHash
    policy = pc.extend(SHA256, bytes(32), code, bound)
    exchange = use_for_clock_set(policy, lambda t, s: pc.policy(code, s.handle, tpm2b(bound)), params)
    theirs, ours = (exchange(tpm) for tpm in pair)
    assert ours == theirs, f"{case}: swtpm 0x{theirs:x}, ours 0x{ours:x}"


def test_policy_secret_ticket_round_trip_matches_libtpms(pair):
    """Each TPM's own ticket: the same layout of timeout and ticket header, and it is accepted."""

    def exchange(tpm: Tpm) -> tuple:
        session = client_start_session(tpm.execute, SE_POLICY, SHA256)
        raw = tpm.execute(pc.secret(session.handle, TPM_RH.OWNER, session.nonce_tpm, b"", b"ref", -30))
        tpm.execute(command(TPM_CC.FlushContext, u32(session.handle)))
        assert rc(raw) == 0
        params = raw[14 : 14 + int.from_bytes(raw[10:14], "big")]
        timeout = params[2 : 2 + int.from_bytes(params[:2], "big")]
        ticket = params[2 + len(timeout) :]
        redeem = lambda t, s: pc.ticket(s.handle, timeout, b"", b"ref", u32(TPM_RH.OWNER), ticket)  # noqa: E731
        return len(timeout), ticket[:6], in_session(tpm, SE_POLICY, SHA256, redeem)

    theirs, ours = (exchange(tpm) for tpm in pair)
    assert ours == theirs
    assert ours[2] == (0, pc.update(SHA256, bytes(32), TPM_CC.PolicySecret, u32(TPM_RH.OWNER), b"ref"))
