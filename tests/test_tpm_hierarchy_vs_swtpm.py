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

SUCCESS = bytes.fromhex("80010000000a00000000")

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


# --- TPMA_STARTUP_CLEAR.orderly -------------------------------------------------------------------

STARTUP_CLEAR_PROPERTY = command(TPM_CC.GetCapability, u32(TPM_CAP.TPM_PROPERTIES) + u32(TPM_PT.STARTUP_CLEAR) + u32(1))


def test_startup_clear_orderly_bit(pair):
    """TPMA_STARTUP_CLEAR.orderly (bit 31) is SET when the shutdown before this Startup was orderly
    -- Shutdown(CLEAR) or Shutdown(STATE), then Startup of either fitting type -- and CLEAR after a
    power cycle without one.  (A freshly manufactured TPM differs on purpose: libtpms reports its
    first Startup orderly, this engine, as Part 2 says, not -- no TPM2_Shutdown preceded it.)"""
    oracle, ours = pair
    steps = [
        ("Shutdown(CLEAR), Startup(CLEAR)", 0, 0),
        ("no Shutdown, Startup(CLEAR)", None, 0),
        ("Shutdown(STATE), Startup(STATE)", 1, 1),
        ("Shutdown(STATE), Startup(CLEAR)", 1, 0),
        ("again no Shutdown", None, 0),
        ("Shutdown(CLEAR) twice", 0, 0),
    ]
    results = []
    for name, shutdown, startup in steps:
        responses = []
        for side in ("libtpms", "ours"):
            if shutdown is not None:
                cmd = command(TPM_CC.Shutdown, shutdown.to_bytes(2, "big"))
                tpm = oracle if side == "libtpms" else ours
                assert tpm.execute(cmd) == SUCCESS
                if name.endswith("twice"):
                    assert tpm.execute(cmd) == SUCCESS
            if side == "libtpms":
                oracle.init()
                tpm = oracle
            else:
                ours = EngineOracle(Engine.from_blobs(ours.permanent_blob()))
                tpm = ours
            assert tpm.execute(command(TPM_CC.Startup, startup.to_bytes(2, "big"))) == SUCCESS
            responses.append(tpm.execute(STARTUP_CLEAR_PROPERTY))
        results.append((name, *responses))
    differences = [f"{name}: libtpms {a.hex()} ours {b.hex()}" for name, a, b in results if a != b]
    assert not differences, "\n".join(differences)
    orderly = {name: bool(int.from_bytes(a[-4:], "big") & (1 << 31)) for name, a, _ in results}
    assert orderly == {
        "Shutdown(CLEAR), Startup(CLEAR)": True,
        "no Shutdown, Startup(CLEAR)": False,
        "Shutdown(STATE), Startup(STATE)": True,
        "Shutdown(STATE), Startup(CLEAR)": True,
        "again no Shutdown": False,
        "Shutdown(CLEAR) twice": True,
    }


# --- proofs: what TPM2_Clear and TPM2_ChangePPS leave loadable ------------------------------------


def test_saved_contexts_after_clear_and_change_pps(pair):
    """ContextLoad of a saved primary of every hierarchy after TPM2_Clear (shProof and ehProof
    replaced) and then TPM2_ChangePPS (phProof): the same response codes as libtpms -- the owner's
    and endorsement's refused with TPM_RC_INTEGRITY (parameter 1), the platform's after ChangePPS,
    the NULL hierarchy's never."""
    from support.object_templates import create_primary_cmd, ecc_template

    hierarchies = (TPM_RH.PLATFORM, TPM_RH.OWNER, TPM_RH.ENDORSEMENT, TPM_RH.NULL)
    saved = {}
    for side, tpm in zip(("libtpms", "ours"), pair, strict=True):
        for h in hierarchies:
            resp = tpm.execute(create_primary_cmd(ecc_template(), h))
            assert resp[6:10] == bytes(4)
            handle = resp[10:14]
            context = tpm.execute(command(TPM_CC.ContextSave, handles=handle))
            assert context[6:10] == bytes(4)
            saved[side, h] = context[10:]
            assert tpm.execute(command(TPM_CC.FlushContext, handle)) == SUCCESS

    def load_codes(tpm, side):
        codes = []
        for h in hierarchies:
            resp = tpm.execute(command(TPM_CC.ContextLoad, saved[side, h]))
            codes.append(resp[6:10].hex())
            if resp[6:10] == bytes(4):
                assert tpm.execute(command(TPM_CC.FlushContext, resp[10:14])) == SUCCESS
        return codes

    for change in (clear(TPM_RH.LOCKOUT), change_pps()):
        codes = {}
        for side, tpm in zip(("libtpms", "ours"), pair, strict=True):
            assert tpm.execute(change)[6:10] == bytes(4)
            codes[side] = load_codes(tpm, side)
        assert codes["ours"] == codes["libtpms"]
    assert codes["ours"] == ["000001df", "000001df", "000001df", "00000000"]
