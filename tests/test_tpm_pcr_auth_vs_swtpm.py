"""PCR authorization groups and the platform commands, the same bytes against our engine
and Debian's swtpm (libtpms): each step of a sequence must get the identical response.

libtpms runs without physical presence (swtpm never asserts it), so TPM2_PP_Commands is
compared in that state; tests/test_tpm_platform.py covers it with presence asserted.
"""

from __future__ import annotations

import hashlib

import pytest

from support.engine_oracle import EngineOracle
from support.swtpm_oracle import SwtpmOracle
from support.tpm_client import command, tpm2b, u16, u32
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_PT, TPM_RH
from vtpm_cuse.tpm.engine import Engine

pytestmark = pytest.mark.swtpm

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
DIGEST = hashlib.sha256(b"x").digest()
PLATFORM = u32(TPM_RH.PLATFORM)


def cap(capability: int, prop: int, count: int) -> bytes:
    return command(TPM_CC.GetCapability, u32(capability) + u32(prop) + u32(count))


def extend(pcr: int, pw: bytes) -> bytes:
    return command(TPM_CC.PCR_Extend, u32(1) + u16(TPM_ALG.SHA256) + DIGEST, u32(pcr), pw)


def set_policy(pcr: int) -> bytes:
    return command(TPM_CC.PCR_SetAuthPolicy, tpm2b(DIGEST) + u16(TPM_ALG.SHA256) + u32(pcr), PLATFORM, b"")


#: (name, command, locality), run in this order against both TPMs.
SEQUENCE = [
    ("pcr_properties", cap(TPM_CAP.PCR_PROPERTIES, 0, 64), 0),
    (
        "set_policy_size_and_group_wrong",
        command(TPM_CC.PCR_SetAuthPolicy, tpm2b(bytes(31)) + u16(0xB) + u32(16), PLATFORM, b""),
        0,
    ),
    (
        "set_policy_outside_group",
        command(TPM_CC.PCR_SetAuthPolicy, tpm2b(DIGEST) + u16(0xB) + u32(16), PLATFORM, b""),
        0,
    ),
    (
        "set_policy_pcrnum_not_a_pcr",
        command(TPM_CC.PCR_SetAuthPolicy, tpm2b(b"") + u16(0x10) + u32(0x40000001), PLATFORM, b""),
        0,
    ),
    ("set_policy_bad_hash", command(TPM_CC.PCR_SetAuthPolicy, tpm2b(b"") + u16(0x99) + u32(20), PLATFORM, b""), 0),
    (
        "set_policy_owner",
        command(TPM_CC.PCR_SetAuthPolicy, tpm2b(b"") + u16(0x10) + u32(20), u32(TPM_RH.OWNER), b""),
        0,
    ),
    ("set_policy_null", command(TPM_CC.PCR_SetAuthPolicy, tpm2b(b"") + u16(0x10) + u32(20), PLATFORM, b""), 0),
    ("set_value_outside_group", command(TPM_CC.PCR_SetAuthValue, tpm2b(b"abc"), u32(16), b""), 0),
    ("set_value_too_long", command(TPM_CC.PCR_SetAuthValue, tpm2b(bytes(65)), u32(21), b""), 0),
    ("set_value", command(TPM_CC.PCR_SetAuthValue, tpm2b(b"ab\0\0"), u32(20), b""), 0),
    ("extend_without_value", extend(20, b""), 2),
    ("extend_with_value", extend(21, b"ab"), 2),
    ("extend_with_value_and_zeros", extend(22, b"ab\0"), 2),
    ("extend_wrong_locality", extend(20, b"ab"), 0),
    ("reset_with_value", command(TPM_CC.PCR_Reset, handles=u32(20), auth=b"ab"), 2),
    ("set_value_other_pcr_old_auth", command(TPM_CC.PCR_SetAuthValue, tpm2b(b""), u32(21), b""), 0),
    ("set_value_other_pcr", command(TPM_CC.PCR_SetAuthValue, tpm2b(b""), u32(21), b"ab"), 0),
    ("set_policy", command(TPM_CC.PCR_SetAuthPolicy, tpm2b(DIGEST) + u16(0xB) + u32(22), PLATFORM, b""), 0),
    ("extend_needs_policy", extend(20, b""), 2),
    ("reset_needs_policy", command(TPM_CC.PCR_Reset, handles=u32(21), auth=b""), 2),
    ("extend_outside_group", extend(16, b""), 0),
    ("unset_policy", command(TPM_CC.PCR_SetAuthPolicy, tpm2b(b"") + u16(0x10) + u32(21), PLATFORM, b""), 0),
    ("extend_after_unset", extend(20, b""), 2),
    # ChangePPS takes the PCR policies with the platform seed; Clear leaves them.
    ("set_policy_before_change_pps", set_policy(20), 0),
    ("change_pps", command(TPM_CC.ChangePPS, handles=PLATFORM, auth=b""), 0),
    ("extend_after_change_pps", extend(21, b""), 2),
    ("set_policy_before_clear", set_policy(22), 0),
    ("clear", command(TPM_CC.Clear, handles=u32(TPM_RH.LOCKOUT), auth=b""), 0),
    ("extend_after_clear", extend(20, b""), 2),
    ("unset_policy_after_clear", command(TPM_CC.PCR_SetAuthPolicy, tpm2b(b"") + u16(0x10) + u32(21), PLATFORM, b""), 0),
    # Platform commands (physical presence is not asserted on either side).
    ("pp_list", cap(TPM_CAP.PP_COMMANDS, 0, 256), 0),
    ("pp_commands_without_pp", command(TPM_CC.PP_Commands, u32(0) + u32(0), PLATFORM, b""), 0),
    ("pp_commands_without_pp_bad_auth", command(TPM_CC.PP_Commands, u32(0) + u32(0), PLATFORM, b"x"), 0),
    ("pp_commands_owner", command(TPM_CC.PP_Commands, u32(0) + u32(0), u32(TPM_RH.OWNER), b""), 0),
    ("set_algorithm_set_bad_auth", command(TPM_CC.SetAlgorithmSet, u32(5), PLATFORM, b"x"), 0),
    ("set_algorithm_set", command(TPM_CC.SetAlgorithmSet, u32(5), PLATFORM, b""), 0),
    ("algorithm_set", cap(TPM_CAP.TPM_PROPERTIES, TPM_PT.ALGORITHM_SET, 1), 0),
    ("set_algorithm_set_owner", command(TPM_CC.SetAlgorithmSet, u32(0), u32(TPM_RH.OWNER), b""), 0),
    ("firmware_read", command(TPM_CC.FirmwareRead, u32(0)), 0),
    (
        "field_upgrade_start",
        command(TPM_CC.FieldUpgradeStart, tpm2b(b"") + u16(0x10), PLATFORM + u32(TPM_RH.NULL), b""),
        0,
    ),
    ("field_upgrade_data", command(TPM_CC.FieldUpgradeData, tpm2b(b"")), 0),
]


@pytest.fixture(scope="module")
def pair():
    oracle = SwtpmOracle()
    ours = EngineOracle(Engine())
    for tpm in (oracle, ours):
        assert tpm.execute(STARTUP_CLEAR) == bytes.fromhex("80010000000a00000000")
    yield oracle, ours
    oracle.close()


def test_sequence_gets_identical_responses(pair):
    oracle, ours = pair
    differences = []
    for name, cmd, locality in SEQUENCE:
        if locality:
            oracle.set_locality(locality)
        theirs, mine = oracle.execute(cmd), ours.execute(cmd, locality)
        if locality:
            oracle.set_locality(0)
        if theirs != mine:
            differences.append(f"{name}: swtpm {theirs.hex()} ours {mine.hex()}")
    assert not differences, "\n".join(differences)


def test_vendor_tcg_test_deliberate_difference(pair):
    """libtpms leaves TPM2_Vendor_TCG_Test out (TPM_RC_COMMAND_CODE); we implement it as the
    Library specification defines it: outputData echoes inputData."""
    oracle, ours = pair
    cmd = command(TPM_CC.Vendor_TCG_Test, tpm2b(b"echo"))
    assert oracle.execute(cmd) == bytes.fromhex("80010000000a00000143")
    assert ours.execute(cmd) == bytes.fromhex("80010000001000000000") + tpm2b(b"echo")


def power_cycled(ours: EngineOracle) -> EngineOracle:
    """Our side of CMD_INIT: RAM is lost, NV (with what Shutdown saved) stays."""
    return EngineOracle(Engine.from_blobs(ours.permanent_blob()))


@pytest.mark.parametrize(
    "startup, kept",
    [(bytes.fromhex("80010000000c000001440001"), True), (STARTUP_CLEAR, False)],
    ids=["resume", "restart"],
)
def test_auth_value_across_shutdown_state_and_power_cycle(startup, kept):
    """PCR authValues are state-clear data: Resume restores them, TPM Restart does not."""
    oracle, ours = SwtpmOracle(), EngineOracle(Engine())
    try:
        set_value = command(TPM_CC.PCR_SetAuthValue, tpm2b(b"kept?"), u32(20), b"")
        shutdown_state = command(TPM_CC.Shutdown, u16(1))
        probe = command(TPM_CC.PCR_SetAuthValue, tpm2b(b"kept?"), u32(21), b"kept?")
        for cmd in (STARTUP_CLEAR, set_value, shutdown_state):
            theirs, mine = oracle.execute(cmd), ours.execute(cmd)
            assert theirs == mine and mine[6:10] == bytes(4), f"swtpm {theirs.hex()} ours {mine.hex()}"
        oracle.init()
        ours = power_cycled(ours)
        assert oracle.execute(startup) == ours.execute(startup) == bytes.fromhex("80010000000a00000000")
        theirs, mine = oracle.execute(probe), ours.execute(probe)
        assert theirs == mine
        assert (mine[6:10] == bytes(4)) == kept
    finally:
        oracle.close()
