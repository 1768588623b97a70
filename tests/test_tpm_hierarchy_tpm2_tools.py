"""Debian's tpm2-tools driving the hierarchy and dictionary-attack commands of
``vtpm-cuse socket``: tpm2_changeauth, tpm2_clear, tpm2_clearcontrol,
tpm2_hierarchycontrol, tpm2_setprimarypolicy, tpm2_changeeps, tpm2_changepps
and tpm2_dictionarylockout, each checked by what it changes (properties,
handles, the keys a hierarchy derives, which authorizations work).

These commands change global TPM state (auths, seeds, lockout), so every test
that changes something gets its own daemon with a fresh state directory; only
the read-only checks share the module's daemon.

A few checks need commands that tpm2-tools refuses to send (it filters them
client side, e.g. lockout clearing disableClear); those go through
tpm2_send with a hand-built command carrying an empty password session.
"""

from __future__ import annotations

import hashlib
import re
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.tpm2_tools import Tpm2Runner as Tpm2
from tests.support.tpm2_tools import tpm2_runner

# Response codes as tpm2-tools prints them (session/handle/parameter 1 where it applies).
RC_DISABLED = 0x120
RC_HIERARCHY_H1 = 0x185
RC_AUTH_FAIL = 0x08E
RC_AUTH_FAIL_S1 = 0x98E
RC_BAD_AUTH_S1 = 0x9A2
RC_POLICY_FAIL_S1 = 0x99D
RC_LOCKOUT = 0x921
RC_AUTH_TYPE = 0x124

TPM_RH_OWNER = 0x40000001
TPM_RH_LOCKOUT = 0x4000000A
TPM_RH_ENDORSEMENT = 0x4000000B
TPM_RH_PLATFORM = 0x4000000C
TPM_RS_PW = 0x40000009
TPM_CC_HIERARCHY_CONTROL = 0x121
TPM_CC_CLEAR_CONTROL = 0x127
TPM_CC_CREATE_PRIMARY = 0x131
TPM_CC_POLICY_COMMAND_CODE = 0x16C
TPM_CC_GET_CAPABILITY = 0x17A
TPM_CC_NV_CHANGE_AUTH = 0x13B
TPM_CAP_AUTH_POLICIES = 0x9
TPM_ALG_SHA256 = 0x000B
TPM_ALG_NULL = 0x0010

PERSISTENT_OWNER = "0x81000001"
PERSISTENT_ENDORSEMENT = "0x81010001"
NV_OWNER = "0x1500016"
DA_KEY_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt"


def make_runner(daemon: Daemon) -> Tpm2:
    run = tpm2_runner(daemon.data_port)
    run("startup", "-c")
    return run


def start_daemon(state_dir: Path) -> Daemon:
    return Daemon(state_dir, extra=["--flags", "not-need-init"]).start()


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("shared-state"))
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def shared_tpm2(shared_daemon: Daemon) -> Tpm2:
    """A TPM the tests only read (or load and flush transient objects in)."""
    return make_runner(shared_daemon)


@pytest.fixture
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("state"))
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def tpm2(daemon: Daemon) -> Tpm2:
    """A freshly manufactured TPM of this test's own."""
    return make_runner(daemon)


# --- helpers ------------------------------------------------------------------------------------


def tpm_rc(result: subprocess.CompletedProcess[bytes]) -> int:
    """The TPM response code of a failed tool run, from its ``ERROR: Esys_X(0x...)`` line."""
    assert result.returncode != 0, "the command should have failed"
    found = re.search(rb"ERROR: Esys_\w+\((0x[0-9A-Fa-f]+)\)", result.stderr)
    assert found, f"no TPM response code in: {result.stderr.decode()}"
    return int(found.group(1), 16)


def fails(tpm2: Tpm2, *args: str) -> int:
    return tpm_rc(tpm2(*args, check=False))


def properties(tpm2: Tpm2) -> dict[str, int]:
    """tpm2_getcap properties-variable as name -> value (TPMA_* bits by their field names)."""
    props = {}
    for line in tpm2("getcap", "properties-variable").stdout.decode().splitlines():
        name, _, value = line.partition(":")
        if value.strip():
            props[name.strip()] = int(value.strip(), 0)
    return props


def handles(tpm2: Tpm2, kind: str) -> list[int]:
    out = tpm2("getcap", f"handles-{kind}").stdout.decode()
    return [int(line.removeprefix("- "), 16) for line in out.splitlines() if line.startswith("- ")]


def primary_public(tpm2: Tpm2, tmp_path: Path, hierarchy: str, *auth: str) -> bytes:
    """TPM2B_PUBLIC (tpm2_readpublic) of the default ECC primary of ``hierarchy``, flushed after."""
    ctx, pub = tmp_path / f"primary-{hierarchy}.ctx", tmp_path / f"primary-{hierarchy}.pub"
    tpm2("createprimary", "-C", hierarchy, *auth, "-G", "ecc", "-c", str(ctx))
    try:
        tpm2("readpublic", "-c", str(ctx), "-o", str(pub))
    finally:
        tpm2("flushcontext", "-t")
    return pub.read_bytes()


def create_primary_fails(tpm2: Tpm2, tmp_path: Path, hierarchy: str, *auth: str) -> int:
    result = tpm2("createprimary", "-C", hierarchy, *auth, "-G", "ecc", "-c", str(tmp_path / "x.ctx"), check=False)
    tpm2("flushcontext", "-t")
    return tpm_rc(result)


def send(tpm2: Tpm2, tmp_path: Path, command: bytes) -> tuple[int, bytes]:
    """One raw command through tpm2_send: (response code, response after the header)."""
    cmd, resp = tmp_path / "raw.cmd", tmp_path / "raw.resp"
    cmd.write_bytes(command)
    tpm2("send", "-o", str(resp), str(cmd))
    data = resp.read_bytes()
    _tag, size, rc = struct.unpack(">HII", data[:10])
    assert size == len(data)
    return rc, data[10:]


def password_command(cc: int, handle: int, params: bytes) -> bytes:
    """A command with one authorization handle and an empty password session."""
    session = struct.pack(">IHBH", TPM_RS_PW, 0, 0x01, 0)
    body = struct.pack(">II", handle, len(session)) + session + params
    return struct.pack(">HII", 0x8002, 10 + len(body), cc) + body


def auth_policies(tpm2: Tpm2, tmp_path: Path) -> dict[int, tuple[int, bytes]]:
    """TPM2_GetCapability(TPM_CAP_AUTH_POLICIES) -- tpm2_getcap 5.4 has no name for it."""
    params = struct.pack(">III", TPM_CAP_AUTH_POLICIES, TPM_RH_OWNER, 8)
    rc, data = send(tpm2, tmp_path, struct.pack(">HII", 0x8001, 10 + len(params), TPM_CC_GET_CAPABILITY) + params)
    assert rc == 0
    capability, count = struct.unpack(">II", data[1:9])
    assert capability == TPM_CAP_AUTH_POLICIES
    policies, at = {}, 9
    for _ in range(count):
        handle, alg = struct.unpack(">IH", data[at : at + 6])
        size = {TPM_ALG_NULL: 0, TPM_ALG_SHA256: hashlib.sha256().digest_size}[alg]
        policies[handle] = (alg, data[at + 6 : at + 6 + size])
        at += 6 + size
    assert at == len(data)
    return policies


# --- shared, read-only --------------------------------------------------------------------------


@pytest.mark.parametrize("hierarchy", ["o", "e", "p"])
def test_primaries_are_deterministic(shared_tpm2: Tpm2, tmp_path: Path, hierarchy: str) -> None:
    first = primary_public(shared_tpm2, tmp_path, hierarchy)
    assert primary_public(shared_tpm2, tmp_path, hierarchy) == first
    others = {primary_public(shared_tpm2, tmp_path, h) for h in "oep" if h != hierarchy}
    assert first not in others  # each hierarchy has its own seed


def test_manufactured_defaults(shared_tpm2: Tpm2, tmp_path: Path) -> None:
    props = properties(shared_tpm2)
    assert props["ownerAuthSet"] == props["endorsementAuthSet"] == props["lockoutAuthSet"] == 0
    assert props["disableClear"] == props["inLockout"] == 0
    assert props["phEnable"] == props["shEnable"] == props["ehEnable"] == props["phEnableNV"] == 1
    assert props["TPM2_PT_MAX_AUTH_FAIL"] == 3
    assert props["TPM2_PT_LOCKOUT_INTERVAL"] == props["TPM2_PT_LOCKOUT_RECOVERY"] == 1000
    assert props["TPM2_PT_LOCKOUT_COUNTER"] == 0
    assert auth_policies(shared_tpm2, tmp_path) == {
        h: (TPM_ALG_NULL, b"") for h in (TPM_RH_OWNER, TPM_RH_LOCKOUT, TPM_RH_ENDORSEMENT, TPM_RH_PLATFORM)
    }


# --- tpm2_changeauth ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hierarchy", "flag"),
    [("owner", "ownerAuthSet"), ("endorsement", "endorsementAuthSet"), ("platform", None)],
)
def test_changeauth_hierarchy(tpm2: Tpm2, tmp_path: Path, hierarchy: str, flag: str | None) -> None:
    short = hierarchy[0]
    tpm2("changeauth", "-c", hierarchy, "first")
    if flag:
        assert properties(tpm2)[flag] == 1
    tpm2("changeauth", "-c", hierarchy, "-p", "first", "second")
    primary_public(tpm2, tmp_path, short, "-P", "second")
    # Hierarchies are not DA-protected: a wrong value is TPM_RC_BAD_AUTH and counts nothing.
    assert create_primary_fails(tpm2, tmp_path, short, "-P", "first") == RC_BAD_AUTH_S1
    assert create_primary_fails(tpm2, tmp_path, short) == RC_BAD_AUTH_S1
    assert properties(tpm2)["TPM2_PT_LOCKOUT_COUNTER"] == 0
    # and back
    tpm2("changeauth", "-c", hierarchy, "-p", "second", "first")
    primary_public(tpm2, tmp_path, short, "-P", "first")
    assert create_primary_fails(tpm2, tmp_path, short, "-P", "second") == RC_BAD_AUTH_S1
    tpm2("changeauth", "-c", hierarchy, "-p", "first")
    primary_public(tpm2, tmp_path, short)
    if flag:
        assert properties(tpm2)[flag] == 0


def test_changeauth_lockout(tpm2: Tpm2) -> None:
    tpm2("changeauth", "-c", "lockout", "first")
    assert properties(tpm2)["lockoutAuthSet"] == 1
    tpm2("changeauth", "-c", "lockout", "-p", "first", "second")
    # Works with the new value; a lockoutRecovery of 1 s keeps the wrong try below short.
    tpm2("dictionarylockout", "--setup-parameters", "-n", "3", "-t", "1000", "-l", "1", "-p", "second")
    assert properties(tpm2)["TPM2_PT_LOCKOUT_RECOVERY"] == 1
    tpm2("dictionarylockout", "--clear-lockout", "-p", "second")
    # The old value fails -- and lockoutAuth is DA-protected on its own: after the failure
    # even the right value is refused until lockoutRecovery has passed.
    assert fails(tpm2, "dictionarylockout", "--clear-lockout", "-p", "first") == RC_AUTH_FAIL_S1
    assert fails(tpm2, "dictionarylockout", "--clear-lockout", "-p", "second") == RC_LOCKOUT
    assert fails(tpm2, "clear", "second") == RC_LOCKOUT
    assert properties(tpm2)["TPM2_PT_LOCKOUT_COUNTER"] == 0  # lockoutAuth does not count in failedTries
    time.sleep(1.2)
    tpm2("changeauth", "-c", "lockout", "-p", "second", "first")
    tpm2("dictionarylockout", "--clear-lockout", "-p", "first")
    tpm2("changeauth", "-c", "lockout", "-p", "first")
    assert properties(tpm2)["lockoutAuthSet"] == 0
    tpm2("dictionarylockout", "--clear-lockout")


# --- tpm2_clear / tpm2_clearcontrol -------------------------------------------------------------


def test_clear_with_lockout_auth(tpm2: Tpm2, tmp_path: Path) -> None:
    tpm2("changeauth", "-c", "owner", "ownerpw")
    tpm2("changeauth", "-c", "endorsement", "endorsementpw")
    tpm2("changeauth", "-c", "lockout", "lockoutpw")
    tpm2("dictionarylockout", "-s", "-n", "7", "-t", "20", "-l", "30", "-p", "lockoutpw")
    owner_before = primary_public(tpm2, tmp_path, "o", "-P", "ownerpw")
    endorsement_before = primary_public(tpm2, tmp_path, "e", "-P", "endorsementpw")
    ctx = tmp_path / "persist.ctx"
    tpm2("createprimary", "-C", "o", "-P", "ownerpw", "-G", "ecc", "-c", str(ctx))
    tpm2("evictcontrol", "-C", "o", "-P", "ownerpw", "-c", str(ctx), PERSISTENT_OWNER)
    tpm2("flushcontext", "-t")
    tpm2("nvdefine", "-C", "o", "-P", "ownerpw", "-s", "32", NV_OWNER)
    assert int(PERSISTENT_OWNER, 16) in handles(tpm2, "persistent")
    assert int(NV_OWNER, 16) in handles(tpm2, "nv-index")

    tpm2("clear", "-c", "l", "lockoutpw")

    props = properties(tpm2)
    assert props["ownerAuthSet"] == props["endorsementAuthSet"] == props["lockoutAuthSet"] == 0
    assert props["TPM2_PT_MAX_AUTH_FAIL"] == 3  # DA parameters back to the defaults
    assert props["TPM2_PT_LOCKOUT_INTERVAL"] == props["TPM2_PT_LOCKOUT_RECOVERY"] == 1000
    assert handles(tpm2, "persistent") == []
    assert handles(tpm2, "nv-index") == []
    # The old owner password is gone (the empty one works now), and so is the old SPS.
    assert create_primary_fails(tpm2, tmp_path, "o", "-P", "ownerpw") == RC_BAD_AUTH_S1
    owner_after = primary_public(tpm2, tmp_path, "o")
    assert owner_after != owner_before
    assert primary_public(tpm2, tmp_path, "o") == owner_after
    # TPM2_Clear leaves the EPS alone.
    assert primary_public(tpm2, tmp_path, "e") == endorsement_before


def test_clearcontrol(tpm2: Tpm2, tmp_path: Path) -> None:
    owner_before = primary_public(tpm2, tmp_path, "o")
    tpm2("clearcontrol", "-C", "p", "s")
    assert properties(tpm2)["disableClear"] == 1
    assert fails(tpm2, "clear") == RC_DISABLED
    assert fails(tpm2, "clear", "-c", "p") == RC_DISABLED  # disableClear stops the platform too
    assert primary_public(tpm2, tmp_path, "o") == owner_before

    tpm2("clearcontrol", "-C", "p", "c")
    assert properties(tpm2)["disableClear"] == 0
    tpm2("clear")
    owner_cleared = primary_public(tpm2, tmp_path, "o")
    assert owner_cleared != owner_before
    tpm2("clear", "-c", "p")
    assert primary_public(tpm2, tmp_path, "o") != owner_cleared

    # lockoutAuth may set disableClear, but not clear it again.
    tpm2("clearcontrol", "-C", "l", "s")
    assert properties(tpm2)["disableClear"] == 1
    refused = tpm2("clearcontrol", "-C", "l", "c", check=False)
    assert refused.returncode != 0 and b"Only platform" in refused.stderr  # tpm2-tools filters it
    rc, _ = send(tpm2, tmp_path, password_command(TPM_CC_CLEAR_CONTROL, TPM_RH_LOCKOUT, b"\x00"))
    assert rc == RC_AUTH_FAIL  # Part 3, 24.7: a format-one code without a parameter number
    assert properties(tpm2)["disableClear"] == 1
    assert fails(tpm2, "clear") == RC_DISABLED
    tpm2("clearcontrol", "-C", "p", "c")
    assert properties(tpm2)["disableClear"] == 0


# --- tpm2_hierarchycontrol ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "hierarchy", "handle"),
    [("shEnable", "o", TPM_RH_OWNER), ("ehEnable", "e", TPM_RH_ENDORSEMENT)],
    ids=["shEnable", "ehEnable"],
)
def test_hierarchycontrol(tpm2: Tpm2, tmp_path: Path, flag: str, hierarchy: str, handle: int) -> None:
    before = primary_public(tpm2, tmp_path, hierarchy)
    tpm2("createprimary", "-C", hierarchy, "-G", "ecc", "-c", str(tmp_path / "loaded.ctx"))
    assert len(handles(tpm2, "transient")) == 1

    tpm2("hierarchycontrol", "-C", "p", flag, "clear")
    props = properties(tpm2)
    assert props[flag] == 0
    assert props["phEnable"] == props["phEnableNV"] == 1
    assert props["shEnable" if flag == "ehEnable" else "ehEnable"] == 1
    assert handles(tpm2, "transient") == []  # the hierarchy's objects are flushed
    assert create_primary_fails(tpm2, tmp_path, hierarchy) == RC_HIERARCHY_H1

    tpm2("hierarchycontrol", "-C", "p", flag, "set")
    assert properties(tpm2)[flag] == 1
    assert primary_public(tpm2, tmp_path, hierarchy) == before  # same seed: same key

    # The hierarchy may disable itself, but only the platform can enable it again.
    tpm2("hierarchycontrol", "-C", hierarchy, flag, "clear")
    assert properties(tpm2)[flag] == 0
    assert tpm2("hierarchycontrol", "-C", hierarchy, flag, "set", check=False).returncode != 0  # tools refuse
    enable = struct.pack(">IB", handle, 1)
    rc, _ = send(tpm2, tmp_path, password_command(TPM_CC_HIERARCHY_CONTROL, handle, enable))
    assert rc == RC_HIERARCHY_H1  # the authorizing hierarchy is itself disabled
    assert properties(tpm2)[flag] == 0
    tpm2("hierarchycontrol", "-C", "p", flag, "set")
    assert properties(tpm2)[flag] == 1
    primary_public(tpm2, tmp_path, hierarchy)


# --- tpm2_setprimarypolicy ----------------------------------------------------------------------


def test_setprimarypolicy_owner(tpm2: Tpm2, tmp_path: Path) -> None:
    trial, policy = tmp_path / "trial.ctx", tmp_path / "createprimary.policy"
    tpm2("startauthsession", "-S", str(trial))
    try:
        tpm2("policycommandcode", "-S", str(trial), "-L", str(policy), "TPM2_CC_CreatePrimary")
    finally:
        tpm2("flushcontext", str(trial))
    expected = hashlib.sha256(bytes(32) + struct.pack(">II", TPM_CC_POLICY_COMMAND_CODE, TPM_CC_CREATE_PRIMARY))
    assert policy.read_bytes() == expected.digest()

    tpm2("setprimarypolicy", "-C", "o", "-L", str(policy), "-g", "sha256")
    policies = auth_policies(tpm2, tmp_path)
    assert policies[TPM_RH_OWNER] == (TPM_ALG_SHA256, expected.digest())
    assert policies[TPM_RH_ENDORSEMENT] == policies[TPM_RH_LOCKOUT] == policies[TPM_RH_PLATFORM] == (TPM_ALG_NULL, b"")

    # The policy authorizes the owner hierarchy even with an ownerAuth nobody here knows.
    tpm2("changeauth", "-c", "owner", "secret")
    session = tmp_path / "policy.ctx"
    for code, expect in (("TPM2_CC_CreatePrimary", None), ("TPM2_CC_Create", RC_POLICY_FAIL_S1)):
        tpm2("startauthsession", "--policy-session", "-S", str(session))
        try:
            tpm2("policycommandcode", "-S", str(session), code)
            if expect is None:
                primary_public(tpm2, tmp_path, "o", "-P", f"session:{session}")
            else:
                assert create_primary_fails(tpm2, tmp_path, "o", "-P", f"session:{session}") == expect
        finally:
            tpm2("flushcontext", str(session))

    tpm2("setprimarypolicy", "-C", "o", "-P", "secret")  # no -L: back to the empty policy
    assert auth_policies(tpm2, tmp_path)[TPM_RH_OWNER] == (TPM_ALG_NULL, b"")


# --- tpm2_changeeps / tpm2_changepps ------------------------------------------------------------


def test_changeeps(tpm2: Tpm2, tmp_path: Path) -> None:
    before = primary_public(tpm2, tmp_path, "e")
    assert primary_public(tpm2, tmp_path, "e") == before
    owner, platform = primary_public(tpm2, tmp_path, "o"), primary_public(tpm2, tmp_path, "p")
    tpm2("changeauth", "-c", "endorsement", "endorsementpw")
    ctx = tmp_path / "ek.ctx"
    tpm2("createprimary", "-C", "e", "-P", "endorsementpw", "-G", "ecc", "-c", str(ctx))
    tpm2("evictcontrol", "-C", "o", "-c", str(ctx), PERSISTENT_ENDORSEMENT)
    assert int(PERSISTENT_ENDORSEMENT, 16) in handles(tpm2, "persistent")
    assert handles(tpm2, "transient")  # the primary (and the copy tpm2_evictcontrol loaded)

    tpm2("changeeps")

    assert handles(tpm2, "transient") == []
    assert int(PERSISTENT_ENDORSEMENT, 16) not in handles(tpm2, "persistent")
    assert properties(tpm2)["endorsementAuthSet"] == 0  # endorsementAuth is reset too
    after = primary_public(tpm2, tmp_path, "e")
    assert after != before
    assert primary_public(tpm2, tmp_path, "e") == after
    assert primary_public(tpm2, tmp_path, "o") == owner
    assert primary_public(tpm2, tmp_path, "p") == platform


def test_changepps(tpm2: Tpm2, tmp_path: Path) -> None:
    before = primary_public(tpm2, tmp_path, "p")
    assert primary_public(tpm2, tmp_path, "p") == before
    owner, endorsement = primary_public(tpm2, tmp_path, "o"), primary_public(tpm2, tmp_path, "e")
    tpm2("changeauth", "-c", "platform", "platformpw")
    assert fails(tpm2, "changepps") == RC_BAD_AUTH_S1
    assert primary_public(tpm2, tmp_path, "p", "-P", "platformpw") == before

    tpm2("changepps", "-p", "platformpw")

    after = primary_public(tpm2, tmp_path, "p", "-P", "platformpw")
    assert after != before
    assert primary_public(tpm2, tmp_path, "p", "-P", "platformpw") == after
    assert primary_public(tpm2, tmp_path, "o") == owner
    assert primary_public(tpm2, tmp_path, "e") == endorsement


# --- tpm2_dictionarylockout ---------------------------------------------------------------------


def test_dictionarylockout_setup_parameters(tpm2: Tpm2) -> None:
    tpm2("changeauth", "-c", "lockout", "lockoutpw")
    tpm2(
        "dictionarylockout",
        "--setup-parameters",
        "--max-tries",
        "2",
        "--recovery-time",
        "10",
        "--lockout-recovery-time",
        "10",
        "-p",
        "lockoutpw",
    )
    props = properties(tpm2)
    assert props["TPM2_PT_MAX_AUTH_FAIL"] == 2
    assert props["TPM2_PT_LOCKOUT_INTERVAL"] == 10
    assert props["TPM2_PT_LOCKOUT_RECOVERY"] == 10
    assert props["TPM2_PT_LOCKOUT_COUNTER"] == 0
    tpm2("dictionarylockout", "-s", "-n", "5", "-t", "0", "-l", "0", "-p", "lockoutpw")
    props = properties(tpm2)
    assert (props["TPM2_PT_MAX_AUTH_FAIL"], props["TPM2_PT_LOCKOUT_INTERVAL"], props["TPM2_PT_LOCKOUT_RECOVERY"]) == (
        5,
        0,
        0,
    )


def test_dictionary_attack_lockout_and_reset(tpm2: Tpm2, tmp_path: Path) -> None:
    tpm2("changeauth", "-c", "lockout", "lockoutpw")
    tpm2("changeauth", "-c", "owner", "ownerpw")
    tpm2("dictionarylockout", "-s", "-n", "2", "-t", "10", "-l", "10", "-p", "lockoutpw")
    key, noda = tmp_path / "key.ctx", tmp_path / "noda.ctx"
    tpm2(
        "createprimary",
        "-C",
        "o",
        "-P",
        "ownerpw",
        "-G",
        "ecc",
        "-a",
        DA_KEY_ATTRIBUTES,
        "-p",
        "keypass",
        "-c",
        str(key),
    )
    tpm2(
        "createprimary",
        "-C",
        "o",
        "-P",
        "ownerpw",
        "-G",
        "ecc",
        "-a",
        DA_KEY_ATTRIBUTES + "|noda",
        "-p",
        "nodapass",
        "-c",
        str(noda),
    )

    def create_under(parent: Path, password: str) -> subprocess.CompletedProcess[bytes]:
        result = tpm2(
            "create",
            "-C",
            str(parent),
            "-P",
            password,
            "-G",
            "ecc",
            "-u",
            str(tmp_path / "child.pub"),
            "-r",
            str(tmp_path / "child.priv"),
            check=False,
        )
        # tpm2_create loads the parent's saved context again each time; the files stay loadable.
        tpm2("flushcontext", "-t")
        return result

    assert create_under(key, "keypass").returncode == 0
    # Neither a wrong hierarchy password nor a wrong one of a noDA key counts.
    assert create_primary_fails(tpm2, tmp_path, "o", "-P", "wrong") == RC_BAD_AUTH_S1
    assert tpm_rc(create_under(noda, "wrong")) == RC_BAD_AUTH_S1
    assert properties(tpm2)["TPM2_PT_LOCKOUT_COUNTER"] == 0

    for tries in (1, 2):
        assert tpm_rc(create_under(key, "wrong")) == RC_AUTH_FAIL_S1
        assert properties(tpm2)["TPM2_PT_LOCKOUT_COUNTER"] == tries
    props = properties(tpm2)
    assert props["inLockout"] == 1

    locked = create_under(key, "keypass")
    assert tpm_rc(locked) == RC_LOCKOUT and b"0x921" in locked.stderr
    assert properties(tpm2)["TPM2_PT_LOCKOUT_COUNTER"] == 2  # a refused try is not counted
    # Only DA-protected authorizations are locked out.
    assert create_under(noda, "nodapass").returncode == 0
    primary_public(tpm2, tmp_path, "o", "-P", "ownerpw")

    tpm2("dictionarylockout", "--clear-lockout", "-p", "lockoutpw")
    props = properties(tpm2)
    assert props["TPM2_PT_LOCKOUT_COUNTER"] == 0
    assert props["inLockout"] == 0
    assert create_under(key, "keypass").returncode == 0


# --- tpm2_changeauth of an NV index ---------------------------------------------------------------

NV_CHANGEAUTH = "0x1500020"


def test_changeauth_nv_index(tpm2: Tpm2, tmp_path: Path) -> None:
    """TPM2_NV_ChangeAuth needs the ADMIN role, which for an NV index takes a policy session: the
    index's authPolicy here is PolicyCommandCode(TPM2_CC_NV_ChangeAuth) (computed in a trial session)."""
    trial, policy, session = tmp_path / "trial.ctx", tmp_path / "nvchangeauth.policy", tmp_path / "session.ctx"
    tpm2("startauthsession", "-S", str(trial))
    try:
        tpm2("policycommandcode", "-S", str(trial), "-L", str(policy), "TPM2_CC_NV_ChangeAuth")
    finally:
        tpm2("flushcontext", str(trial))
    expected = hashlib.sha256(bytes(32) + struct.pack(">II", TPM_CC_POLICY_COMMAND_CODE, TPM_CC_NV_CHANGE_AUTH))
    assert policy.read_bytes() == expected.digest()
    tpm2(
        "nvdefine",
        "-C",
        "o",
        "-s",
        "8",
        "-a",
        "authread|authwrite|no_da",
        "-p",
        "oldpass",
        "-L",
        str(policy),
        NV_CHANGEAUTH,
    )
    data = tmp_path / "data"
    data.write_bytes(b"12345678")
    tpm2("nvwrite", "-C", NV_CHANGEAUTH, "-P", "oldpass", "-i", str(data), NV_CHANGEAUTH)

    # The password alone is not enough: the ADMIN role takes a policy session (TPM_RC_AUTH_TYPE).
    assert fails(tpm2, "changeauth", "-c", NV_CHANGEAUTH, "-p", "oldpass", "newpass") == RC_AUTH_TYPE
    tpm2("startauthsession", "--policy-session", "-S", str(session))
    try:
        tpm2("policycommandcode", "-S", str(session), "TPM2_CC_NV_ChangeAuth")
        tpm2("changeauth", "-c", NV_CHANGEAUTH, "-p", f"session:{session}", "newpass")
    finally:
        tpm2("flushcontext", str(session))

    assert tpm2("nvread", "-C", NV_CHANGEAUTH, "-P", "newpass", "-s", "8", NV_CHANGEAUTH).stdout == b"12345678"
    data.write_bytes(b"87654321")
    tpm2("nvwrite", "-C", NV_CHANGEAUTH, "-P", "newpass", "-i", str(data), NV_CHANGEAUTH)
    assert tpm2("nvread", "-C", NV_CHANGEAUTH, "-P", "newpass", "-s", "8", NV_CHANGEAUTH).stdout == b"87654321"
    # The old password is refused (noDA: TPM_RC_BAD_AUTH, nothing counted) for reading and writing.
    assert fails(tpm2, "nvread", "-C", NV_CHANGEAUTH, "-P", "oldpass", "-s", "8", NV_CHANGEAUTH) == RC_BAD_AUTH_S1
    refused = tpm2("nvwrite", "-C", NV_CHANGEAUTH, "-P", "oldpass", "-i", str(data), NV_CHANGEAUTH, check=False)
    assert refused.returncode != 0 and b"ErrorCode (0x%08x)" % RC_BAD_AUTH_S1 in refused.stderr  # its own format
    assert properties(tpm2)["TPM2_PT_LOCKOUT_COUNTER"] == 0
