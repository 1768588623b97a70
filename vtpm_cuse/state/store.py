"""TPM state kept in a directory, in swtpm's file names and container format.

The TPM engine hands over opaque ``bytes`` per :class:`StateKind`; this module
turns them into files (``tpm2-00.permall``, ``tpm2-00.volatilestate``,
``tpm2-00.savestate``) and into the blobs GET/SET_STATEBLOB exchange.

File layout (spec §5.2)::

    no --key:   header(flags 0)                       + TLV(DATA, state)
    --key:      header(ENCRYPTED [|ENCRYPTED_256BIT_KEY]) + sealed TLVs (crypto.py)

GET_STATEBLOB blob layout::

    header(MIGRATION_DATA [|ENCRYPTED..] [|MIGRATION_ENCRYPTED..])
      + TLV(MIGRATION_DATA, inner)                    without --migration-key
      + sealed(inner) with the migration key          with --migration-key
    inner = TLV(DATA, state)                          decrypted, or no --key
          | sealed(state) with the state key          --key and not decrypted

What is *not* done here, because it depends on control-channel context: taking
a volatile snapshot before GET volatile and deleting the file afterwards,
releasing the lock after GET savestate, chunking, caching. The control layer
combines :meth:`DirectoryStore.get_blob` / :meth:`~DirectoryStore.make_blob`,
:meth:`~DirectoryStore.delete` and :meth:`~DirectoryStore.unlock` for that.

All methods block (file I/O with fsync); call them from a worker thread in
async code. Every failure is a :class:`StateError` carrying the ptm result
code to report.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from ioctl_defs import PtmConfigFlag

from . import crypto
from .atomic import DEFAULT_FILE_MODE, atomic_write, fsync_directory
from .blobformat import (
    BlobFlag,
    Tag,
    Tlv,
    build_blob,
    decode_tlvs,
    encode_tlvs,
    parse_blob,
    require_tlv,
)
from .crypto import MIGRATION_LAYER, STATE_LAYER, StateKey
from .errors import PtmResult, StateError
from .kinds import StateKind
from .lock import StorageLock
from .tpmstate import TpmStateOption

__all__ = ["DirectoryStore", "BACKUP_SUFFIX", "PtmConfigFlag"]

log = logging.getLogger(__name__)

#: Suffix of the permanent-state backup kept with ``backup``.
BACKUP_SUFFIX = ".bak"


def _as_kind(kind: int) -> StateKind:
    if isinstance(kind, StateKind):
        return kind
    return StateKind.from_blob_type(kind)


class DirectoryStore:
    """Load/store the three TPM states in a directory, optionally encrypted.

    ``mode`` is applied exactly (umask-independent) to every state file.
    With ``lock=True`` (default) every write first makes sure this process
    holds ``<path>/.lock`` (taking it with no retries if needed); reads do not
    need the lock because files are only ever replaced atomically.
    ``file_key`` encrypts the files (``--key``), ``migration_key`` the blobs
    returned by :meth:`get_blob` (``--migration-key``). ``backup=True`` keeps
    the previous permanent state as ``tpm2-00.permall.bak`` and restores from
    it when the current file is damaged.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: int = DEFAULT_FILE_MODE,
        lock: bool = True,
        file_key: StateKey | None = None,
        migration_key: StateKey | None = None,
        *,
        backup: bool = False,
    ) -> None:
        self._dir = Path(path)
        self._mode = mode
        self._lock = StorageLock(self._dir) if lock else None
        self._file_key = file_key
        self._migration_key = migration_key
        self._backup = backup

    @classmethod
    def from_option(
        cls,
        option: TpmStateOption,
        *,
        file_key: StateKey | None = None,
        migration_key: StateKey | None = None,
    ) -> DirectoryStore:
        """Build a store from a parsed ``--tpmstate`` value (a :class:`~.linear.LinearFileStore`
        for ``backend-uri=file://``)."""
        if option.linear_file is not None:
            from .linear import LinearFileStore  # linear builds on this module

            return LinearFileStore(
                option.linear_file,
                mode=option.mode,
                lock=option.lock,
                file_key=file_key,
                migration_key=migration_key,
            )
        return cls(
            option.directory,
            mode=option.mode,
            lock=option.lock,
            file_key=file_key,
            migration_key=migration_key,
            backup=option.backup,
        )

    # -- configuration ---------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def mode(self) -> int:
        return self._mode

    @property
    def config_flags(self) -> PtmConfigFlag:
        """The GET_CONFIG answer: which keys are configured."""
        flags = PtmConfigFlag(0)
        if self._file_key is not None:
            flags |= PtmConfigFlag.PTM_CONFIG_FLAG_FILE_KEY
        if self._migration_key is not None:
            flags |= PtmConfigFlag.PTM_CONFIG_FLAG_MIGRATION_KEY
        return flags

    def path_for(self, kind: int) -> Path:
        return self._dir / _as_kind(kind).filename

    def _backup_path(self) -> Path:
        return self._dir / (StateKind.PERMANENT.filename + BACKUP_SUFFIX)

    # -- locking -----------------------------------------------------------

    @property
    def locking_enabled(self) -> bool:
        return self._lock is not None

    @property
    def locked(self) -> bool:
        """True while this store holds the directory lock."""
        return self._lock is not None and self._lock.is_locked

    def lock(self, retries: int = 0) -> None:
        """Take the directory lock (no-op with ``lock=False`` or if held).
        Raises :class:`~vtpm_cuse.state.errors.StorageLockError`."""
        if self._lock is not None:
            self._lock.acquire(retries)

    def unlock(self) -> None:
        """Release the directory lock (e.g. after GET savestate). Idempotent."""
        if self._lock is not None:
            self._lock.release()

    def close(self) -> None:
        self.unlock()

    def __enter__(self) -> DirectoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- files -------------------------------------------------------------

    def exists(self, kind: int) -> bool:
        return self.path_for(kind).is_file()

    def stored_size(self, kind: int) -> int | None:
        """Bytes the state of ``kind`` occupies in storage (``--print-states``); None if absent."""
        raw = self._read(self.path_for(_as_kind(kind)))
        return None if raw is None else len(raw)

    def load(self, kind: int) -> bytes | None:
        """The state of ``kind``, decrypted; None if there is no such file.

        Errors: damaged file -> BAD_PARAMETER/BAD_VERSION/BAD_DATASIZE/FAIL;
        encrypted file without ``file_key`` -> KEYNOTFOUND; wrong key or
        modified file -> DECRYPT_ERROR; plaintext file although a key is
        configured -> DECRYPT_ERROR (an unauthenticated file must not be
        accepted as state when the state is supposed to be authenticated).
        No file is modified, except that with ``backup`` a damaged permanent
        state is replaced by its intact backup.
        """
        kind = _as_kind(kind)
        path = self.path_for(kind)
        raw = self._read(path)
        if raw is None:
            return None
        try:
            return self._decode_file(kind, raw, where=str(path))
        except StateError as primary_error:
            if kind is not StateKind.PERMANENT or not self._backup:
                raise
            restored = self._restore_from_backup(kind, primary_error)
            if restored is None:
                raise
            return restored

    def store(self, kind: int, data: bytes) -> None:
        """Atomically replace the state of ``kind`` with ``data``."""
        kind = _as_kind(kind)
        path = self.path_for(kind)
        self._ensure_locked()
        contents = self._encode_file(kind, data)
        if kind is StateKind.PERMANENT and self._backup:
            previous = self._read(path)
            if previous is not None:
                self._write(self._backup_path(), previous)
        self._write(path, contents)

    def delete(self, kind: int) -> bool:
        """Remove the state file of ``kind``; True if there was one."""
        path = self.path_for(kind)
        self._ensure_locked()
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StateError(PtmResult.TPM_FAIL, f"cannot delete {path}: {exc.strerror}") from exc
        try:
            fsync_directory(self._dir)
        except OSError as exc:
            raise StateError(PtmResult.TPM_FAIL, f"cannot sync {self._dir}: {exc.strerror}") from exc
        return True

    # -- control-channel blobs -------------------------------------------

    def get_blob(self, kind: int, decrypt: bool) -> tuple[bytes, bool]:
        """GET_STATEBLOB: the stored state of ``kind`` as a transfer blob.

        Returns ``(blob, encrypted)``, where ``encrypted`` is the
        ``PTM_STATE_FLAG_ENCRYPTED`` answer: True iff the state inside is still
        sealed with the state key (a key is set and ``decrypt`` is False).
        A missing file is TPM_RETRY (0x800), which clients treat as non-fatal.
        """
        kind = _as_kind(kind)
        path = self.path_for(kind)
        raw = self._read(path)
        if raw is None:
            raise StateError(PtmResult.TPM_RETRY, f"no {kind.state_name} state in {self._dir}")
        plaintext = self._decode_file(kind, raw, where=str(path))
        return self.make_blob(kind, plaintext, decrypt)

    def make_blob(self, kind: int, plaintext: bytes, decrypt: bool) -> tuple[bytes, bool]:
        """Wrap state bytes into a transfer blob without touching any file
        (for state that never went to disk, e.g. a fresh volatile snapshot)."""
        kind = _as_kind(kind)
        flags = BlobFlag.MIGRATION_DATA
        inner: tuple[Tlv, ...]
        encrypted = not decrypt and self._file_key is not None
        if encrypted:
            assert self._file_key is not None
            layer_flags, inner = crypto.seal(self._file_key, STATE_LAYER, kind, plaintext)
            flags |= layer_flags
        else:
            inner = (Tlv(Tag.DATA, plaintext),)
        inner_bytes = encode_tlvs(inner)

        outer: tuple[Tlv, ...]
        if self._migration_key is not None:
            layer_flags, outer = crypto.seal(self._migration_key, MIGRATION_LAYER, kind, inner_bytes)
            flags |= layer_flags
        else:
            outer = (Tlv(Tag.MIGRATION_DATA, inner_bytes),)
        return build_blob(flags, outer), encrypted

    def check_blob(self, kind: int, blob: bytes, encrypted_flag: bool) -> bytes:
        """SET_STATEBLOB: validate a transfer blob and return the state bytes.

        ``encrypted_flag`` is the request's ``PTM_STATE_FLAG_ENCRYPTED``; the
        header's ENCRYPTED flag means the same. An empty blob, or a bare
        header, yields ``b""`` (swtpm then commits an empty state). Blobs
        without migration encryption are accepted even when a migration key is
        set, so that state can be "upgraded" to encryption (as swtpm).

        Errors: header/TLV framing as in :mod:`blobformat`; no MIGRATION_DATA
        TLV (e.g. a state *file* passed as blob) -> FAIL; encrypted with a key
        we do not have -> KEYNOTFOUND; wrong key/tampering -> DECRYPT_ERROR.
        Nothing is written; the caller stores the result.
        """
        kind = _as_kind(kind)
        if not blob:
            return b""
        parsed = parse_blob(blob, where=f"{kind.state_name} blob")
        if not parsed.tlvs:
            return b""
        flags = parsed.flags
        where = f"{kind.state_name} blob"

        if flags & BlobFlag.MIGRATION_ENCRYPTED:
            if self._migration_key is None:
                raise StateError(
                    PtmResult.TPM_KEYNOTFOUND,
                    f"{where} is encrypted with a migration key but no --migration-key is set",
                )
            inner_bytes = crypto.unseal(self._migration_key, MIGRATION_LAYER, kind, flags, parsed.tlvs, where=where)
        else:
            inner_bytes = require_tlv(parsed.tlvs, Tag.MIGRATION_DATA, where=where)
        inner = decode_tlvs(inner_bytes, where=f"{where} (inner)")

        if encrypted_flag or flags & BlobFlag.ENCRYPTED:
            if self._file_key is None:
                raise StateError(
                    PtmResult.TPM_KEYNOTFOUND,
                    f"{where} is encrypted with a state key but no --key is set",
                )
            return crypto.unseal(self._file_key, STATE_LAYER, kind, flags, inner, where=where)
        return require_tlv(inner, Tag.DATA, where=where)

    # -- internals ---------------------------------------------------------

    def _ensure_locked(self) -> None:
        if self._lock is not None:
            self._lock.acquire(0)

    def _encode_file(self, kind: StateKind, data: bytes) -> bytes:
        if self._file_key is None:
            return build_blob(BlobFlag.NONE, (Tlv(Tag.DATA, data),))
        flags, tlvs = crypto.seal(self._file_key, STATE_LAYER, kind, data)
        return build_blob(flags, tlvs)

    def _decode_file(self, kind: StateKind, raw: bytes, *, where: str) -> bytes:
        parsed = parse_blob(raw, where=where)
        if parsed.flags & BlobFlag.ENCRYPTED:
            if self._file_key is None:
                raise StateError(PtmResult.TPM_KEYNOTFOUND, f"{where} is encrypted but no --key is set")
            return crypto.unseal(self._file_key, STATE_LAYER, kind, parsed.flags, parsed.tlvs, where=where)
        if self._file_key is not None:
            raise StateError(
                PtmResult.TPM_DECRYPT_ERROR,
                f"{where} is not encrypted although a state key is configured",
            )
        return require_tlv(parsed.tlvs, Tag.DATA, where=where)

    def _restore_from_backup(self, kind: StateKind, primary_error: StateError) -> bytes | None:
        backup = self._backup_path()
        raw = self._read(backup)
        if raw is None:
            return None
        try:
            plaintext = self._decode_file(kind, raw, where=str(backup))
        except StateError:
            return None
        log.warning(
            "%s is damaged (%s); restoring it from %s",
            self.path_for(kind),
            primary_error,
            backup,
        )
        self._ensure_locked()
        self._write(self.path_for(kind), raw)
        return plaintext

    def _read(self, path: Path) -> bytes | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(PtmResult.TPM_FAIL, f"cannot open {path}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StateError(PtmResult.TPM_FAIL, f"{path} is not a regular file")
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise StateError(PtmResult.TPM_FAIL, f"cannot read {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def _write(self, path: Path, contents: bytes) -> None:
        try:
            atomic_write(path, contents, mode=self._mode)
        except OSError as exc:
            raise StateError(PtmResult.TPM_FAIL, f"cannot write {path}: {exc.strerror}") from exc

    def __repr__(self) -> str:
        return (
            f"DirectoryStore({str(self._dir)!r}, mode=0o{self._mode:o}, "
            f"lock={self.locking_enabled}, file_key={self._file_key!r}, "
            f"migration_key={self._migration_key!r}, backup={self._backup})"
        )
