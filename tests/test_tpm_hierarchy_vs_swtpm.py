"""Hierarchy and dictionary-attack commands byte for byte against Debian's swtpm (libtpms):
the same command sequence on two fresh TPMs gives the same response octets -- success
responses with password sessions are deterministic, and every bad-input code (with its
handle/parameter/session number) must agree.  TPMA_CC of each command is compared too."""

from __future__ import annotations

import pytest
from test_tpm_dictionary_attack import lock_reset, parameters
from test_tpm_hierarchy import (
    STARTUP_CLEAR,
    change_auth,
    change_eps,
    change_pps,
    clear,
    clear_control,
    hierarchy_control,
    set_primary_policy,
)

from support.engine_oracle import EngineOracle
from support.swtpm_oracle import SwtpmOracle
from support.tpm_client import command, u32
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_PT, TPM_RH
from vtpm_cuse.tpm.engine import Engine

pytestmark = pytest.mark.swtpm

MY_COMMANDS = [
    TPM_CC.HierarchyControl,
    TPM_CC.SetPrimaryPolicy,
    TPM_CC.ChangePPS,
    TPM_CC.ChangeEPS,
    TPM_CC.Clear,
    TPM_CC.ClearControl,
    TPM_CC.HierarchyChangeAuth,
    TPM_CC.DictionaryAttackLockReset,
    TPM_CC.DictionaryAttackParameters,
]

DA_PROPERTIES = command(TPM_CC.GetCapability, u32(TPM_CAP.TPM_PROPERTIES) + u32(TPM_PT.LOCKOUT_COUNTER) + u32(4))

SEQUENCE = [
    ("da defaults", DA_PROPERTIES),
    ("changeauth owner", change_auth(TPM_RH.OWNER, b"owner")),
    ("changeauth owner wrong", change_auth(TPM_RH.OWNER, b"x", b"bad")),
    ("changeauth too long", change_auth(TPM_RH.OWNER, b"\x01" * 65, b"owner")),
    ("changeauth null", change_auth(TPM_RH.NULL, b"x")),
    ("changeauth endorsement", change_auth(TPM_RH.ENDORSEMENT, b"e")),
    ("changeauth platform", change_auth(TPM_RH.PLATFORM, b"p")),
    ("policy size", set_primary_policy(TPM_RH.OWNER, bytes(20), TPM_ALG.SHA256, b"owner")),
    ("policy null with digest", set_primary_policy(TPM_RH.OWNER, bytes(32), TPM_ALG.NULL, b"owner")),
    ("policy bad hash", set_primary_policy(TPM_RH.OWNER, bytes(32), TPM_ALG.AES, b"owner")),
    ("policy owner", set_primary_policy(TPM_RH.OWNER, bytes(32), TPM_ALG.SHA256, b"owner")),
    ("policy lockout", set_primary_policy(TPM_RH.LOCKOUT, bytes(48), TPM_ALG.SHA384)),
    ("hc owner->platform", hierarchy_control(TPM_RH.OWNER, TPM_RH.PLATFORM, 0, b"owner")),
    ("hc endorsement->owner", hierarchy_control(TPM_RH.ENDORSEMENT, TPM_RH.OWNER, 0, b"e")),
    ("hc bad state", hierarchy_control(TPM_RH.PLATFORM, TPM_RH.OWNER, 2, b"p")),
    ("hc bad enable", hierarchy_control(TPM_RH.PLATFORM, TPM_RH.NULL, 0, b"p")),
    ("hc disable owner", hierarchy_control(TPM_RH.PLATFORM, TPM_RH.OWNER, 0, b"p")),
    ("hc owner disabled", hierarchy_control(TPM_RH.OWNER, TPM_RH.OWNER, 1, b"owner")),
    ("hc endorsement re-enables owner", hierarchy_control(TPM_RH.ENDORSEMENT, TPM_RH.OWNER, 1, b"e")),
    ("hc platform re-enables owner", hierarchy_control(TPM_RH.PLATFORM, TPM_RH.OWNER, 1, b"p")),
    ("hc platform nv", hierarchy_control(TPM_RH.PLATFORM, TPM_RH.PLATFORM_NV, 0, b"p")),
    ("clearcontrol lockout clear", clear_control(TPM_RH.LOCKOUT, 0)),
    ("clearcontrol lockout set", clear_control(TPM_RH.LOCKOUT, 1)),
    ("clear disabled", clear(TPM_RH.LOCKOUT)),
    ("clearcontrol bad value", clear_control(TPM_RH.PLATFORM, 2, b"p")),
    ("clearcontrol platform", clear_control(TPM_RH.PLATFORM, 0, b"p")),
    ("clear owner handle", clear(TPM_RH.OWNER, b"owner")),
    ("da parameters", parameters(5, 10, 20)),
    ("da after parameters", DA_PROPERTIES),
    ("da reset", lock_reset()),
    ("lockout wrong", lock_reset(b"wrong")),
    ("lockout locked", lock_reset()),
    ("clear locked", clear(TPM_RH.LOCKOUT)),
    ("clear by platform", clear(TPM_RH.PLATFORM, b"p")),
    ("da after clear", DA_PROPERTIES),
    ("owner auth gone", change_auth(TPM_RH.OWNER, b"", b"")),
    ("changeeps", change_eps(b"p")),
    ("changepps", change_pps(b"p")),
    ("changepps wrong", change_pps(b"x")),
    ("changeeps owner", command(TPM_CC.ChangeEPS, handles=u32(TPM_RH.OWNER), auth=b"")),
]


@pytest.fixture
def pair():
    oracle = SwtpmOracle()
    ours = EngineOracle(Engine())
    for tpm in (oracle, ours):
        assert tpm.execute(STARTUP_CLEAR) == bytes.fromhex("80010000000a00000000")
    yield oracle, ours
    oracle.close()


def test_same_response_bytes(pair):
    oracle, ours = pair
    differences = []
    for name, cmd in SEQUENCE:
        theirs, mine = oracle.execute(cmd), ours.execute(cmd)
        if theirs != mine:
            differences.append(f"{name}: libtpms {theirs.hex()} ours {mine.hex()}")
    assert not differences, "\n".join(differences)


@pytest.mark.parametrize("code", MY_COMMANDS, ids=lambda c: TPM_CC(c).name)
def test_same_command_attributes(pair, code):
    oracle, ours = pair
    cmd = command(TPM_CC.GetCapability, u32(TPM_CAP.COMMANDS) + u32(code) + u32(1))
    assert ours.execute(cmd).hex() == oracle.execute(cmd).hex()
