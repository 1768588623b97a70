"""NV indices driven by Debian's tpm2-tools against ``vtpm-cuse socket`` (the swtpm TCTI):
define/write/read/undefine, counters, extend and bit-field indices, locks, an index
password, TPM2_NV_UndefineSpaceSpecial with a policy session, and NV state surviving a
daemon restart."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.support.daemon import Daemon
from tests.support.tpm2_tools import Tpm2Runner, module_tpm2_fixtures, tpm2_runner


def tools(daemon: Daemon) -> Tpm2Runner:
    return tpm2_runner(daemon.data_port)


daemon, tpm2 = module_tpm2_fixtures()


def nv_read(tpm2, tmp_path: Path, index: str, size: int, *auth: str) -> bytes:
    out = tmp_path / "read.bin"
    tpm2("nvread", index, *(auth or ("-C", "o")), "-s", str(size), "-o", str(out))
    return out.read_bytes()


def test_define_write_read_undefine(tpm2, tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"hello nv")
    tpm2("nvdefine", "0x1500016", "-C", "o", "-s", "32", "-a", "ownerread|ownerwrite")
    tpm2("nvwrite", "0x1500016", "-C", "o", "-i", str(data))
    assert nv_read(tpm2, tmp_path, "0x1500016", 8) == b"hello nv"
    public = tpm2("nvreadpublic", "0x1500016").stdout.decode()
    assert "0x1500016" in public and "size: 32" in public and "written" in public
    tpm2("nvundefine", "0x1500016", "-C", "o")
    assert tpm2("nvreadpublic", "0x1500016", check=False).returncode != 0


def test_counter_extend_and_bits(tpm2, tmp_path: Path) -> None:
    tpm2("nvdefine", "0x1500020", "-C", "o", "-s", "8", "-a", "nt=counter|ownerread|ownerwrite")
    for _ in range(3):
        tpm2("nvincrement", "0x1500020", "-C", "o")
    assert int.from_bytes(nv_read(tpm2, tmp_path, "0x1500020", 8), "big") == 3

    tpm2("nvdefine", "0x1500021", "-C", "o", "-s", "32", "-a", "nt=extend|ownerread|ownerwrite", "-g", "sha256")
    data = tmp_path / "extend.bin"
    data.write_bytes(b"measured")
    tpm2("nvextend", "0x1500021", "-C", "o", "-i", str(data))
    assert nv_read(tpm2, tmp_path, "0x1500021", 32) == hashlib.sha256(bytes(32) + b"measured").digest()

    tpm2("nvdefine", "0x1500022", "-C", "o", "-s", "8", "-a", "nt=bits|ownerread|ownerwrite")
    tpm2("nvsetbits", "0x1500022", "-C", "o", "-i", "0x5")
    tpm2("nvsetbits", "0x1500022", "-C", "o", "-i", "0x100")
    assert int.from_bytes(nv_read(tpm2, tmp_path, "0x1500022", 8), "big") == 0x105


def test_write_lock_and_read_lock(tpm2, tmp_path: Path) -> None:
    data = tmp_path / "d.bin"
    data.write_bytes(b"x")
    attrs = "ownerread|ownerwrite|write_stclear|read_stclear"
    tpm2("nvdefine", "0x1500030", "-C", "o", "-s", "4", "-a", attrs)
    tpm2("nvwrite", "0x1500030", "-C", "o", "-i", str(data))
    tpm2("nvwritelock", "0x1500030", "-C", "o")
    assert tpm2("nvwrite", "0x1500030", "-C", "o", "-i", str(data), check=False).returncode != 0
    tpm2("nvreadlock", "0x1500030", "-C", "o")
    result = tpm2("nvread", "0x1500030", "-C", "o", "-s", "1", check=False)
    assert result.returncode != 0 and b"0x148" in result.stderr  # TPM_RC_NV_LOCKED


def test_index_password(tpm2, tmp_path: Path) -> None:
    data = tmp_path / "d.bin"
    data.write_bytes(b"pw")
    tpm2("nvdefine", "0x1500040", "-C", "o", "-s", "2", "-a", "authread|authwrite", "-p", "secret")
    tpm2("nvwrite", "0x1500040", "-C", "0x1500040", "-P", "secret", "-i", str(data))
    assert nv_read(tpm2, tmp_path, "0x1500040", 2, "-C", "0x1500040", "-P", "secret") == b"pw"
    result = tpm2("nvread", "0x1500040", "-C", "0x1500040", "-P", "wrong", "-s", "2", check=False)
    # TPM_RC_AUTH_FAIL (the index is not NO_DA), as tpm2-tss describes it.
    assert result.returncode != 0 and b"DA counter incremented" in result.stderr


def test_undefine_policy_delete_index(tpm2, tmp_path: Path) -> None:
    session, policy = tmp_path / "session.ctx", tmp_path / "policy.dat"
    tpm2("startauthsession", "-S", str(session))
    tpm2("policycommandcode", "-S", str(session), "-L", str(policy), "TPM2_CC_NV_UndefineSpaceSpecial")
    tpm2("flushcontext", str(session))
    attrs = "ppread|ppwrite|platformcreate|policydelete"
    tpm2("nvdefine", "0x1500050", "-C", "p", "-s", "8", "-a", attrs, "-L", str(policy))
    # Not deletable with plain platform authorization.
    assert tpm2("nvundefine", "0x1500050", "-C", "p", check=False).returncode != 0
    tpm2("startauthsession", "--policy-session", "-S", str(session))
    tpm2("policycommandcode", "-S", str(session), "TPM2_CC_NV_UndefineSpaceSpecial")
    tpm2("nvundefine", "0x1500050", "-C", "p", "-S", str(session))
    tpm2("flushcontext", str(session), check=False)
    assert tpm2("nvreadpublic", "0x1500050", check=False).returncode != 0


def test_state_survives_daemon_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    data = tmp_path / "d.bin"
    data.write_bytes(b"persist")
    first = Daemon(state, extra=["--flags", "not-need-init"]).start()
    try:
        run = tools(first)
        run("startup", "-c")
        run("nvdefine", "0x1500060", "-C", "o", "-s", "7", "-a", "ownerread|ownerwrite")
        run("nvwrite", "0x1500060", "-C", "o", "-i", str(data))
        run("shutdown", "-c")
    finally:
        first.stop()
    second = Daemon(state, extra=["--flags", "not-need-init"]).start()
    try:
        run = tools(second)
        run("startup", "-c")
        assert nv_read(run, tmp_path, "0x1500060", 7) == b"persist"
    finally:
        second.stop()
