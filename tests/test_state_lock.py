"""The <statedir>/.lock POSIX lock, including contention between processes."""

from __future__ import annotations

import os
import platform
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vtpm_cuse.state import DirectoryStore, StateKind, StorageLock, StorageLockError
from vtpm_cuse.state.errors import PtmResult

PROJECT = Path(__file__).resolve().parent.parent

HOLDER = """
import sys
from vtpm_cuse.state.lock import StorageLock
lock = StorageLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()          # hold until the parent says so (or closes stdin)
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""

TRY_LOCK = """
import sys
from vtpm_cuse.state.lock import StorageLock
from vtpm_cuse.state.errors import StorageLockError
try:
    StorageLock(sys.argv[1]).acquire(int(sys.argv[2]))
except StorageLockError as exc:
    print("busy", exc.result_code)
else:
    print("acquired")
"""


class Holder:
    """A child process that holds the lock until told to release it."""

    def __init__(self, directory: Path, script: str = HOLDER) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=PROJECT,
        )
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


@pytest.fixture
def holder(tmp_path: Path):
    h = Holder(tmp_path)
    yield h
    h.stop()


def try_lock_in_child(directory: Path, retries: int = 0) -> str:
    out = subprocess.run(
        [sys.executable, "-c", TRY_LOCK, str(directory), str(retries)],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        check=True,
    )
    return out.stdout.strip()


def test_acquire_release(tmp_path: Path):
    lock = StorageLock(tmp_path)
    assert not lock.is_locked
    lock.acquire()
    assert lock.is_locked
    lock.acquire()  # already held: success, as in swtpm
    assert lock.is_locked
    lock.release()
    assert not lock.is_locked
    lock.release()  # idempotent


def test_lock_file_name_and_mode(tmp_path: Path):
    previous = os.umask(0)
    try:
        with StorageLock(tmp_path) as lock:
            assert lock.path == tmp_path / ".lock"
            assert stat.S_IMODE(os.stat(lock.path).st_mode) == 0o660
    finally:
        os.umask(previous)


def test_other_process_cannot_lock_while_held(tmp_path: Path):
    with StorageLock(tmp_path):
        assert try_lock_in_child(tmp_path) == f"busy {int(PtmResult.TPM_FAIL)}"
    assert try_lock_in_child(tmp_path) == "acquired"


def test_contention_with_retries(tmp_path: Path, holder: Holder):
    lock = StorageLock(tmp_path)
    start = time.monotonic()
    with pytest.raises(StorageLockError) as info:
        lock.acquire(retries=5)
    elapsed = time.monotonic() - start
    assert info.value.result_code == PtmResult.TPM_FAIL
    assert "locked by another process" in str(info.value)
    assert "6 attempt" in str(info.value)
    assert elapsed >= 0.045  # 5 pauses of 10 ms
    assert not lock.is_locked

    holder.release()
    lock.acquire()
    assert lock.is_locked
    lock.release()


def test_retries_win_once_the_holder_lets_go(tmp_path: Path):
    script = HOLDER.replace("sys.stdin.readline()          #", "import time; time.sleep(0.2) #")
    h = Holder(tmp_path, script)
    try:
        lock = StorageLock(tmp_path)
        lock.acquire(retries=500)  # up to ~5 s; the holder releases after 0.2 s
        assert lock.is_locked
        lock.release()
    finally:
        h.stop()


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64")),
    reason="packs struct flock for LP64 Linux",
)
def test_interoperates_with_raw_fcntl_setlk_wrlck(tmp_path: Path):
    """A lock taken the way swtpm takes it (fcntl F_SETLK, F_WRLCK, whole
    file) excludes us, and ours excludes it."""
    script = """
import fcntl, os, struct, sys
fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o660)
flock = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
try:
    fcntl.fcntl(fd, fcntl.F_SETLK, flock)
except OSError:
    print("busy", flush=True)
    sys.exit(0)
print("locked", flush=True)
sys.stdin.readline()
os.close(fd)
print("released", flush=True)
sys.stdin.readline()
"""
    h = Holder(tmp_path, script)
    try:
        with pytest.raises(StorageLockError):
            StorageLock(tmp_path).acquire(retries=2)
        h.release()
    finally:
        h.stop()

    with StorageLock(tmp_path):
        out = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, input="\n\n"
        )
        assert out.stdout.split()[0] == "busy"


def test_symlinked_lock_file_is_refused(tmp_path: Path):
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / ".lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StorageLockError, match="cannot open lock file"):
        StorageLock(tmp_path).acquire()


def test_missing_directory(tmp_path: Path):
    with pytest.raises(StorageLockError, match=str(tmp_path / "nope")):
        StorageLock(tmp_path / "nope").acquire()


def test_negative_retries_rejected(tmp_path: Path):
    with pytest.raises(ValueError):
        StorageLock(tmp_path).acquire(-1)


def test_store_writes_are_refused_while_another_process_holds_the_lock(tmp_path, holder):
    store = DirectoryStore(tmp_path)
    with pytest.raises(StorageLockError):
        store.store(StateKind.PERMANENT, b"state")
    assert not store.path_for(StateKind.PERMANENT).exists()
    with pytest.raises(StorageLockError):
        store.lock(retries=2)
    assert not store.locked

    holder.release()
    store.store(StateKind.PERMANENT, b"state")
    assert store.locked
    assert try_lock_in_child(tmp_path) == f"busy {int(PtmResult.TPM_FAIL)}"
    store.unlock()
    assert not store.locked
    assert try_lock_in_child(tmp_path) == "acquired"


def test_store_without_locking_ignores_the_lock(tmp_path: Path, holder: Holder):
    store = DirectoryStore(tmp_path, lock=False)
    store.lock(retries=3)  # no-op
    assert not store.locked and not store.locking_enabled
    store.store(StateKind.VOLATILE, b"v")  # works despite the other holder
    assert store.load(StateKind.VOLATILE) == b"v"
