"""Physical presence and the platform commands through Engine.execute with real command bytes:
TPM2_PP_Commands and the PP list (Part 3, 26.2), TPM2_SetAlgorithmSet (26.3),
TPM2_Vendor_TCG_Test, and the field-upgrade commands this TPM leaves out.

The engine runs under EngineOracle: an unexpected TPM_RC_FAILURE or internal error fails.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from support import session_client as sc
from support.engine_oracle import EngineOracle
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import state
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_CAP, TPM_CC, TPM_PT, TPM_RH, TPMA_CC
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_P, RC_S, TPM_RC
from vtpm_cuse.tpm.physical_presence import PP_CAPABLE

STARTUP_CLEAR = command(TPM_CC.Startup, u16(0))
N1 = 1 << 8
PLATFORM, OWNER, LOCKOUT = u32(TPM_RH.PLATFORM), u32(TPM_RH.OWNER), u32(TPM_RH.LOCKOUT)


def tpml_cc(codes) -> bytes:
    return u32(len(codes)) + b"".join(u32(c) for c in codes)


def pp_commands(set_list=(), clear_list=(), pw: bytes = b"", handle: bytes = PLATFORM) -> bytes:
    return command(TPM_CC.PP_Commands, tpml_cc(set_list) + tpml_cc(clear_list), handle, pw)


def clear(handle: bytes, pw: bytes = b"") -> bytes:
    return command(TPM_CC.Clear, handles=handle, auth=pw)


def rc(tpm, cmd: bytes) -> int:
    return Response(tpm.execute(cmd)).rc


def capability(tpm, cap: int, prop: int, count: int = 256) -> list:
    raw = tpm.execute(command(TPM_CC.GetCapability, u32(cap) + u32(prop) + u32(count)))
    assert Response(raw).rc == TPM_RC.SUCCESS
    return T.TPMS_CAPABILITY_DATA.unpack(Response(raw).params()[1:]).data


def pp_list(tpm) -> list[int]:
    return capability(tpm, TPM_CAP.PP_COMMANDS, 0)


def tpm_property(tpm, prop: int) -> int:
    item = capability(tpm, TPM_CAP.TPM_PROPERTIES, prop, 1)[0]
    assert item.property == prop
    return item.value


def started(**options) -> EngineOracle:
    engine = EngineOracle(Engine(**options))
    assert rc(engine, STARTUP_CLEAR) == TPM_RC.SUCCESS
    return engine


@pytest.fixture
def tpm():
    return started()


@pytest.fixture
def present():
    return started(physical_presence=True)


# --- physical presence and the PP list -----------------------------------------------------------------


def test_fresh_tpm_lists_only_pp_commands(tpm):
    assert pp_list(tpm) == [TPM_CC.PP_Commands]


def test_pp_commands_needs_physical_presence_before_the_password(tpm):
    assert rc(tpm, pp_commands([TPM_CC.Clear])) == TPM_RC.PP + RC_S + N1
    assert rc(tpm, pp_commands([TPM_CC.Clear], pw=b"wrong")) == TPM_RC.PP + RC_S + N1
    assert rc(tpm, pp_commands(handle=OWNER)) == TPM_RC.VALUE + N1
    assert pp_list(tpm) == [TPM_CC.PP_Commands]


def test_pp_commands_with_presence_still_needs_platform_auth(present):
    assert rc(present, pp_commands([TPM_CC.Clear], pw=b"wrong")) == TPM_RC.BAD_AUTH + RC_S + N1
    assert pp_list(present) == [TPM_CC.PP_Commands]


def test_set_list_takes_only_pp_capable_implemented_commands(present):
    not_capable = [TPM_CC.NV_Write, TPM_CC.GetRandom, TPM_CC.PCR_Extend]
    not_implemented = [TPM_CC.FieldUpgradeStart, 0x0123, 0x20001000]
    assert rc(present, pp_commands([TPM_CC.ClockSet, TPM_CC.Clear, *not_capable, *not_implemented])) == 0
    assert pp_list(present) == [TPM_CC.Clear, TPM_CC.ClockSet, TPM_CC.PP_Commands]


def test_clear_list_wins_and_cannot_remove_pp_commands(present):
    assert rc(present, pp_commands([TPM_CC.Clear, TPM_CC.ClockSet], [TPM_CC.ClockSet])) == 0
    assert pp_list(present) == [TPM_CC.Clear, TPM_CC.PP_Commands]
    assert rc(present, pp_commands([], [TPM_CC.Clear, TPM_CC.PP_Commands])) == 0
    assert pp_list(present) == [TPM_CC.PP_Commands]


def test_every_pp_capable_command_can_be_listed(present):
    capable = sorted(cc for cc in PP_CAPABLE if present.table.get(cc) is not None)
    assert rc(present, pp_commands(capable)) == 0
    assert pp_list(present) == capable
    # moreData paging: the list starts at the code asked for.
    assert capability(present, TPM_CAP.PP_COMMANDS, TPM_CC.Clear, 1) == [TPM_CC.Clear]


def test_listed_command_needs_presence_only_with_platform_auth(present):
    assert rc(present, pp_commands([TPM_CC.Clear, TPM_CC.ClockSet])) == 0
    present.physical_presence = False  # the platform lets go of the button
    assert rc(present, clear(PLATFORM)) == TPM_RC.PP + RC_S + N1
    clock_set = command(TPM_CC.ClockSet, (10**12).to_bytes(8, "big"), PLATFORM, b"")
    assert rc(present, clock_set) == TPM_RC.PP + RC_S + N1
    # Other hierarchies' authorizations are not gated by physical presence.
    assert rc(present, clear(LOCKOUT)) == TPM_RC.SUCCESS
    assert rc(present, command(TPM_CC.ClockSet, (10**12).to_bytes(8, "big"), OWNER, b"")) == TPM_RC.SUCCESS
    present.physical_presence = True
    assert rc(present, clear(PLATFORM)) == TPM_RC.SUCCESS


def test_pp_list_is_nv_state(present):
    assert rc(present, pp_commands([TPM_CC.ClearControl])) == 0
    assert rc(present, command(TPM_CC.Shutdown, u16(0))) == 0
    after = EngineOracle(Engine.from_blobs(present.permanent_blob()))
    assert rc(after, STARTUP_CLEAR) == 0
    assert pp_list(after) == [TPM_CC.ClearControl, TPM_CC.PP_Commands]
    assert rc(after, command(TPM_CC.ClearControl, b"\x01", PLATFORM, b"")) == TPM_RC.PP + RC_S + N1
    # TPM2_Clear leaves the platform's list alone.
    assert rc(after, clear(LOCKOUT)) == 0
    assert pp_list(after) == [TPM_CC.ClearControl, TPM_CC.PP_Commands]


def test_state_written_before_the_pp_list_loads_with_the_default():
    """Blobs of earlier versions lack pp_commands, algorithm_set, pcr_policies, pcr_auth_values."""
    perm = Engine.manufacture()
    payload = json.loads(state.serialise(state.BlobKind.PERMANENT, perm)[state._HEADER.size :])
    for field in ("pp_commands", "algorithm_set", "pcr_policies"):
        del payload[field]
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    header = state._HEADER.pack(
        state.BLOB_MAGIC, state.BLOB_VERSION, state.BlobKind.PERMANENT, hashlib.sha256(raw).digest()
    )
    old = EngineOracle(Engine.from_blobs(header + raw))
    assert rc(old, STARTUP_CLEAR) == 0
    assert pp_list(old) == [TPM_CC.PP_Commands]
    assert tpm_property(old, TPM_PT.ALGORITHM_SET) == 0


# --- SetAlgorithmSet ---------------------------------------------------------------------------------------


def test_set_algorithm_set_is_recorded_and_persisted(tpm):
    assert tpm_property(tpm, TPM_PT.ALGORITHM_SET) == 0
    assert rc(tpm, command(TPM_CC.SetAlgorithmSet, u32(7), PLATFORM, b"wrong")) == TPM_RC.BAD_AUTH + RC_S + N1
    assert rc(tpm, command(TPM_CC.SetAlgorithmSet, u32(7), OWNER, b"")) == TPM_RC.VALUE + N1
    assert rc(tpm, command(TPM_CC.SetAlgorithmSet, u32(7), PLATFORM, b"")) == TPM_RC.SUCCESS
    assert tpm_property(tpm, TPM_PT.ALGORITHM_SET) == 7
    assert tpm.take_permanent_dirty()
    after = EngineOracle(Engine.from_blobs(tpm.permanent_blob()))
    assert rc(after, STARTUP_CLEAR) == 0
    assert tpm_property(after, TPM_PT.ALGORITHM_SET) == 7


def test_set_algorithm_set_cannot_be_made_to_need_presence(present):
    """SetAlgorithmSet is not PP-capable (Part 2's TPM_CC table), so listing it is ignored."""
    assert rc(present, pp_commands([TPM_CC.SetAlgorithmSet])) == 0
    present.physical_presence = False
    assert rc(present, command(TPM_CC.SetAlgorithmSet, u32(1), PLATFORM, b"")) == TPM_RC.SUCCESS


# --- Vendor_TCG_Test and the commands left out ------------------------------------------------------------


def test_vendor_tcg_test_echoes_its_input(tpm):
    for data in (b"", b"hello", bytes(range(66))):
        resp = Response(tpm.execute(command(TPM_CC.Vendor_TCG_Test, tpm2b(data))))
        assert resp.rc == TPM_RC.SUCCESS
        assert resp.params() == tpm2b(data)
    assert rc(tpm, command(TPM_CC.Vendor_TCG_Test, tpm2b(bytes(67)))) == TPM_RC.SIZE + RC_P + N1
    assert rc(tpm, command(TPM_CC.Vendor_TCG_Test, b"\x00")) == TPM_RC.INSUFFICIENT + RC_P + N1


def test_vendor_command_is_reported_as_one(tpm):
    listed = capability(tpm, TPM_CAP.COMMANDS, TPM_CC.Vendor_TCG_Test, 8)
    assert listed == [TPMA_CC.V]  # commandIndex 0, no handles, V set
    assert tpm_property(tpm, TPM_PT.VENDOR_COMMANDS) == 1
    total, library = tpm_property(tpm, TPM_PT.TOTAL_COMMANDS), tpm_property(tpm, TPM_PT.LIBRARY_COMMANDS)
    assert total == library + 1 == len(tpm.table)


@pytest.mark.parametrize("code", [TPM_CC.FieldUpgradeStart, TPM_CC.FieldUpgradeData, TPM_CC.FirmwareRead])
def test_field_upgrade_is_not_implemented(tpm, code):
    assert rc(tpm, command(code, u32(0))) == TPM_RC.COMMAND_CODE
    assert all(attrs & 0xFFFF != code for attrs in capability(tpm, TPM_CAP.COMMANDS, 0))


# --- a policy session that ran PolicyPhysicalPresence ------------------------------------------------------


def test_policy_physical_presence_needs_presence_whatever_the_entity():
    """The hook policy sessions call (physical_presence.require_physical_presence): a PCR whose
    group policy is PolicyPhysicalPresence is reset only while the platform asserts presence."""
    tpm = started()
    policy = hashlib.sha256(bytes(32) + u32(TPM_CC.PolicyPhysicalPresence)).digest()
    set_policy = command(TPM_CC.PCR_SetAuthPolicy, tpm2b(policy) + u16(0x000B) + u32(20), PLATFORM, b"")
    assert rc(tpm, set_policy) == TPM_RC.SUCCESS

    def at_locality_2(cmd: bytes) -> bytes:
        return tpm.execute(cmd, 2)  # PCR 20 is reset from locality 2

    session = sc.start_session(at_locality_2, sc.SE_POLICY)
    use = sc.Use(session, name=u32(20), include_auth=False)
    assert rc(tpm, command(TPM_CC.PolicyPhysicalPresence, handles=u32(session.handle))) == TPM_RC.SUCCESS
    # The policy is satisfied; the failed use leaves the session as it was.
    for present, expected in ((False, TPM_RC.PP + RC_S + N1), (True, TPM_RC.SUCCESS)):
        tpm.physical_presence = present
        assert sc.run(at_locality_2, TPM_CC.PCR_Reset, [(20, u32(20))], b"", [use]).rc == expected
