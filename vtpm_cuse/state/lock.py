"""The state directory's ``.lock`` file (spec §2.10).

Two TPM processes writing the same state directory would corrupt each other's
state, and a migration target must not start using the state until the source
has let go of it. swtpm therefore holds a POSIX record lock on
``<statedir>/.lock``; using the very same kind of lock on the very same file
means we also exclude (and are excluded by) a real swtpm on that directory.

Properties of POSIX record locks worth knowing when using this class:

* they belong to the *process*: a second :class:`StorageLock` on the same
  directory in the same process "succeeds" too, and closing *any* fd of the
  lock file in this process drops the lock. Keep one instance per directory.
* they are not inherited across ``fork()``, and vanish when the process dies,
  so a crashed daemon never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from .errors import StorageLockError

__all__ = ["LOCK_FILE_NAME", "LOCK_FILE_MODE", "LOCK_RETRY_INTERVAL", "StorageLock"]

LOCK_FILE_NAME = ".lock"
#: Mode swtpm creates the lock file with (subject to the umask, as in swtpm).
LOCK_FILE_MODE = 0o660
#: Pause between two lock attempts, as in swtpm.
LOCK_RETRY_INTERVAL = 0.010

_CONTENDED = (errno.EACCES, errno.EAGAIN)


class StorageLock:
    """An exclusive, non-blocking lock on ``<directory>/.lock`` (or ``<directory>/<name>``,
    which the single-file backend uses for its ``<file>.lock``)."""

    def __init__(self, directory: str | os.PathLike[str], name: str = LOCK_FILE_NAME) -> None:
        self._path = Path(directory) / name
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def is_locked(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self, retries: int = 0) -> None:
        """Take the lock, trying ``1 + retries`` times, 10 ms apart.

        Holding the lock already is success (as in swtpm), so callers can
        "ensure locked" before every write without bookkeeping.
        Raises :class:`StorageLockError` if the lock file cannot be opened or
        another process keeps holding the lock.
        """
        if self._fd is not None:
            return
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        try:
            fd = os.open(
                self._path,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                LOCK_FILE_MODE,
            )
        except OSError as exc:
            raise StorageLockError(f"cannot open lock file {self._path}: {exc.strerror}") from exc

        attempt = 0
        while True:
            try:
                # CPython implements lockf() as fcntl(F_SETLK) with an F_WRLCK
                # over the whole file (start 0, len 0, SEEK_SET) -- exactly the
                # lock swtpm takes, so the two interoperate.
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in _CONTENDED and attempt < retries:
                    attempt += 1
                    time.sleep(LOCK_RETRY_INTERVAL)
                    continue
                os.close(fd)
                if exc.errno in _CONTENDED:
                    raise StorageLockError(
                        f"state directory {self._path.parent} is locked by another "
                        f"process ({attempt + 1} attempt(s) on {self._path})"
                    ) from exc
                raise StorageLockError(f"cannot lock {self._path}: {exc.strerror}") from exc
            self._fd = fd
            return

    def release(self) -> None:
        """Drop the lock (closing the fd releases it). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> StorageLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        # Do not leak the fd (and with it the lock) if the owner forgets.
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:  # pragma: no cover
                pass

    def __repr__(self) -> str:
        state = "locked" if self.is_locked else "unlocked"
        return f"<StorageLock {str(self._path)!r} {state}>"
