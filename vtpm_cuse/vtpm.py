"""One virtual TPM: an engine, its state directory, and the platform around it.

A :class:`Vtpm` is what both transports (CUSE device, sockets) and the control
operations (:mod:`vtpm_cuse.control`) act on.  It owns

* the :class:`~vtpm_cuse.tpm.engine.Engine` (``None`` while the TPM is stopped,
  i.e. before INIT, after STOP, after a failed INIT),
* the :class:`~vtpm_cuse.state.DirectoryStore` and its ``.lock``,
* the sticky locality (PTM_SET_LOCALITY / the vendor SET_LOCALITY command)
  and the locality policy,
* the buffer size (PTM_SET_BUFFERSIZE), which survives INIT/STOP as in swtpm,
* the last executed command code, for the automatic TPM2_Shutdown,
* one worker thread on which *everything that touches the engine or the
  store* runs, one job at a time (:class:`~vtpm_cuse.worker.Worker`).

Why one serialising worker: the engine is not thread-safe and a TPM command
may take long (key generation); running it on the trio thread would block
every control request, including the CANCEL that is meant to stop it.  With
one worker, a control operation that must see a consistent TPM (HASH_*,
STORE_VOLATILE, GET_STATEBLOB, INIT, STOP ...) simply queues behind the running
command -- exactly swtpm's "wait for the worker" -- while the ones swtpm
answers immediately (GET_CAPABILITY, SET_LOCALITY, CANCEL, GET_CONFIG,
SET_BUFFERSIZE, LOCK_STORAGE, GET_INFO) never touch the worker.

Errors: methods used by the control layer raise
:class:`~vtpm_cuse.state.StateError` (carrying the ptm result code) or
:class:`VtpmStateError` (wrong running/stopped state); :meth:`Vtpm.execute`
never raises for bad input, it always returns a TPM response.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ioctl_defs import PtmResult

from .flags import MAX_LOCALITY, LocalityPolicy, StartupMode, VtpmFlags
from .state import DirectoryStore, StateError, StateKey, StateKind, StorageLockError
from .tpm.constants import MAX_COMMAND_SIZE, TPM_CC, TPM_SU
from .tpm.errors import TPM_RC
from .tpm.wire import HEADER_SIZE, command_bytes, command_code, error_response, response_code
from .worker import Worker

if TYPE_CHECKING:
    from .tpm.command import CommandTable
    from .tpm.engine import Engine

# The engine (its command table and the declaration checks) is the slowest import of
# the daemon, so it is loaded when the first TPM starts (:func:`load_engine`), after
# the sockets or the CUSE channel are open: the kernel queues clients meanwhile.

__all__ = [
    "BUFFER_SIZE_MAX",
    "BUFFER_SIZE_MIN",
    "DEFAULT_LOCKING_RETRIES",
    "LocalityPolicy",
    "MAX_LOCALITY",
    "StartupMode",
    "TPM2_CC_SET_LOCALITY",
    "Vtpm",
    "VtpmFlags",
    "VtpmStateError",
    "fatal_error_response",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: swtpm's vendor command that sets the locality in-band (spec §2.5 step 4).
TPM2_CC_SET_LOCALITY = 0x20001000
#: Lock attempts (10 ms apart) before a command or LOCK_STORAGE gives up, as swtpm.
DEFAULT_LOCKING_RETRIES = 300
#: Smallest buffer PTM_SET_BUFFERSIZE accepts.  swtpm/libtpms use
#: sizeof(TPMS_CONTEXT) + 128 = 2832; our largest response (capability data,
#: MAX_DIGEST_BUFFER-sized results, a context blob of MAX_CONTEXT_SIZE) fits in
#: it, and clients (QEMU, swtpm_ioctl) see the same numbers as with swtpm.
BUFFER_SIZE_MIN = 2832
#: Mode of a state directory we create (swtpm: 0775; the state holds secrets).
STATE_DIR_MODE = 0o770
#: Largest buffer: the engine's own command/response limit.
BUFFER_SIZE_MAX = MAX_COMMAND_SIZE


def load_engine() -> type[Engine]:
    """Import the engine (once; later calls are a dictionary look-up)."""
    from .tpm.engine import Engine

    return Engine


class VtpmStateError(Exception):
    """An operation needs the TPM running (or stopped) and it is not.

    ``result_code`` is TPM_BAD_ORDINAL (0xa), what swtpm answers in both cases.
    """

    result_code = PtmResult.TPM_BAD_ORDINAL

    def __init__(self, operation: str, *, needs_running: bool) -> None:
        state = "running" if needs_running else "stopped"
        super().__init__(f"{operation} needs a {state} TPM")
        self.needs_running = needs_running


def fatal_error_response() -> bytes:
    """What a stopped TPM answers to every command: ``80 01 00 00 00 0a 00 00 01 01``.

    QEMU's version probe relies on the tag of this answer (§3.4, §6.1).
    """
    return error_response(TPM_RC.FAILURE)


#: Size of the TPM_SU parameter of TPM2_Startup / TPM2_Shutdown.
_SU_SIZE = 2


def _startup_command(su: int) -> bytes:
    """TPM2_Startup(su), which ``--flags startup-*`` sends on the TPM's behalf."""
    return command_bytes(TPM_CC.Startup, int(su).to_bytes(_SU_SIZE, "big"))


def _shutdown_command(su: int) -> bytes:
    """TPM2_Shutdown(su), the automatic shutdown before STOP persists the state."""
    return command_bytes(TPM_CC.Shutdown, int(su).to_bytes(_SU_SIZE, "big"))


def _response_code(response: bytes) -> int:
    """The responseCode, or TPM_RC_FAILURE for a truncated response (so it is logged as failed)."""
    rc = response_code(response)
    return TPM_RC.FAILURE if rc is None else rc


#: Codes from the store that mean "this state cannot be used": a damaged file or the
#: wrong / a missing key.  INIT answers TPM_RC_FAILURE for all of them, as swtpm does
#: for a TPM 2 (libtpms refuses the state; swtpm's own test of a wrong state key expects
#: 0x101); the log line names the file and the reason, so the operator still learns
#: which input is wrong.
_UNUSABLE_STATE_RESULTS = frozenset(
    {
        PtmResult.TPM_DECRYPT_ERROR,
        PtmResult.TPM_KEYNOTFOUND,
        PtmResult.TPM_BAD_KEY_PROPERTY,
        PtmResult.TPM_BAD_PARAMETER,
        PtmResult.TPM_BAD_VERSION,
        PtmResult.TPM_BAD_DATASIZE,
        PtmResult.TPM_BAD_MODE,
    }
)


class Vtpm:
    """One virtual TPM.  See the module docstring for the threading model.

    ``store`` is a :class:`DirectoryStore` or a state directory path (then a
    store with default options, ``file_key`` and ``migration_key`` is built).
    ``engine_options`` are passed to every :class:`Engine` this instance
    creates (tests pass ``table=`` for test-only commands, ``random=`` ...).
    ``incoming_migration`` (``--migration incoming``) defers taking the
    storage lock at INIT until state arrives or LOCK_STORAGE is sent.
    """

    def __init__(
        self,
        store: DirectoryStore | str | os.PathLike[str],
        *,
        file_key: StateKey | None = None,
        migration_key: StateKey | None = None,
        flags: VtpmFlags = VtpmFlags(),
        locality_policy: LocalityPolicy = LocalityPolicy(),
        incoming_migration: bool = False,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(store, DirectoryStore):
            if file_key is not None or migration_key is not None:
                raise ValueError("give the keys to the DirectoryStore, not to Vtpm, when passing a store")
            self.store = store
        else:
            self.store = DirectoryStore(store, file_key=file_key, migration_key=migration_key)
        self.flags = flags
        self.locality_policy = locality_policy
        self.incoming_migration = incoming_migration
        self.engine_options: dict[str, Any] = dict(engine_options or {})
        self.engine: Engine | None = None
        #: Locality of every TPM command; sticky across commands and INIT.
        self.locality = 0
        #: Command code of the last command executed since INIT (auto-shutdown).
        self.last_command: int | None = None
        #: PTM_SET_BUFFERSIZE value; a process-wide setting in swtpm, kept across INIT.
        self.buffer_size = BUFFER_SIZE_MAX
        #: Lock attempts before each command (LOCK_STORAGE sets it).
        self.locking_retries = DEFAULT_LOCKING_RETRIES
        self._worker = Worker("vtpm-worker")
        # StorageLock is not thread-safe; LOCK_STORAGE runs outside the worker.
        self._store_mutex = threading.Lock()
        self._busy = False

    # -- introspection -------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the TPM has been INITed (and not stopped since)."""
        return self.engine is not None

    @property
    def busy(self) -> bool:
        """Whether a TPM command is executing on the worker right now."""
        return self._busy

    @property
    def command_table(self) -> CommandTable:
        """The commands this TPM implements (also while stopped, for GET_INFO)."""
        if self.engine is not None:
            return self.engine.table
        from .tpm.commands import COMMANDS

        return self.engine_options.get("table", COMMANDS)

    def require_running(self, operation: str) -> Engine:
        engine = self.engine
        if engine is None:
            raise VtpmStateError(operation, needs_running=True)
        return engine

    def require_stopped(self, operation: str) -> None:
        if self.engine is not None:
            raise VtpmStateError(operation, needs_running=False)

    # -- the worker ------------------------------------------------------------------

    async def run_on_worker(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the TPM worker thread, after anything queued before it.

        Not cancellable once started: the engine must never be left half-way.
        """
        return await self._worker.run(fn)

    # -- life cycle ----------------------------------------------------------------------

    async def init(self, *, delete_volatile: bool = False) -> None:
        """PTM_INIT: stop the TPM if it runs, then start it from the state directory.

        Raises :class:`StateError` with the code to report; on failure the TPM
        stays stopped and no state file is modified.
        """
        await self.run_on_worker(lambda: self._init_blocking(delete_volatile))

    async def stop(self) -> None:
        """PTM_STOP: automatic TPM2_Shutdown (unless disabled), persist, power off."""
        await self.run_on_worker(self._stop_blocking)

    async def shutdown(self) -> None:
        """PTM_SHUTDOWN / program exit: stop, then let go of the state directory."""
        await self.stop()
        await trio.to_thread.run_sync(self._release_storage)

    async def preload(self) -> None:
        """Import the engine on the worker now, so that the first INIT (queued behind
        this job) does not pay for it; the event loop keeps serving meanwhile."""
        await self.run_on_worker(load_engine)

    async def boot(self) -> bytes | None:
        """Start without INIT as ``--flags not-need-init[,startup-*]`` asks.

        Returns the Startup response when one was sent (swtpm's CUSE device
        leaves it readable for the first reader), else None.
        """
        if not self.flags.start_immediately:
            return None
        await self.init()
        if self.flags.startup in (None, StartupMode.NONE):
            return None
        su = TPM_SU.CLEAR if self.flags.startup is StartupMode.CLEAR else TPM_SU.STATE
        return await self.execute(_startup_command(su))

    def _init_blocking(self, delete_volatile: bool) -> None:
        self._stop_blocking()
        directory = self.store.directory
        self._ensure_directory()
        with self._store_mutex:
            if not self.incoming_migration:
                self.store.lock(self.locking_retries)
            try:
                permanent = self.store.load(StateKind.PERMANENT)
                volatile = self.store.load(StateKind.VOLATILE) if permanent else None
                if permanent is None and self.store.exists(StateKind.VOLATILE):
                    # Its permanent state was lost: manufacturing a new TPM would silently
                    # replace the one the volatile state belongs to.
                    raise StateError(
                        PtmResult.TPM_RC_FAILURE,
                        f"{self.store.path_for(StateKind.VOLATILE)} exists but "
                        f"{self.store.path_for(StateKind.PERMANENT)} is missing; refusing to manufacture a new TPM",
                    )
            except StorageLockError:
                raise
            except StateError as exc:
                raise self._init_error(exc) from exc
        engine_class = load_engine()  # imports the engine and its state module
        perm, vol = self._decode_state(StateKind.PERMANENT, permanent), self._decode_state(StateKind.VOLATILE, volatile)
        engine = engine_class(perm, vol, **self.engine_options)
        engine.max_command_size = engine.max_response_size = self.buffer_size
        with self._store_mutex:
            # A fresh TPM was manufactured: its seeds must reach the disk now.
            self._persist_locked(engine)
            if delete_volatile:
                self.store.delete(StateKind.VOLATILE)
        self.engine = engine
        self.last_command = None
        log.info(
            "TPM started from %s (%s)",
            directory,
            "fresh" if permanent is None else "resumed" if volatile else "permanent state",
        )

    def _decode_state(self, kind: StateKind, blob: bytes | None) -> Any:
        """The engine's state object of ``kind`` (None for no blob); a damaged one is
        TPM_RC_FAILURE naming the file, as libtpms refuses a state it cannot use."""
        from .tpm.state import BlobKind, StateBlobError, deserialise

        if not blob:
            return None
        try:
            return deserialise(BlobKind(int(kind)), blob)
        except StateBlobError as exc:
            raise StateError(PtmResult.TPM_RC_FAILURE, f"{self.store.path_for(kind)} is not usable: {exc}") from exc

    def _ensure_directory(self) -> None:
        """Create the state directory (one level, like swtpm's mkdir) if it is missing."""
        directory = self.store.directory
        try:
            directory.mkdir(mode=STATE_DIR_MODE, exist_ok=True)
        except OSError as exc:
            raise StateError(PtmResult.TPM_FAIL, f"cannot create state directory {directory}: {exc.strerror}") from exc

    @staticmethod
    def _init_error(exc: StateError) -> StateError:
        if exc.result_code in _UNUSABLE_STATE_RESULTS:
            return StateError(PtmResult.TPM_RC_FAILURE, exc.message)
        return exc

    def _stop_blocking(self) -> None:
        engine = self.engine
        if engine is None:
            return
        try:
            if not self.flags.disable_auto_shutdown and self.last_command != TPM_CC.Shutdown:
                self._auto_shutdown(engine)
            with self._store_mutex:
                self._persist_locked(engine)
        except StateError as exc:
            log.error("persisting the TPM state on stop failed: %s", exc)
        finally:
            self.engine = None
            self.last_command = None

    def _auto_shutdown(self, engine: Engine) -> None:
        """Send TPM2_Shutdown(STATE), or (CLEAR) if that fails, like swtpm (§2.7)."""
        if not engine.volatile.started:
            return  # nothing to save; Shutdown would only answer TPM_RC_INITIALIZE
        for su in (TPM_SU.STATE, TPM_SU.CLEAR):
            rc = _response_code(engine.execute(_shutdown_command(su), self.locality))
            if rc == TPM_RC.SUCCESS:
                log.debug("automatic TPM2_Shutdown(%s) sent", TPM_SU(su).name)
                return
            log.warning("automatic TPM2_Shutdown(%s) failed with 0x%x", TPM_SU(su).name, rc)

    # -- TPM commands --------------------------------------------------------------------

    async def execute(self, command: bytes) -> bytes:
        """Execute one TPM command at the current locality; always returns a response.

        Stopped TPM -> fatal error response; < 10 bytes -> TPM_RC_INSUFFICIENT;
        swtpm's vendor SET_LOCALITY command is answered here; everything else
        runs in the engine on the worker thread, and permanent state it
        changed is written to the store before the response is returned.
        """
        command = bytes(command)
        code = command_code(command)
        answer = self._answer_without_engine(command, code)
        if answer is None:
            assert code is not None
            answer = self._try_inline(command, code)
        if answer is not None:
            return answer
        assert code is not None
        return await self.run_on_worker(lambda: self._execute_blocking(command, code))

    def execute_inline(self, command: bytes) -> bytes | None:
        """:meth:`execute` right here, if that does not wait: the answers without the
        engine, or a short command while no job runs or waits (:meth:`_runs_inline`,
        :meth:`Worker.try_run_inline`); else None and nothing happened. Callable from
        the event loop and from the CUSE data thread (it only takes the turn if free)."""
        command = bytes(command)
        code = command_code(command)
        answer = self._answer_without_engine(command, code)
        if answer is not None:
            return answer
        assert code is not None
        return self._try_inline(command, code)

    def execute_here(self, command: bytes) -> bytes:
        """:meth:`execute` for a thread that may block (the socket data thread): the
        command runs on the calling thread, in turn with the worker's jobs."""
        command = bytes(command)
        code = command_code(command)
        answer = self._answer_without_engine(command, code)
        if answer is not None:
            return answer
        return self._worker.run_here(self._execute_blocking, command, code)

    def _answer_without_engine(self, command: bytes, code: int | None) -> bytes | None:
        """The answers that need no engine: stopped TPM, less than a header (``code`` is
        None), vendor SET_LOCALITY. None means the engine must run it (``code`` is set)."""
        if self.engine is None:
            return fatal_error_response()
        if code is None:
            return error_response(TPM_RC.INSUFFICIENT)
        if code == TPM2_CC_SET_LOCALITY:
            return self._vendor_set_locality(command)
        return None

    def _try_inline(self, command: bytes, code: int) -> bytes | None:
        """The command run on this thread if it is short and the turn is free, else None."""
        if not self._runs_inline(code):
            return None
        done = self._worker.try_run_inline(lambda: self._execute_blocking(command, code))
        return None if done is None else done.unwrap()

    def _runs_inline(self, code: int) -> bool:
        """Whether the command is known to be short, so the event loop may run it itself.

        Like swtpm, which runs non-cancelable commands in its FUSE write handler:
        not cancelable (key generation, RSA private-key operations), not
        ``extensive`` or NV-writing (their state write syncs to disk), and no
        storage lock to re-take (that may retry for seconds).  Anything else, and
        anything while a job runs or waits, goes to the worker thread.
        """
        engine = self.engine
        cmd = engine.table.get(code) if engine is not None else None
        if cmd is None or cmd.cancelable or cmd.extensive or cmd.nv:
            return False
        return not self.store.locking_enabled or self.store.locked

    def _vendor_set_locality(self, command: bytes) -> bytes:
        if not self.locality_policy.allow_set_locality or len(command) <= HEADER_SIZE:
            return fatal_error_response()
        locality = command[HEADER_SIZE]
        if not self.locality_policy.allows(locality):
            return error_response(TPM_RC.LOCALITY)
        self.locality = locality
        return error_response(TPM_RC.SUCCESS)

    def _execute_blocking(self, command: bytes, code: int) -> bytes:
        engine = self.engine
        if engine is None:  # stopped while this command was queued
            return fatal_error_response()
        store = self.store
        if store.locking_enabled and not store.locked:  # re-checked under the mutex
            try:
                with self._store_mutex:
                    self._ensure_locked()
            except StateError as exc:
                log.error("TPM command 0x%x refused: %s", code, exc)
                return fatal_error_response()
        self.last_command = code
        # Clear before cancel() can see the command as running, so no cancel is lost.
        engine.cancel_requested.clear()
        clock_before = engine.clock()
        self._busy = True
        try:
            response = engine.execute(command, self.locality, fresh_cancel=False)
        finally:
            self._busy = False
        try:
            with self._store_mutex:
                self._persist_locked(engine)
        except StateError as exc:
            log.error("persisting permanent state after command 0x%x failed: %s", code, exc)
            return self._nv_unavailable(engine, clock_before)
        return response

    def _nv_unavailable(self, engine: Engine, clock_before: int) -> bytes:
        """The answer when the NV write a command needs failed (disk full, read-only
        directory): TPM_RC_NV_UNAVAILABLE, Part 1's "NV is not accessible, retry" --
        not NV_RATE (that is the TPM's own wear limiter), not FAILURE (the TPM is fine).

        The command's NV change is undone in RAM too (the state on disk is the last
        good one, and a later write must not store a change the caller was told
        failed).  If even the last good state cannot be read back, it stays marked
        dirty so that the next command writes it once space is back.
        """
        from .tpm.state import BlobKind, StateBlobError, deserialise

        try:
            with self._store_mutex:
                stored = self.store.load(StateKind.PERMANENT)
            if stored is None:
                raise StateError(PtmResult.TPM_FAIL, f"no permanent state in {self.store.directory}")
            engine.restore_permanent(deserialise(BlobKind.PERMANENT, stored), clock_before)
        except (StateError, StateBlobError) as exc:
            log.error("cannot put back the last stored permanent state: %s", exc)
            engine.mark_permanent_dirty()
        return error_response(TPM_RC.NV_UNAVAILABLE)

    def cancel(self) -> bool:
        """PTM_CANCEL_TPM_CMD: ask the running command to stop (TPM_RC_CANCELED).

        Returns whether a command was executing.  The flag is cleared before
        the next command starts, so a cancel with nothing running has no effect.
        """
        engine = self.engine
        if engine is None or not self._busy:
            return False
        engine.request_cancel()
        return True

    # -- platform signals (worker) ----------------------------------------------------------

    async def hash_start(self) -> None:
        await self._with_engine("PTM_HASH_START", lambda e: e.hash_start())

    async def hash_data(self, data: bytes) -> None:
        await self._with_engine("PTM_HASH_DATA", lambda e: e.hash_data(bytes(data)))

    async def hash_end(self) -> None:
        await self._with_engine("PTM_HASH_END", lambda e: e.hash_end())

    async def get_established(self) -> bool:
        return await self._with_engine("PTM_GET_TPMESTABLISHED", lambda e: e.tpm_established, persist=False)

    async def reset_established(self, locality: int) -> int:
        """Reset TPM-established from ``locality`` (for this call only); the TPM 2 rc."""
        return await self._with_engine("PTM_RESET_TPMESTABLISHED", lambda e: e.reset_established(locality))

    async def store_volatile(self) -> None:
        """PTM_STORE_VOLATILE: write ``tpm2-00.volatilestate``."""

        def work(engine: Engine) -> None:
            with self._store_mutex:
                self.store.store(StateKind.VOLATILE, engine.volatile_blob())

        await self._with_engine("PTM_STORE_VOLATILE", work, persist=False)

    async def _with_engine(self, operation: str, fn: Callable[[Engine], T], *, persist: bool = True) -> T:
        self.require_running(operation)

        def work() -> T:
            engine = self.require_running(operation)  # may have stopped while queued
            result = fn(engine)
            if persist:
                with self._store_mutex:
                    self._persist_locked(engine)
            return result

        return await self.run_on_worker(work)

    # -- state blobs ---------------------------------------------------------------------

    async def get_state_blob(self, kind: int, decrypt: bool) -> tuple[bytes, bool]:
        """GET_STATEBLOB of a whole blob: ``(blob, encrypted)``; raises StateError.

        Permanent and volatile state are snapshotted from the running engine
        (never a cached or stale copy); GET volatile also deletes the volatile
        file, as swtpm.  Savestate: TPM 2 has none, so this is normally
        TPM_RETRY; asking for it releases the storage lock (the outgoing half
        of a migration, §2.8/§2.10).
        """
        kind = StateKind.from_blob_type(kind)
        self.require_running("PTM_GET_STATEBLOB")

        def work() -> tuple[bytes, bool]:
            engine = self.require_running("PTM_GET_STATEBLOB")
            with self._store_mutex:
                if kind is StateKind.SAVESTATE:
                    self.store.unlock()
                    return self.store.get_blob(kind, decrypt)
                if kind is StateKind.PERMANENT:
                    self._persist_locked(engine)
                    return self.store.make_blob(kind, engine.permanent_blob(), decrypt)
                blob = self.store.make_blob(kind, engine.volatile_blob(), decrypt)
                self.store.delete(StateKind.VOLATILE)
                return blob

        return await self.run_on_worker(work)

    async def set_state_blob(self, kind: int, blob: bytes, encrypted: bool) -> None:
        """SET_STATEBLOB of a whole blob while stopped: validate, then write its file.

        An empty blob removes the state of that kind.  Raises StateError
        (StorageLockError when the directory cannot be locked).
        """
        kind = StateKind.from_blob_type(kind)
        self.require_stopped("PTM_SET_STATEBLOB")

        def work() -> None:
            self.require_stopped("PTM_SET_STATEBLOB")
            self._ensure_directory()
            with self._store_mutex:
                self.store.lock(self.locking_retries)
                state = self.store.check_blob(kind, bytes(blob), encrypted)
                if not state:
                    self.store.delete(kind)
                    return
                if kind is StateKind.SAVESTATE:
                    raise StateError(
                        PtmResult.TPM_BAD_PARAMETER, "a TPM 2 has no savestate; refusing a non-empty savestate blob"
                    )
                from .tpm.state import BlobKind, StateBlobError, deserialise

                try:
                    deserialise(BlobKind(int(kind)), state)
                except StateBlobError as exc:
                    raise StateError(
                        PtmResult.TPM_BAD_PARAMETER, f"{kind.state_name} blob is not a usable TPM state: {exc}"
                    ) from exc
                self.store.store(kind, state)

        await self.run_on_worker(work)

    # -- storage lock ----------------------------------------------------------------------

    async def lock_storage(self, retries: int) -> None:
        """PTM_LOCK_STORAGE: remember ``retries`` and take the lock (StorageLockError)."""
        self.locking_retries = retries

        def work() -> None:
            with self._store_mutex:
                self.store.lock(retries)

        await trio.to_thread.run_sync(work)

    def _ensure_locked(self) -> None:
        """Re-take the lock before a command if GET savestate released it (§2.10)."""
        if self.store.locking_enabled and not self.store.locked:
            self.store.lock(self.locking_retries)

    def _release_storage(self) -> None:
        with self._store_mutex:
            self.store.unlock()

    # -- buffer size -----------------------------------------------------------------------

    def set_buffer_size(self, size: int) -> int:
        """PTM_SET_BUFFERSIZE: 0 queries; otherwise clamp to the limits (TPM stopped only).

        Returns the size now in effect.  The engine's maximum command and
        response size follow it, so TPM_PT_MAX_COMMAND_SIZE reports it.
        """
        if size:
            self.require_stopped("PTM_SET_BUFFERSIZE")
            self.buffer_size = max(BUFFER_SIZE_MIN, min(BUFFER_SIZE_MAX, size))
        return self.buffer_size

    # -- persistence -------------------------------------------------------------------------

    def _persist_locked(self, engine: Engine) -> None:
        """Write permanent state if the engine changed it (store mutex held)."""
        if engine.take_permanent_dirty():
            try:
                self.store.store(StateKind.PERMANENT, engine.permanent_blob())
            except StateError:
                engine.mark_permanent_dirty()
                raise

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Vtpm {str(self.store.directory)!r} {state} locality={self.locality}>"
