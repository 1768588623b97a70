"""Dictionary-attack protection (Part 1, DA; Part 3, clause 25) through Engine.execute:
failedTries counting, lockout at maxTries, self-healing per recoveryTime on a fake clock,
the lockoutAuth lock, DictionaryAttackLockReset / DictionaryAttackParameters, the
TPM_PT_* properties, and the counter being on disk when the failing response returns.
"""

from __future__ import annotations

import pytest
import trio
from test_tpm_hierarchy import (
    N1,
    STARTUP_CLEAR,
    change_auth,
    clear,
    create_child,
    handle_of,
    ok,
    permanent_flags,
    primary,
    properties,
    rc,
)

from support.engine_oracle import EngineOracle
from support.object_templates import NO_DA, NO_SYM, SIGNING, ecc_template, load_cmd
from support.session_client import Use, start_session
from support.session_client import run as run_session
from support.tpm_client import command, tpm2b, u32
from vtpm_cuse.state import StateKind
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_CC, TPM_PT, TPM_RH, TPMA_PERMANENT
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_S, TPM_RC
from vtpm_cuse.tpm.marshal import Reader
from vtpm_cuse.tpm.state import BlobKind, deserialise
from vtpm_cuse.vtpm import Vtpm

SECOND = 1000


class FakeClock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * SECOND)


def lock_reset(pw: bytes = b"") -> bytes:
    return command(TPM_CC.DictionaryAttackLockReset, handles=u32(TPM_RH.LOCKOUT), auth=pw)


def parameters(max_tries: int, recovery: int, lockout_recovery: int, pw: bytes = b"") -> bytes:
    body = u32(max_tries) + u32(recovery) + u32(lockout_recovery)
    return command(TPM_CC.DictionaryAttackParameters, body, u32(TPM_RH.LOCKOUT), pw)


def auth_check(key: tuple[int, int, bytes], pw: bytes) -> bytes:
    """TPM2_ObjectChangeAuth of ``key``: an authorization of the key's authValue (ADMIN role,
    adminWithPolicy CLEAR) that changes nothing in the TPM -- the new blob is just returned."""
    handle, parent, _ = key
    return command(TPM_CC.ObjectChangeAuth, tpm2b(b"new"), u32(handle) + u32(parent), pw)


def da_counter(tpm) -> int:
    return properties(tpm, TPM_PT.LOCKOUT_COUNTER)[TPM_PT.LOCKOUT_COUNTER]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tpm(clock) -> EngineOracle:
    engine = EngineOracle(Engine(monotonic_ms=clock))
    ok(engine, STARTUP_CLEAR)
    return engine


def da_key(tpm, attrs: int = SIGNING) -> tuple[int, int, bytes]:
    """A loaded ECC signing key with the password b"key" (DA-protected unless attrs has noDA):
    (handle, parent handle, Name)."""
    srk, _ = primary(tpm)
    out = create_child(tpm, srk, ecc_template(attrs, sym=NO_SYM), auth=b"key")
    resp = ok(tpm, load_cmd(srk, out.outPrivate, out.outPublic))
    return handle_of(resp), srk, T.TPM2B_NAME.unpack(resp.params(1))


def test_defaults_as_libtpms(tpm):
    props = properties(tpm, TPM_PT.LOCKOUT_COUNTER, 4)
    assert props == {
        TPM_PT.LOCKOUT_COUNTER: 0,
        TPM_PT.MAX_AUTH_FAIL: 3,
        TPM_PT.LOCKOUT_INTERVAL: 1000,
        TPM_PT.LOCKOUT_RECOVERY: 1000,
    }


def test_lockout_after_max_tries_and_recovery(tpm, clock):
    key = da_key(tpm)
    ok(tpm, auth_check(key, b"key"))
    for n in range(1, 4):
        assert rc(tpm, auth_check(key, b"wrong")) == TPM_RC.AUTH_FAIL | RC_S | N1
        assert da_counter(tpm) == n
    assert permanent_flags(tpm) & TPMA_PERMANENT.inLockout
    # In lockout even the right password is refused, and nothing more is counted.
    assert rc(tpm, auth_check(key, b"key")) == TPM_RC.LOCKOUT
    assert rc(tpm, auth_check(key, b"wrong")) == TPM_RC.LOCKOUT
    assert da_counter(tpm) == 3
    # One failure is forgiven per recoveryTime (1000 s) without failures.
    clock.advance(999)
    assert rc(tpm, auth_check(key, b"key")) == TPM_RC.LOCKOUT
    clock.advance(1)
    assert da_counter(tpm) == 2
    assert not permanent_flags(tpm) & TPMA_PERMANENT.inLockout
    ok(tpm, auth_check(key, b"key"))
    clock.advance(2 * 1000)
    assert da_counter(tpm) == 0


def test_da_exempt_entities_are_not_counted(tpm):
    key = da_key(tpm, SIGNING | NO_DA)
    for _ in range(5):
        assert rc(tpm, auth_check(key, b"wrong")) == TPM_RC.BAD_AUTH | RC_S | N1
    ok(tpm, change_auth(TPM_RH.OWNER, b"o"))
    assert rc(tpm, change_auth(TPM_RH.OWNER, b"", b"x")) == TPM_RC.BAD_AUTH | RC_S | N1
    assert da_counter(tpm) == 0
    ok(tpm, auth_check(key, b"key"))


def test_lockout_does_not_block_exempt_entities(tpm):
    key = da_key(tpm)
    exempt = da_key(tpm, SIGNING | NO_DA)
    for _ in range(3):
        rc(tpm, auth_check(key, b"wrong"))
    ok(tpm, auth_check(exempt, b"key"))
    ok(tpm, change_auth(TPM_RH.OWNER, b""))


def test_lock_reset_and_lockout_auth_lock(tpm, clock):
    key = da_key(tpm)
    for _ in range(3):
        rc(tpm, auth_check(key, b"wrong"))
    ok(tpm, change_auth(TPM_RH.LOCKOUT, b"lock"))
    # A wrong lockoutAuth locks lockoutAuth and does not count in failedTries.
    assert rc(tpm, lock_reset(b"nope")) == TPM_RC.AUTH_FAIL | RC_S | N1
    assert rc(tpm, lock_reset(b"lock")) == TPM_RC.LOCKOUT
    assert rc(tpm, clear(TPM_RH.LOCKOUT, b"lock")) == TPM_RC.LOCKOUT
    assert da_counter(tpm) == 3
    clock.advance(999)
    assert rc(tpm, lock_reset(b"lock")) == TPM_RC.LOCKOUT
    clock.advance(1)
    ok(tpm, lock_reset(b"lock"))
    assert da_counter(tpm) == 0
    ok(tpm, auth_check(key, b"key"))


def test_lockout_auth_with_zero_recovery_waits_for_startup(tpm, clock):
    ok(tpm, parameters(3, 1000, 0))
    assert rc(tpm, lock_reset(b"bad")) == TPM_RC.AUTH_FAIL | RC_S | N1
    clock.advance(10**6)
    assert rc(tpm, lock_reset()) == TPM_RC.LOCKOUT
    ok(tpm, command(TPM_CC.Shutdown, (0).to_bytes(2, "big")))
    again = EngineOracle(Engine.from_blobs(tpm.permanent_blob(), monotonic_ms=clock))
    ok(again, STARTUP_CLEAR)
    ok(again, lock_reset())


def test_dictionary_attack_parameters(tpm, clock):
    ok(tpm, parameters(5, 10, 20))
    assert properties(tpm, TPM_PT.LOCKOUT_COUNTER, 4) == {
        TPM_PT.LOCKOUT_COUNTER: 0,
        TPM_PT.MAX_AUTH_FAIL: 5,
        TPM_PT.LOCKOUT_INTERVAL: 10,
        TPM_PT.LOCKOUT_RECOVERY: 20,
    }
    key = da_key(tpm)
    for _ in range(5):
        rc(tpm, auth_check(key, b"wrong"))
    assert rc(tpm, auth_check(key, b"key")) == TPM_RC.LOCKOUT
    clock.advance(10)
    ok(tpm, auth_check(key, b"key"))
    # Lowering maxTries below failedTries leaves the counter, so the TPM is in lockout.
    ok(tpm, parameters(2, 10, 20))
    assert da_counter(tpm) == 4
    assert permanent_flags(tpm) & TPMA_PERMANENT.inLockout
    assert rc(tpm, parameters(2, 10, 20, b"wrong")) == TPM_RC.AUTH_FAIL | RC_S | N1
    clock.advance(20)
    assert rc(tpm, command(TPM_CC.DictionaryAttackParameters, bytes(11), u32(TPM_RH.LOCKOUT), b"")) == (
        TPM_RC.INSUFFICIENT | 0x40 | (3 << 8)
    )
    assert rc(tpm, command(TPM_CC.DictionaryAttackLockReset, handles=u32(TPM_RH.OWNER), auth=b"")) == (
        TPM_RC.VALUE | N1
    )


def test_recovery_time_zero_disables_protection(tpm):
    key = da_key(tpm)
    rc(tpm, auth_check(key, b"wrong"))
    ok(tpm, parameters(1, 0, 0))
    assert da_counter(tpm) == 0
    for _ in range(4):
        assert rc(tpm, auth_check(key, b"wrong")) == TPM_RC.AUTH_FAIL | RC_S | N1
    ok(tpm, auth_check(key, b"key"))


def test_max_tries_zero_is_permanent_lockout(tpm):
    key = da_key(tpm)
    ok(tpm, parameters(0, 1000, 1000))
    assert rc(tpm, auth_check(key, b"key")) == TPM_RC.LOCKOUT


def test_clear_restores_the_defaults(tpm):
    key = da_key(tpm)
    ok(tpm, parameters(2, 5, 7))
    rc(tpm, auth_check(key, b"wrong"))
    ok(tpm, clear())
    assert properties(tpm, TPM_PT.LOCKOUT_COUNTER, 4) == {
        TPM_PT.LOCKOUT_COUNTER: 0,
        TPM_PT.MAX_AUTH_FAIL: 3,
        TPM_PT.LOCKOUT_INTERVAL: 1000,
        TPM_PT.LOCKOUT_RECOVERY: 1000,
    }


def test_hmac_session_failures_count(tpm):
    key = da_key(tpm)
    handle, parent, name = key
    public = ok(tpm, command(TPM_CC.ReadPublic, handles=u32(parent))).params()
    r = Reader(public)
    T.TPM2B_PUBLIC.unmarshal(r)
    handles = [(handle, name), (parent, T.TPM2B_NAME.unmarshal(r))]

    def attempt(auth: bytes) -> int:
        session = start_session(tpm.execute)
        use = Use(session, name=name, auth=auth)
        result = run_session(tpm.execute, TPM_CC.ObjectChangeAuth, handles, tpm2b(b"new"), [use], check=False)
        tpm.execute(command(TPM_CC.FlushContext, u32(session.handle)))
        return result.rc

    assert attempt(b"key") == 0
    for n in range(1, 4):
        assert attempt(b"bad") == TPM_RC.AUTH_FAIL | RC_S | N1
        assert da_counter(tpm) == n
    assert attempt(b"key") == TPM_RC.LOCKOUT


def test_failed_authorization_is_on_disk_when_the_response_returns(tmp_path):
    """The counter is NV: Vtpm writes it before the failing response is handed back."""

    async def scenario() -> None:
        vtpm = Vtpm(tmp_path)
        await vtpm.init()
        assert (await vtpm.execute(STARTUP_CLEAR))[6:10] == bytes(4)
        await vtpm.execute(change_auth(TPM_RH.LOCKOUT, b"l"))
        resp = await vtpm.execute(lock_reset(b"x"))
        assert int.from_bytes(resp[6:10], "big") == TPM_RC.AUTH_FAIL | RC_S | N1
        on_disk = deserialise(BlobKind.PERMANENT, vtpm.store.load(StateKind.PERMANENT))
        assert on_disk.da_lockout_auth_enabled is False
        await vtpm.shutdown()

    trio.run(scenario)
