"""``--tpmstate backend-uri=file://<path>``: all TPM state in one file or block device.

swtpm's "linear file" backend exists for setups that hand the emulator one
file or one block device (a logical volume, a shared disk for migration)
instead of a directory.  This store keeps the same per-kind encoded blobs the
directory store writes (header + TLVs, optionally encrypted with ``--key``)
and puts them side by side into one container::

    magic "VTPMLIN1" | u32 payload length | payload | u32 CRC-32 of payload
    payload = { u8 StateKind | u32 length | blob }*

The layout is our own (swtpm's is not documented as an interface), so a file
written by swtpm is not read here and vice versa; use the directory backend
to exchange state with swtpm.

Atomicity, "as far as a single file allows":

* a regular file (or a path that does not exist yet) is replaced like every
  state file here: temp file in the same directory, fsync, rename, fsync of
  the directory -- a crash leaves the old or the new container;
* a block device cannot be renamed, so the container is rewritten in place
  and fsync'ed; a write torn by a crash is detected by the CRC and reported
  as damaged state instead of being loaded.  A block device must exist and be
  big enough; all-zero devices count as empty.

Locking: ``lock`` (off by default, as in swtpm for file://) takes
``<path>.lock`` beside the file -- not the file itself, whose inode changes
with every rename.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from pathlib import Path

from .atomic import DEFAULT_FILE_MODE, atomic_write
from .crypto import StateKey
from .errors import PtmResult, StateError
from .kinds import StateKind
from .lock import StorageLock
from .store import DirectoryStore

__all__ = ["LinearFileStore", "MAGIC", "LOCK_SUFFIX"]

MAGIC = b"VTPMLIN1"
LOCK_SUFFIX = ".lock"
_HEADER = struct.Struct(">8sI")
_ENTRY = struct.Struct(">BI")
_CRC = struct.Struct(">I")


class LinearFileStore(DirectoryStore):
    """A :class:`DirectoryStore` whose three state files are sections of one file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: int = DEFAULT_FILE_MODE,
        lock: bool = False,
        file_key: StateKey | None = None,
        migration_key: StateKey | None = None,
    ) -> None:
        self._file = Path(path)
        super().__init__(self._file.parent, mode, lock=False, file_key=file_key, migration_key=migration_key)
        if lock:
            self._lock = StorageLock(self._file.parent, self._file.name + LOCK_SUFFIX)
        self._kinds = {self.path_for(kind): kind for kind in StateKind}

    @property
    def file(self) -> Path:
        return self._file

    def path_for(self, kind: int) -> Path:
        """A name for messages: ``<file>#permall``; no such file exists."""
        return Path(f"{self._file}#{StateKind(kind).state_name}")

    def exists(self, kind: int) -> bool:
        return StateKind(kind) in self._sections()

    def delete(self, kind: int) -> bool:
        sections = self._sections()
        self._ensure_locked()
        if sections.pop(StateKind(kind), None) is None:
            return False
        self._store_sections(sections)
        return True

    # -- DirectoryStore's file primitives, redirected to sections ------------

    def _read(self, path: Path) -> bytes | None:
        return self._sections().get(self._kinds[path])

    def _write(self, path: Path, contents: bytes) -> None:
        sections = self._sections()
        sections[self._kinds[path]] = contents
        self._store_sections(sections)

    # -- the container ---------------------------------------------------------

    def _raw(self) -> tuple[bytes, bool]:
        """``(contents, is_block_device)``; a missing file is empty."""
        try:
            fd = os.open(self._file, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return b"", False
        except OSError as exc:
            raise StateError(PtmResult.TPM_FAIL, f"cannot open {self._file}: {exc.strerror}") from exc
        try:
            info = os.fstat(fd)
            block = stat.S_ISBLK(info.st_mode)
            if not (block or stat.S_ISREG(info.st_mode)):
                raise StateError(PtmResult.TPM_FAIL, f"{self._file} is neither a regular file nor a block device")
            header = os.read(fd, _HEADER.size)
            if len(header) < _HEADER.size or header[: len(MAGIC)] != MAGIC:
                return header, block
            (length,) = struct.unpack_from(">I", header, len(MAGIC))
            body = b""
            while len(body) < length + _CRC.size and (chunk := os.read(fd, length + _CRC.size - len(body))):
                body += chunk
            return header + body, block
        except OSError as exc:
            raise StateError(PtmResult.TPM_FAIL, f"cannot read {self._file}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def _sections(self) -> dict[StateKind, bytes]:
        raw, _ = self._raw()
        if not raw.strip(b"\0"):
            return {}
        damaged = StateError(PtmResult.TPM_BAD_VERSION, f"{self._file} is not a vtpm-cuse linear state file")
        if len(raw) < _HEADER.size or raw[: len(MAGIC)] != MAGIC:
            raise damaged
        _, length = _HEADER.unpack_from(raw)
        payload = raw[_HEADER.size : _HEADER.size + length]
        crc = raw[_HEADER.size + length : _HEADER.size + length + _CRC.size]
        if len(payload) != length or len(crc) != _CRC.size or _CRC.unpack(crc)[0] != zlib.crc32(payload):
            raise StateError(PtmResult.TPM_BAD_DATASIZE, f"{self._file} is truncated or damaged (CRC mismatch)")
        sections: dict[StateKind, bytes] = {}
        offset = 0
        while offset < length:
            if length - offset < _ENTRY.size:
                raise damaged
            kind_number, size = _ENTRY.unpack_from(payload, offset)
            offset += _ENTRY.size
            try:
                kind = StateKind(kind_number)
            except ValueError:
                raise damaged from None
            if kind in sections or length - offset < size:
                raise damaged
            sections[kind] = payload[offset : offset + size]
            offset += size
        return sections

    def _store_sections(self, sections: dict[StateKind, bytes]) -> None:
        payload = b"".join(_ENTRY.pack(kind, len(blob)) + blob for kind, blob in sorted(sections.items()))
        container = _HEADER.pack(MAGIC, len(payload)) + payload + _CRC.pack(zlib.crc32(payload))
        _, block = self._raw()
        try:
            if block:
                self._overwrite_device(container)
            else:
                atomic_write(self._file, container, mode=self._mode)
        except OSError as exc:
            raise StateError(PtmResult.TPM_FAIL, f"cannot write {self._file}: {exc.strerror}") from exc

    def _overwrite_device(self, container: bytes) -> None:
        fd = os.open(self._file, os.O_WRONLY | os.O_CLOEXEC)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            if size < len(container):
                raise StateError(
                    PtmResult.TPM_FAIL,
                    f"block device {self._file} holds {size} bytes, the state needs {len(container)}",
                )
            written = os.pwrite(fd, container, 0)
            if written != len(container):
                raise StateError(PtmResult.TPM_FAIL, f"short write to {self._file} ({written}/{len(container)})")
            os.fsync(fd)
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return f"LinearFileStore({str(self._file)!r}, mode=0o{self._mode:o}, lock={self.locking_enabled})"
