"""Process options of swtpm that change who/where the daemon runs: ``--chroot``, ``--runas``,
``--server/--ctrl ...,uid=,gid=``, ``--log`` (file mode, levels), ``--migration incoming``.
Each runs a real ``vtpm-cuse socket`` (as root, as swtpm requires for the first three)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, tpm_roundtrip
from tests.support.tpm_client import Response, command, u16
from vtpm_cuse.tpm.constants import TPM_CC, TPM_SU

NOBODY = pwd.getpwnam("nobody")


def _random(daemon: Daemon) -> Response:
    with daemon.connect_data() as s:
        assert Response(tpm_roundtrip(s, command(TPM_CC.Startup, u16(TPM_SU.CLEAR)))).rc == 0
        return Response(tpm_roundtrip(s, command(TPM_CC.GetRandom, u16(8))))


def _status(daemon: Daemon, field: str) -> list[str]:
    assert daemon.proc is not None
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split()[1:]
    raise AssertionError(f"no {field} in /proc status")


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory outside pytest's 0700 tmp tree, so that another user can reach it."""
    path = Path(tempfile.mkdtemp(prefix="vtpm-cli-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_runas_serves_as_that_user_and_writes_state_as_it(world_dir: Path) -> None:
    state = world_dir / "state"
    state.mkdir()
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    d = Daemon(state, extra=["--runas", "nobody", "--flags", "not-need-init"]).start()
    try:
        assert _random(d).rc == 0  # serving: the sockets listen before the daemon drops root
        assert _status(d, "Uid") == [str(NOBODY.pw_uid)] * 4
        assert (state / "tpm2-00.permall").stat().st_uid == NOBODY.pw_uid
    finally:
        d.stop()


def test_chroot_puts_the_state_paths_inside_the_new_root(world_dir: Path) -> None:
    (world_dir / "state").mkdir()
    d = Daemon(Path("/state"), extra=["--chroot", str(world_dir), "--flags", "not-need-init"]).start()
    try:
        assert os.readlink(f"/proc/{d.proc.pid}/root") == str(world_dir)  # type: ignore[union-attr]
        assert _random(d).rc == 0
    finally:
        d.stop()
    assert (world_dir / "state" / "tpm2-00.permall").is_file()


def test_unixio_sockets_get_the_uid_and_gid_asked_for(world_dir: Path, tmp_path: Path) -> None:
    data, ctrl = world_dir / "data.sock", world_dir / "ctrl.sock"
    d = Daemon(
        tmp_path,
        server=f"type=unixio,path={data},mode=0660,uid={NOBODY.pw_uid},gid={NOBODY.pw_gid}",
        ctrl=f"type=unixio,path={ctrl},gid={NOBODY.pw_gid}",
    ).start()
    try:
        info = data.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY.pw_uid, NOBODY.pw_gid, 0o660)
        assert (ctrl.stat().st_uid, ctrl.stat().st_gid) == (0, NOBODY.pw_gid)
    finally:
        d.stop()


def test_the_log_file_is_private_and_levels_filter(tmp_path: Path) -> None:
    quiet, chatty = tmp_path / "quiet.log", tmp_path / "chatty.log"
    for log, level in ((quiet, 0), (chatty, 2)):
        old = os.umask(0)
        try:
            extra = ["--flags", "not-need-init", "--log", f"file={log},level={level},prefix=[t] "]
            d = Daemon(tmp_path / f"state{level}", extra=extra).start()
        finally:
            os.umask(old)
        try:
            with d.connect_data() as s:
                assert Response(tpm_roundtrip(s, command(TPM_CC.Startup, u16(TPM_SU.CLEAR)))).rc == 0
        finally:
            d.stop()
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert quiet.read_text() == ""  # level 0: errors only
    lines = chatty.read_text().splitlines()
    assert lines and all(line.startswith("[t] ") for line in lines)
    for event in ("TPM started from", "serving: data tcp"):
        assert sum(event in line for line in lines) == 1, (event, lines)


def test_migration_incoming_defers_the_storage_lock(tmp_path: Path) -> None:
    """A second daemon on a locked state directory starts with --migration incoming
    (it takes the lock only once state arrives), and fails without it."""
    first = Daemon(tmp_path, extra=["--flags", "not-need-init"]).start()
    try:
        incoming = Daemon(tmp_path, extra=["--flags", "not-need-init", "--migration", "incoming"]).start()
        try:
            with socket.create_connection(("127.0.0.1", incoming.ctrl_port), timeout=10):
                pass
            assert incoming.proc is not None and incoming.proc.poll() is None
        finally:
            incoming.stop()
        contender = Daemon(tmp_path, extra=["--flags", "not-need-init"])
        try:
            contender.start()
        except RuntimeError as exc:  # exited before its sockets were seen
            assert "locked" in str(exc), exc
        else:
            assert contender.wait_exit(60) == 1
            assert contender.proc is not None and contender.proc.stderr is not None
            assert b"locked" in contender.proc.stderr.read()
        finally:
            contender.stop()
    finally:
        first.stop()
