"""PCR authorization groups (Part 3, 22.6 PCR_SetAuthPolicy and 22.7 PCR_SetAuthValue) through
Engine.execute with real command bytes: which PCRs are in a group, what authorizes a PCR of a
group, how long each value lives, and what GetCapability reports about the groups.

The engine runs under EngineOracle: an unexpected TPM_RC_FAILURE or internal error fails.
"""

from __future__ import annotations

import hashlib

import pytest

from support import session_client as sc
from support.engine_oracle import EngineOracle
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_PT_PCR, TPM_RH
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_P, RC_S, TPM_RC

STARTUP_CLEAR = command(TPM_CC.Startup, u16(0))
STARTUP_STATE = command(TPM_CC.Startup, u16(1))
SHUTDOWN_CLEAR = command(TPM_CC.Shutdown, u16(0))
SHUTDOWN_STATE = command(TPM_CC.Shutdown, u16(1))
N1, N3 = 1 << 8, 3 << 8
#: libtpms' groups: one policy group and one auth group, both PCRs 20-22.
GROUP = (20, 21, 22)
#: PCR 20 may be reset from localities 2 and 4 (PC Client); 4 never by command.
RESET_LOCALITY = 2
POLICY = hashlib.sha256(b"a PCR policy").digest()


def set_auth_value(pcr: int, new: bytes, pw: bytes = b"") -> bytes:
    return command(TPM_CC.PCR_SetAuthValue, tpm2b(new), u32(pcr), pw)


def set_auth_policy(pcr: int, digest: bytes, alg: int = TPM_ALG.SHA256, pw: bytes = b"") -> bytes:
    return command(TPM_CC.PCR_SetAuthPolicy, tpm2b(digest) + u16(alg) + u32(pcr), u32(TPM_RH.PLATFORM), pw)


def pcr_reset(pcr: int, pw: bytes = b"") -> bytes:
    return command(TPM_CC.PCR_Reset, handles=u32(pcr), auth=pw)


def pcr_event(pcr: int, pw: bytes = b"") -> bytes:
    return command(TPM_CC.PCR_Event, tpm2b(b"event"), u32(pcr), pw)


def rc(tpm, cmd: bytes, locality: int = 0) -> int:
    return Response(tpm.execute(cmd, locality)).rc


@pytest.fixture
def tpm():
    engine = EngineOracle(Engine())
    assert rc(engine, STARTUP_CLEAR) == TPM_RC.SUCCESS
    return engine


def restarted(tpm, shutdown: bytes, startup: bytes) -> EngineOracle:
    """Shutdown, power loss (only the NV blob survives), _TPM_Init and Startup."""
    assert rc(tpm, shutdown) == TPM_RC.SUCCESS
    engine = EngineOracle(Engine.from_blobs(tpm.permanent_blob()))
    assert rc(engine, startup) == TPM_RC.SUCCESS
    return engine


# --- PCR_SetAuthValue ------------------------------------------------------------------------------


def test_auth_value_authorizes_every_pcr_of_the_group(tpm):
    assert rc(tpm, set_auth_value(20, b"pcr secret")) == TPM_RC.SUCCESS
    for pcr in GROUP:
        assert rc(tpm, pcr_reset(pcr, b"wrong"), RESET_LOCALITY) == TPM_RC.BAD_AUTH + RC_S + N1
        assert rc(tpm, pcr_reset(pcr), RESET_LOCALITY) == TPM_RC.BAD_AUTH + RC_S + N1
        assert rc(tpm, pcr_reset(pcr, b"pcr secret"), RESET_LOCALITY) == TPM_RC.SUCCESS
    # PCRs outside the group keep the empty authValue.
    assert rc(tpm, pcr_event(16)) == TPM_RC.SUCCESS
    assert rc(tpm, pcr_event(16, b"pcr secret")) == TPM_RC.BAD_AUTH + RC_S + N1


def test_auth_value_change_needs_the_old_value_and_drops_trailing_zeros(tpm):
    assert rc(tpm, set_auth_value(21, b"first\0\0")) == TPM_RC.SUCCESS
    assert rc(tpm, set_auth_value(22, b"second")) == TPM_RC.BAD_AUTH + RC_S + N1
    assert rc(tpm, set_auth_value(22, b"second", pw=b"first")) == TPM_RC.SUCCESS
    assert rc(tpm, pcr_reset(20, b"second\0"), RESET_LOCALITY) == TPM_RC.SUCCESS


def test_auth_value_outside_every_group_is_an_unplaced_value_error(tpm):
    # libtpms answers the bare TPM_RC_VALUE (tests/test_tpm_pcr_auth_vs_swtpm.py compares it).
    for pcr in (0, 16, 19, 23):
        assert rc(tpm, set_auth_value(pcr, b"x")) == TPM_RC.VALUE
    too_long = command(TPM_CC.PCR_SetAuthValue, tpm2b(bytes(65)), u32(20), b"")
    assert rc(tpm, too_long) == TPM_RC.SIZE + RC_P + N1


def test_auth_value_is_state_clear_data(tpm):
    assert rc(tpm, set_auth_value(20, b"kept")) == TPM_RC.SUCCESS
    resumed = restarted(tpm, SHUTDOWN_STATE, STARTUP_STATE)
    assert rc(resumed, pcr_reset(20), RESET_LOCALITY) == TPM_RC.BAD_AUTH + RC_S + N1
    assert rc(resumed, pcr_reset(20, b"kept"), RESET_LOCALITY) == TPM_RC.SUCCESS
    # TPM Restart (Shutdown(STATE), Startup(CLEAR)) and TPM Reset both forget it.
    restarted_tpm = restarted(resumed, SHUTDOWN_STATE, STARTUP_CLEAR)
    assert rc(restarted_tpm, pcr_reset(20), RESET_LOCALITY) == TPM_RC.SUCCESS
    assert rc(restarted_tpm, set_auth_value(20, b"again")) == TPM_RC.SUCCESS
    reset = restarted(restarted_tpm, SHUTDOWN_CLEAR, STARTUP_CLEAR)
    assert rc(reset, pcr_reset(20), RESET_LOCALITY) == TPM_RC.SUCCESS


# --- PCR_SetAuthPolicy -----------------------------------------------------------------------------


def test_auth_policy_checks_size_then_group(tpm):
    assert rc(tpm, set_auth_policy(20, POLICY[:31])) == TPM_RC.SIZE + RC_P + N1
    assert rc(tpm, set_auth_policy(16, POLICY[:31])) == TPM_RC.SIZE + RC_P + N1
    assert rc(tpm, set_auth_policy(16, POLICY)) == TPM_RC.VALUE + RC_P + N3
    assert rc(tpm, set_auth_policy(20, b"", TPM_ALG.NULL)) == TPM_RC.SUCCESS
    assert rc(tpm, set_auth_policy(20, POLICY, pw=b"not platformAuth")) == TPM_RC.BAD_AUTH + RC_S + N1
    owner = command(TPM_CC.PCR_SetAuthPolicy, tpm2b(POLICY) + u16(TPM_ALG.SHA256) + u32(20), u32(TPM_RH.OWNER), b"")
    assert rc(tpm, owner) == TPM_RC.VALUE + N1


def test_a_pcr_with_a_policy_needs_a_policy_session(tpm):
    assert rc(tpm, set_auth_policy(21, POLICY)) == TPM_RC.SUCCESS
    for pcr in GROUP:
        # TPM_RC_AUTH_TYPE has no session number (a format-zero code), as in libtpms.
        assert rc(tpm, pcr_reset(pcr), RESET_LOCALITY) == TPM_RC.AUTH_TYPE
    assert rc(tpm, pcr_event(16)) == TPM_RC.SUCCESS
    # The policy is NV data: it outlives a TPM Reset.
    reset = restarted(tpm, SHUTDOWN_CLEAR, STARTUP_CLEAR)
    assert rc(reset, pcr_reset(20), RESET_LOCALITY) == TPM_RC.AUTH_TYPE
    # TPM_ALG_NULL with an empty digest removes it.
    assert rc(reset, set_auth_policy(22, b"", TPM_ALG.NULL)) == TPM_RC.SUCCESS
    assert rc(reset, pcr_reset(20), RESET_LOCALITY) == TPM_RC.SUCCESS


def test_change_pps_drops_the_pcr_policies_and_clear_keeps_them(tpm):
    assert rc(tpm, set_auth_policy(20, POLICY)) == TPM_RC.SUCCESS
    assert rc(tpm, command(TPM_CC.Clear, handles=u32(TPM_RH.LOCKOUT), auth=b"")) == TPM_RC.SUCCESS
    assert rc(tpm, pcr_reset(21), RESET_LOCALITY) == TPM_RC.AUTH_TYPE
    assert rc(tpm, command(TPM_CC.ChangePPS, handles=u32(TPM_RH.PLATFORM), auth=b"")) == TPM_RC.SUCCESS
    assert rc(tpm, pcr_reset(21), RESET_LOCALITY) == TPM_RC.SUCCESS


def test_policy_session_satisfying_the_pcr_policy_authorizes_reset(tpm):
    def at_reset_locality(cmd: bytes) -> bytes:
        return tpm.execute(cmd, RESET_LOCALITY)

    # PolicyCommandCode(PCR_Reset): policyDigest = H(0...0 || TPM_CC_PolicyCommandCode || TPM_CC_PCR_Reset)
    policy = hashlib.sha256(bytes(32) + u32(TPM_CC.PolicyCommandCode) + u32(TPM_CC.PCR_Reset)).digest()
    assert rc(tpm, set_auth_policy(20, policy)) == TPM_RC.SUCCESS
    extend = u32(1) + u16(TPM_ALG.SHA256) + bytes(32)

    session = sc.start_session(at_reset_locality, sc.SE_POLICY)
    code = command(TPM_CC.PolicyCommandCode, u32(TPM_CC.PCR_Reset), u32(session.handle))
    assert rc(tpm, code) == TPM_RC.SUCCESS
    use = sc.Use(session, name=u32(20), include_auth=False)
    assert sc.run(at_reset_locality, TPM_CC.PCR_Reset, [(20, u32(20))], b"", [use]).rc == TPM_RC.SUCCESS
    # Its use reset the session: the policy is not satisfied any more.
    assert sc.run(at_reset_locality, TPM_CC.PCR_Reset, [(20, u32(20))], b"", [use]).rc == TPM_RC.POLICY_FAIL + RC_S + N1
    # Satisfied again, it authorizes only the command the policy names.
    assert rc(tpm, code) == TPM_RC.SUCCESS
    result = sc.run(at_reset_locality, TPM_CC.PCR_Extend, [(20, u32(20))], extend, [use])
    assert result.rc == TPM_RC.POLICY_CC + RC_S + N1


# --- GetCapability -----------------------------------------------------------------------------------


def pcr_property(tpm, tag: int) -> set[int]:
    raw = tpm.execute(command(TPM_CC.GetCapability, u32(TPM_CAP.PCR_PROPERTIES) + u32(tag) + u32(1)))
    data = T.TPMS_CAPABILITY_DATA.unpack(Response(raw).params()[1:]).data
    assert data[0].tag == tag
    return {pcr for pcr in range(24) if data[0].pcrSelect[pcr // 8] >> pcr % 8 & 1}


def test_capability_reports_the_groups(tpm):
    assert pcr_property(tpm, TPM_PT_PCR.POLICY) == set(GROUP)
    assert pcr_property(tpm, TPM_PT_PCR.AUTH) == set(GROUP)
