"""Crash-safe replacement of a file.

A TPM that loses power half-way through writing its permanent state must come
back with either the old or the new state, never a truncated mix: a corrupt
``permall`` means lost keys and NV indices. The classic recipe is used:

1. write the complete contents to a temporary file in the *same* directory
   (so the final ``rename()`` is atomic; cross-filesystem renames are not),
2. ``fsync()`` the temporary file so its data is on disk before it gets the
   real name,
3. ``rename()`` it over the real name,
4. ``fsync()`` the directory so the rename itself is durable.

The temporary name follows swtpm (``TMP2-00.<name>`` for ``tpm2-00.<name>``)
so a leftover from a crash is recognisable by people who know swtpm, and is
overwritten by the next write.

These functions block (fsync can take a while); async callers should run them
in a worker thread.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .kinds import FILE_PREFIX, TEMP_PREFIX

__all__ = [
    "DEFAULT_FILE_MODE",
    "atomic_write",
    "fsync_directory",
    "temp_name_for",
]

#: Default permission bits of state files. swtpm defaults to 0640; we default
#: to owner-only because the files hold the TPM's secrets.
DEFAULT_FILE_MODE = 0o600

_TPM12_PREFIX = "tpm-00."
_TPM12_TEMP_PREFIX = "TMP-00."


def temp_name_for(filename: str) -> str:
    """Return swtpm's temporary name for ``filename``.

    ``tpm2-00.permall`` -> ``TMP2-00.permall``; ``tpm-00.x`` -> ``TMP-00.x``;
    any other name gets the ``TMP2-00.`` prefix so that it is still clearly a
    temporary file of ours.
    """
    if filename.startswith(FILE_PREFIX):
        return TEMP_PREFIX + filename[len(FILE_PREFIX) :]
    if filename.startswith(_TPM12_PREFIX):
        return _TPM12_TEMP_PREFIX + filename[len(_TPM12_PREFIX) :]
    return TEMP_PREFIX + filename


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data``; os.write() may write less than asked."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - a regular file never does this
            raise OSError(errno.EIO, "write() made no progress")
        view = view[written:]


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """fsync() a directory so that renames/unlinks in it survive a crash.

    Filesystems that cannot fsync a directory report EINVAL; that is not an
    error for us (there is nothing more we could do), every other error is.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def _unlink_if_present(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int = DEFAULT_FILE_MODE,
    temp_name: str | None = None,
    durable: bool = True,
) -> None:
    """Replace ``path`` with ``data`` so that it is never seen half-written.

    ``mode`` is applied with ``fchmod()`` and therefore exactly, independent of
    the process umask (swtpm also overrides the umask when ``mode=`` is given).
    ``temp_name`` defaults to :func:`temp_name_for` of the file name.
    ``durable=False`` skips the two fsyncs (for tests or throw-away data); the
    replacement is still atomic, just not guaranteed to survive power loss.

    On any failure before the rename, the temporary file is removed and the
    original file is left untouched; the exception propagates unchanged.
    """
    target = Path(path)
    directory = target.parent
    temp = directory / (temp_name if temp_name is not None else temp_name_for(target.name))
    if temp == target:
        raise ValueError(f"temporary name {temp_name!r} equals the target name")

    # A temp file left behind by a crash is stale by definition (the lock on
    # the directory guarantees a single writer). Remove it rather than open it
    # with O_TRUNC so that O_EXCL can also refuse a symlink planted there.
    _unlink_if_present(temp)
    fd = os.open(
        temp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        mode,
    )
    renamed = False
    try:
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
        renamed = True
    finally:
        if not renamed:
            _unlink_if_present(temp)
    if durable:
        fsync_directory(directory)
