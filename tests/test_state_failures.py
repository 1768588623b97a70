"""The state directory failing under the daemon: disk full, read-only, corrupt files.

Through the real ``vtpm-cuse socket`` process and its control channel:

* disk full (a small tmpfs filled up) and a read-only directory (a read-only
  bind mount over it): a TPM command that must write NV answers
  TPM_RC_NV_UNAVAILABLE (Part 1: NV is not accessible, the command was not
  executed -- not NV_RATE, which is the TPM's own wear limiter), its change is
  not applied even in RAM (except a dictionary-attack failure, which stays
  counted: a full disk must not become a free password oracle),
  CMD_STORE_VOLATILE answers TPM_FAIL (swtpm's code
  for a failed state write), the file on disk stays the last good one with no
  temporary file left, the TPM keeps answering, and once the directory is
  usable again writes work;
* corrupt state files (truncated, a flipped byte in the header, the body or the
  tag, the wrong --key, the permanent state missing while the volatile state
  exists): CMD_INIT fails with TPM_RC_FAILURE (0x101, as swtpm/libtpms answer
  for all of them), the log names the file and the reason, the daemon started
  with ``--flags not-need-init,startup-clear`` refuses to start, and the file
  is untouched (no new TPM is manufactured over it).

A wrong key answers 0x101 like swtpm (its own test of a wrong state key
expects it); the log line says "failed authentication" and names the file.
Deliberate difference from swtpm (checked below): a missing permanent state next
to a volatile one is refused without writing anything, where swtpm writes a new
permanent state.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ioctl_defs import PtmCmd, PtmInitRequest, PtmResult
from support.crash_harness import NT_ORDINARY, NV_ATTRIBUTES, NV_NO_DA, TPM_CAP_TPM_PROPERTIES, nv_public
from support.ctrl_client import ctrl_result
from support.daemon import Daemon
from support.swtpm_oracle import SwtpmOracle
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm.constants import TPM_CC, TPM_PT, TPM_RH
from vtpm_cuse.tpm.errors import TPM_RC

INDEX, DA_INDEX = 0x01500040, 0x01500041
PERMALL, VOLATILE = "tpm2-00.permall", "tpm2-00.volatilestate"
BOOT = ["--flags", "not-need-init,startup-clear"]
KEY_A, KEY_B = "00" * 16, "11" * 16


def run_mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True, capture_output=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    run_mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        umount(path)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """A read-only bind mount over ``path`` (root ignores permission bits, not EROFS)."""
    run_mount("--bind", str(path), str(path))
    try:
        run_mount("-o", "remount,bind,ro", str(path))
        yield
    finally:
        umount(path)


def tpm(daemon_sock, cmd: bytes) -> Response:
    daemon_sock.sendall(cmd)
    header = daemon_sock.recv(10, 0x100)  # MSG_WAITALL
    rest = b""
    while len(rest) < int.from_bytes(header[2:6], "big") - 10:
        rest += daemon_sock.recv(4096)
    return Response(header + rest)


def nv_write(value: bytes) -> bytes:
    return command(TPM_CC.NV_Write, tpm2b(value) + u16(0), u32(INDEX) * 2, b"")


def nv_read_value(sock) -> bytes:
    resp = tpm(sock, command(TPM_CC.NV_Read, u16(4) + u16(0), u32(INDEX) * 2, b""))
    assert resp.rc == 0, hex(resp.rc)
    return resp.params()[2:6]


def define_index(sock) -> None:
    public = nv_public(INDEX, NT_ORDINARY, 4)
    assert tpm(sock, command(TPM_CC.NV_DefineSpace, tpm2b(b"") + public, u32(TPM_RH.OWNER), b"")).rc == 0


def define_da_index(sock) -> None:
    """An NV index whose wrong password counts as a dictionary-attack failure."""
    public = nv_public(DA_INDEX, NT_ORDINARY, 1, NV_ATTRIBUTES & ~NV_NO_DA)
    assert tpm(sock, command(TPM_CC.NV_DefineSpace, tpm2b(b"secret") + public, u32(TPM_RH.OWNER), b"")).rc == 0


def guess_da_password(sock) -> int:
    return tpm(sock, command(TPM_CC.NV_Read, u16(1) + u16(0), u32(DA_INDEX) * 2, b"guess")).rc


def lockout_counter(sock) -> int:
    cmd = command(TPM_CC.GetCapability, u32(TPM_CAP_TPM_PROPERTIES) + u32(TPM_PT.LOCKOUT_COUNTER) + u32(1))
    resp = tpm(sock, cmd)
    assert resp.rc == 0, hex(resp.rc)
    return int.from_bytes(resp.params()[13:17], "big")


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("TMP"))


def check_write_refused(state: Path, daemon: Daemon, sock, ctrl) -> None:
    """The common expectations while the directory cannot be written."""
    before = (state / PERMALL).read_bytes()
    assert tpm(sock, nv_write(b"NEW!")).rc == TPM_RC.NV_UNAVAILABLE
    assert nv_read_value(sock) == b"OLD!"  # not applied in RAM either
    assert (state / PERMALL).read_bytes() == before
    assert temp_files(state) == []
    assert ctrl_result(ctrl, PtmCmd.CMD_STORE_VOLATILE) == PtmResult.TPM_FAIL
    assert not (state / VOLATILE).exists() and temp_files(state) == []
    # A wrong password still counts (in RAM), or a full disk would be a free guessing oracle.
    assert guess_da_password(sock) == TPM_RC.NV_UNAVAILABLE
    assert lockout_counter(sock) == 1
    # The TPM keeps answering.
    assert tpm(sock, command(TPM_CC.GetRandom, u16(8))).rc == 0
    assert daemon.proc is not None and daemon.proc.poll() is None


def check_write_recovers(state: Path, daemon: Daemon, sock, ctrl) -> None:
    assert tpm(sock, nv_write(b"NEW!")).rc == 0
    assert ctrl_result(ctrl, PtmCmd.CMD_STORE_VOLATILE) == 0
    assert nv_read_value(sock) == b"NEW!"
    sock.close()
    ctrl.close()
    daemon.stop()
    restarted = Daemon(state, extra=BOOT).start()  # fresh ports: the old ones may be taken meanwhile
    try:
        with restarted.connect_data() as again:
            assert nv_read_value(again) == b"NEW!"
            assert lockout_counter(again) == 1  # written with the NV_Write that succeeded
    finally:
        restarted.stop()


def started_with_old_value(state: Path) -> tuple[Daemon, object, object]:
    daemon = Daemon(state, extra=BOOT).start()
    sock, ctrl = daemon.connect_data(), daemon.connect_ctrl()
    define_index(sock)
    define_da_index(sock)
    assert tpm(sock, nv_write(b"OLD!")).rc == 0
    return daemon, sock, ctrl


def test_disk_full_refuses_writes_and_recovers(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "1m") as fs:
        state = fs / "state"
        daemon, sock, ctrl = started_with_old_value(state)
        try:
            filler = fill(fs)
            check_write_refused(state, daemon, sock, ctrl)
            filler.unlink()
            check_write_recovers(state, daemon, sock, ctrl)
        finally:
            daemon.stop()


def test_read_only_directory_refuses_writes_and_recovers(tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon, sock, ctrl = started_with_old_value(state)
    try:
        with read_only(state):
            check_write_refused(state, daemon, sock, ctrl)
        check_write_recovers(state, daemon, sock, ctrl)
    finally:
        daemon.stop()


# --- corrupt state files ------------------------------------------------------------------


def key_args(directory: Path, key: str | None) -> list[str]:
    if key is None:
        return []
    path = directory.parent / f"key-{key[:2]}"
    path.write_text(key)
    return ["--key", f"file={path},format=hex"]


@pytest.fixture(scope="module")
def good_states(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A state directory with both files, without and with --key."""
    states = {}
    for name, key in (("plain", None), ("keyed", KEY_A)):
        state = tmp_path_factory.mktemp(name) / "state"
        daemon = Daemon(state, extra=BOOT + key_args(state, key)).start()
        with daemon.connect_data() as sock, daemon.connect_ctrl() as ctrl:
            define_index(sock)
            assert ctrl_result(ctrl, PtmCmd.CMD_STORE_VOLATILE) == 0
        daemon.stop()
        assert (state / PERMALL).exists() and (state / VOLATILE).exists()
        states[name] = state
    return states


def flip(offset: int) -> Callable[[bytes], bytes]:
    def damage(raw: bytes) -> bytes:
        at = offset % len(raw)
        return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :]

    return damage


#: (case, state, file, damage or None for "delete", key the daemon gets, expected ptm_res, words in the log)
CORRUPTIONS = [
    ("truncated", "plain", PERMALL, lambda raw: raw[: len(raw) // 2], None, PtmResult.TPM_RC_FAILURE, "totlen"),
    ("header-byte", "plain", PERMALL, flip(3), None, PtmResult.TPM_RC_FAILURE, "header size"),
    ("body-byte", "plain", PERMALL, flip(200), None, PtmResult.TPM_RC_FAILURE, "integrity"),
    ("volatile-byte", "plain", VOLATILE, flip(-40), None, PtmResult.TPM_RC_FAILURE, "integrity"),
    ("keyed-truncated", "keyed", PERMALL, lambda raw: raw[:-7], KEY_A, PtmResult.TPM_RC_FAILURE, "totlen"),
    ("keyed-body-byte", "keyed", PERMALL, flip(100), KEY_A, PtmResult.TPM_RC_FAILURE, "failed authentication"),
    # The file ends: ciphertext + 16-octet GCM tag, TLV(ivec, 12 octets), TLV(AEAD scheme, 1 octet).
    ("keyed-tag-byte", "keyed", PERMALL, flip(-26), KEY_A, PtmResult.TPM_RC_FAILURE, "failed authentication"),
    ("keyed-scheme-byte", "keyed", PERMALL, flip(-1), KEY_A, PtmResult.TPM_RC_FAILURE, "aead scheme"),
    ("wrong-key", "keyed", PERMALL, None, KEY_B, PtmResult.TPM_RC_FAILURE, "failed authentication"),
    ("permall-missing", "plain", PERMALL, "delete", None, PtmResult.TPM_RC_FAILURE, "missing"),
]


def prepared(good: Path, tmp_path: Path, name: str, damage) -> tuple[Path, dict[str, bytes]]:
    state = tmp_path / "state"
    shutil.copytree(good, state)
    target = state / name
    if damage == "delete":
        target.unlink()
    elif damage is not None:
        target.write_bytes(damage(target.read_bytes()))
    return state, {p.name: p.read_bytes() for p in state.iterdir() if p.is_file() and p.name != ".lock"}


def stop_and_stderr(daemon: Daemon) -> str:
    assert daemon.proc is not None
    daemon.proc.terminate()
    _, err = daemon.proc.communicate(timeout=20)
    return err.decode(errors="replace")


@pytest.mark.parametrize(
    ("case", "which", "name", "damage", "key", "expected", "reason"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS]
)
def test_corrupt_state_is_refused_at_init(
    good_states, tmp_path: Path, case, which, name, damage, key, expected, reason
) -> None:
    state, files = prepared(good_states[which], tmp_path, name, damage)
    daemon = Daemon(state, extra=key_args(state, key)).start()
    try:
        with daemon.connect_ctrl() as ctrl:
            assert ctrl_result(ctrl, PtmCmd.CMD_INIT, PtmInitRequest()) == expected
        with daemon.connect_data() as sock:  # the TPM stays stopped
            assert tpm(sock, command(TPM_CC.GetRandom, u16(8))).rc == TPM_RC.FAILURE
    finally:
        log = stop_and_stderr(daemon)
    failing = state / (VOLATILE if name == VOLATILE else PERMALL)
    line = next((ln for ln in log.splitlines() if "CMD_INIT" in ln), "")
    assert str(failing) in line and reason in line.lower(), log
    assert {p.name: p.read_bytes() for p in state.iterdir() if p.is_file() and p.name != ".lock"} == files


@pytest.mark.parametrize("case", ["truncated", "wrong-key", "permall-missing"])
def test_corrupt_state_stops_an_immediate_start(good_states, tmp_path: Path, case: str) -> None:
    _, which, name, damage, key, _, _ = next(c for c in CORRUPTIONS if c[0] == case)
    state, files = prepared(good_states[which], tmp_path, name, damage)
    daemon = Daemon(state, extra=BOOT + key_args(state, key))
    try:
        daemon.start()  # listens first, then initialises the TPM (the engine loads meanwhile)
        status = daemon.wait_exit(timeout=60)
    except RuntimeError:  # it was quicker than the probe
        status = daemon.proc.wait(timeout=60)
    log = daemon.proc.stderr.read().decode(errors="replace")
    daemon.stop()
    assert status != 0
    assert str(state / PERMALL) in log, log
    assert {p.name: p.read_bytes() for p in state.iterdir() if p.is_file() and p.name != ".lock"} == files


def test_disk_full_swtpm_enters_failure_mode_where_we_answer_nv_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference: libtpms answers TPM_RC_FAILURE to the NV_Write that cannot be stored
    and stays in failure mode (every command, even after space frees up, until restarted);
    STORE_VOLATILE is TPM_FAIL as ours.  Deliberately different here (tests above): the
    write answers TPM_RC_NV_UNAVAILABLE and the TPM recovers when space is back, since a
    full disk is a condition of the host, not a fault of the TPM."""
    with tmpfs(tmp_path / "fs", "1m") as fs:
        monkeypatch.setattr(tempfile, "tempdir", str(fs))  # SwtpmOracle's state directory
        oracle = SwtpmOracle()
        try:
            rc = lambda cmd: int.from_bytes(oracle.execute(cmd)[6:10], "big")  # noqa: E731
            assert rc(command(TPM_CC.Startup, u16(0))) == 0
            public = nv_public(INDEX, NT_ORDINARY, 4)
            assert rc(command(TPM_CC.NV_DefineSpace, tpm2b(b"") + public, u32(TPM_RH.OWNER), b"")) == 0
            assert rc(nv_write(b"OLD!")) == 0
            filler = fill(fs)
            assert rc(nv_write(b"NEW!")) == TPM_RC.FAILURE
            assert oracle.ctrl(PtmCmd.CMD_STORE_VOLATILE) == PtmResult.TPM_FAIL.to_bytes(4, "big")
            filler.unlink()
            assert rc(command(TPM_CC.GetRandom, u16(8))) == TPM_RC.FAILURE
            assert rc(nv_write(b"NEW!")) == TPM_RC.FAILURE
        finally:
            oracle.close()
