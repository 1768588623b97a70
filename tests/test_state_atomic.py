"""atomic_write: the target always holds either the old or the new contents."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from vtpm_cuse.state import atomic
from vtpm_cuse.state.atomic import atomic_write, temp_name_for

OLD = b"old contents " * 100
NEW = b"new contents, longer than the old ones " * 1000


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def file_mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "tpm2-00.permall"
    path.write_bytes(OLD)
    return path


def test_temp_name_follows_swtpm():
    assert temp_name_for("tpm2-00.permall") == "TMP2-00.permall"
    assert temp_name_for("tpm2-00.volatilestate") == "TMP2-00.volatilestate"
    assert temp_name_for("tpm2-00.permall.bak") == "TMP2-00.permall.bak"
    assert temp_name_for("tpm-00.permall") == "TMP-00.permall"
    assert temp_name_for("other") == "TMP2-00.other"


def test_creates_and_replaces(tmp_path: Path):
    path = tmp_path / "tpm2-00.savestate"
    atomic_write(path, b"one")
    assert path.read_bytes() == b"one"
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(os.listdir(tmp_path)) == ["tpm2-00.savestate"]


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_default_mode_is_0600_whatever_the_umask(tmp_path: Path, mask: int):
    path = tmp_path / "tpm2-00.permall"
    with umask(mask):
        atomic_write(path, b"x")
    assert file_mode(path) == 0o600


def test_explicit_mode_overrides_umask(tmp_path: Path):
    path = tmp_path / "tpm2-00.permall"
    with umask(0o077):
        atomic_write(path, b"x", mode=0o640)
    assert file_mode(path) == 0o640


def test_replacing_applies_the_new_mode(target: Path):
    os.chmod(target, 0o644)
    atomic_write(target, NEW)
    assert file_mode(target) == 0o600


def test_write_failing_midway_keeps_old_file_and_removes_temp(target, monkeypatch):
    real_write = os.write
    calls = []

    def failing_write(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))  # a short write ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(atomic.os, "write", failing_write)
    with pytest.raises(OSError) as info:
        atomic_write(target, NEW)
    monkeypatch.undo()

    assert info.value.errno == errno.ENOSPC
    assert len(calls) == 2
    assert target.read_bytes() == OLD
    assert os.listdir(target.parent) == [target.name]


@pytest.mark.parametrize("failing", ["fsync", "replace", "fchmod"])
def test_failure_before_rename_keeps_old_file(target, monkeypatch, failing):
    def boom(*args, **kwargs):
        raise OSError(errno.EIO, f"{failing} failed")

    monkeypatch.setattr(atomic.os, failing, boom)
    with pytest.raises(OSError, match=f"{failing} failed"):
        atomic_write(target, NEW)
    monkeypatch.undo()

    assert target.read_bytes() == OLD
    assert os.listdir(target.parent) == [target.name]


def test_interrupt_during_write_cleans_up(target, monkeypatch):
    def interrupted(fd, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, NEW)
    monkeypatch.undo()

    assert target.read_bytes() == OLD
    assert os.listdir(target.parent) == [target.name]


def test_process_death_midway_leaves_old_file(target: Path):
    """A real crash: the writer dies (no cleanup runs) after half the data."""
    script = f"""
import os, sys
from vtpm_cuse.state import atomic
real_write = os.write
def dying_write(fd, data):
    real_write(fd, bytes(data[: len(data) // 2]))
    os._exit(3)
atomic.os.write = dying_write
atomic.atomic_write({str(target)!r}, b"N" * 100000)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent.parent)
    assert result.returncode == 3
    assert target.read_bytes() == OLD
    # The dead writer left its half-written temp file; only it, never the target.
    leftover = target.parent / "TMP2-00.permall"
    assert leftover.exists() and leftover.stat().st_size == 50000

    # The next write replaces the stale temp and succeeds.
    atomic_write(target, NEW)
    assert target.read_bytes() == NEW
    assert os.listdir(target.parent) == [target.name]


def test_stale_temp_symlink_is_not_followed(target: Path, tmp_path: Path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not touch")
    (target.parent / "TMP2-00.permall").symlink_to(victim)
    atomic_write(target, NEW)
    assert victim.read_bytes() == b"do not touch"
    assert target.read_bytes() == NEW
    assert not target.is_symlink()


def test_durable_order_fsync_file_rename_fsync_dir(target, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def spy_fsync(fd):
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(f"fsync-{kind}")
        return real_fsync(fd)

    def spy_replace(src, dst):
        events.append("rename")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", spy_fsync)
    monkeypatch.setattr(atomic.os, "replace", spy_replace)
    atomic_write(target, NEW)
    assert events == ["fsync-file", "rename", "fsync-dir"]

    events.clear()
    atomic_write(target, OLD, durable=False)
    assert events == ["rename"]


def test_custom_temp_name(target: Path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda s, d: (seen.append(Path(s).name), real_replace(s, d)))
    atomic_write(target, NEW, temp_name="scratch")
    assert seen == ["scratch"]
    with pytest.raises(ValueError):
        atomic_write(target, NEW, temp_name=target.name)
