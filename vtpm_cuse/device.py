"""The character-device semantics of /dev/vtpm-<name>: a :class:`CuseDevice` over a :class:`Vtpm`.

What a process sees on the device (spec §2.4-§2.8, §10 item 4):

* **open**: one opener at a time; a second open gets EBUSY until the first file
  is released.  Release forgets the pending response and any state-blob
  transfer: a response belongs to the file that sent the command.
* **write** = one TPM command.  A stopped TPM answers every command with the
  10-byte fatal error response, a command shorter than a header with
  TPM_RC_INSUFFICIENT (both from :meth:`Vtpm.execute`), a command longer than
  the buffer size with TPM_RC_COMMAND_SIZE.  A write while a command runs is
  EBUSY.  A blocking write returns once the response is ready (as Linux'
  /dev/tpm0); an O_NONBLOCK write returns at once and the command runs in the
  background (poll for POLLIN).  Every write discards an unread response tail.
* **read** = the response, in as many partial reads as the caller likes; b""
  (EOF) when nothing is pending.  A blocking read waits for a running command
  (an interrupted caller sees EINTR), an O_NONBLOCK read gets EAGAIN instead.
* **poll**: POLLIN only while a response (or a GET_STATEBLOB tail) is waiting,
  POLLOUT while no command runs; sleeping pollers are woken when a command
  finishes.  swtpm has no poll, so the kernel reports its device as always
  readable; a client that polls before reading (tpm2-tss, go-tpm, the kernel's
  TPM selftests) can only rely on POLLIN when it means something.
* **ioctl**: every PTM ioctl of :mod:`ioctl_defs` (the host ABI and its 32/64-bit
  sibling, whose PTM_GET_INFO number differs) goes through
  :func:`vtpm_cuse.control.dispatch` with Transport.CUSE; PTM_SET_DATAFD and
  unknown numbers are EINVAL, as with swtpm.  PTM_SHUTDOWN replies, then calls
  ``on_terminate`` so the daemon removes the device and exits.
* **state blobs**: while a GET_STATEBLOB has bytes left, read() continues it;
  after a SET_STATEBLOB opened a transfer, write() appends to it
  (:class:`~vtpm_cuse.control.CuseBlobTransfer`).  Writing during a GET or
  reading during a SET is EIO and ends the transfer (swtpm).

swtpm quirks (§2.11) fixed on purpose, each pinned by tests/test_device_semantics.py:

1. PTM_RESET_TPMESTABLISHED with loc > 4 answers TPM_BAD_LOCALITY (0x3d)
   instead of never replying (done in :mod:`vtpm_cuse.control`).
2. A read after PTM_STOP/PTM_SHUTDOWN/PTM_INIT returns 0 bytes (swtpm would read
   a freed buffer); the response of the TPM's previous life is gone.
3. No stale state-blob cache: every GET_STATEBLOB at offset 0 takes a fresh
   snapshot (CuseBlobTransfer).
4. The read() continuation of GET_STATEBLOB resumes where the last ioctl's
   chunk ended, also after an ioctl at a non-zero offset (CuseBlobTransfer).
5. A command longer than the buffer size is consumed whole and answered with a
   TPM_RC_COMMAND_SIZE response, instead of being cut at 4096 bytes with a
   short write count whose rest a retrying client would send as a new command.
   (One write() larger than the CUSE max_write is split by the kernel into
   several WRITE requests; each piece is then answered on its own.)
6. The Startup response of ``--flags startup-*`` is not left for the first
   reader: a fresh opener reads EOF, as after any other open.
"""

from __future__ import annotations

import errno
import logging
import select
import threading
from collections.abc import Callable

import trio

from ioctl_defs import MalformedMessage, PtmCmd, UnknownCommand, by_ioctl

from .control import CuseBlobTransfer, TransferMode, Transport, dispatch
from .cuse.device import CuseDevice, NotifyPoll, PollWaiters
from .cuse.protocol import IoctlFlags, PollFlags
from .tpm.errors import TPM_RC
from .tpm.wire import error_response
from .vtpm import Vtpm

__all__ = ["VtpmDevice", "READABLE", "WRITABLE"]

log = logging.getLogger(__name__)

READABLE = select.POLLIN | select.POLLRDNORM
"""poll bits while a response is waiting (the kernel keeps only those asked for)."""
WRITABLE = select.POLLOUT | select.POLLWRNORM
"""poll bits while the device takes a command."""

_RESETS_RESPONSE = frozenset({PtmCmd.CMD_INIT, PtmCmd.CMD_STOP, PtmCmd.CMD_SHUTDOWN})
"""Control commands after which the pending response no longer belongs to the TPM."""


class VtpmDevice(CuseDevice):
    """One vTPM as a character device.

    ``nursery`` runs the commands of O_NONBLOCK writes in the background; without
    one they run inside the write like blocking ones (still correct, only the
    write then waits).  ``on_terminate`` is called once PTM_SHUTDOWN (or a fatal
    storage-lock failure) has been answered.  With ``booting``, reads, writes and
    ioctls wait until :meth:`boot` has started the TPM, so the node can appear
    before the engine is even imported.
    """

    def __init__(
        self,
        vtpm: Vtpm,
        *,
        nursery: trio.Nursery | None = None,
        on_terminate: Callable[[], None] | None = None,
        booting: bool = False,
    ) -> None:
        self.vtpm = vtpm
        self.transfer = CuseBlobTransfer()
        self._nursery = nursery
        self._on_terminate = on_terminate
        self._fh: int | None = None
        self._next_fh = 1
        self._response = b""
        self._read_offset = 0
        self._done: trio.Event | None = None
        """Set when the running command finishes; None while no command runs."""
        self._generation = 0
        """Bumped whenever the pending response is dropped, so a command that
        finishes after its file was closed (or the TPM stopped) does not leave a
        response behind for someone else."""
        self._poll_waiters = PollWaiters()
        self._lock = threading.Lock()
        """Held by every ``*_now`` call (the CUSE data thread) and by the background
        task of an O_NONBLOCK write while it publishes its response: the only trio
        code that can run while ``*_now`` does (see :mod:`vtpm_cuse.cuse.device`)."""
        self.terminated = False
        self._booted = trio.Event()
        """Closed while :meth:`boot` starts the TPM behind an already visible node."""
        if not booting:
            self._booted.set()

    # --- what the CUSE data thread serves itself (nothing here waits) --------------------

    def open_now(self, flags: int) -> int:
        with self._lock:
            if self._fh is not None:
                raise OSError(errno.EBUSY, "the vTPM is already open (one opener at a time)")
            self._fh = self._next_fh
            self._next_fh += 1
            self._drop_response()
            self.transfer.reset()
            return self._fh

    def release_now(self, fh: int, flags: int) -> bool:
        with self._lock:
            if fh == self._fh:
                self._fh = None
                self._drop_response()
                self.transfer.reset()
                self._poll_waiters.clear()
        return True

    def poll_now(self, fh: int, kh: int, flags: PollFlags, events: int, notify_poll: NotifyPoll) -> int:
        with self._lock:
            self._check(fh)
            revents = 0
            if self._done is None:
                revents |= WRITABLE
                if self.pending or self.transfer.mode is TransferMode.GET:
                    revents |= READABLE
            if flags & PollFlags.SCHEDULE_NOTIFY and not revents & events:
                self._poll_waiters.add(kh, notify_poll)
            return revents

    def _takes_transfer(self, direction: TransferMode, verb: str) -> bool:
        """Whether a state-blob transfer serves this ``verb`` (a read continues a GET, a
        write a SET); a read or write against the transfer in progress ends it with EIO,
        as swtpm does. False while no transfer runs."""
        mode = self.transfer.mode
        if mode is direction:
            return True
        if mode is not TransferMode.IDLE:
            self.transfer.reset()
            raise OSError(errno.EIO, f"{verb} during a {mode.name}_STATEBLOB transfer")
        return False

    def read_now(self, fh: int, size: int, nonblock: bool) -> bytes | None:
        """None for a blocking read while a command runs or the TPM boots."""
        with self._lock:
            self._check(fh)
            if not self._booted.is_set():
                return None
            if self._takes_transfer(TransferMode.GET, "read"):
                return self.transfer.read(size)
            if self._done is not None:
                if nonblock:
                    raise OSError(errno.EAGAIN, "the TPM command is still executing")
                return None
            start = self._read_offset
            chunk = self._response[start : start + size]
            self._read_offset += len(chunk)
            if self._read_offset >= len(self._response):
                self._drop_response()
            return chunk

    def write_now(self, fh: int, data: bytes, nonblock: bool) -> int | None:
        """A command the Vtpm runs inline (short, nothing else running or queued:
        :meth:`Vtpm.execute_inline`), or a write that fails or feeds a state-blob
        transfer at once; None (nothing done) for the rest."""
        with self._lock:
            self._check(fh)
            if not self._booted.is_set():
                return None
            if self._takes_transfer(TransferMode.SET, "write"):
                return self.transfer.write(data)
            if self._done is not None:
                raise OSError(errno.EBUSY, "a TPM command is still executing")
            if self.vtpm.running and len(data) > self.vtpm.buffer_size:
                log.debug("command of %d bytes exceeds the buffer size %d", len(data), self.vtpm.buffer_size)
                response: bytes | None = error_response(TPM_RC.COMMAND_SIZE)
            else:
                try:
                    response = self.vtpm.execute_inline(data)
                except Exception:  # as in _execute: the writer still wrote a command
                    log.exception("TPM command failed unexpectedly")
                    response = error_response(TPM_RC.FAILURE)
                if response is None:
                    return None
            self._drop_response()
            self._response = response
        self._poll_waiters.wake()
        return len(data)

    async def boot(self) -> None:
        """Start the TPM as ``--flags`` ask (:meth:`Vtpm.boot`), then let requests in.

        When the TPM waits for INIT instead, the engine is imported on the worker
        meanwhile, so the INIT queued behind it does not pay for the import."""
        try:
            await self.vtpm.boot()  # a Startup response of --flags startup-* is not left for a reader
        finally:
            self._booted.set()
        if not self.vtpm.running:
            await self.vtpm.preload()

    # --- helpers ---------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a TPM command sent through the device is still executing."""
        return self._done is not None

    @property
    def pending(self) -> int:
        """Unread bytes of the current response."""
        return len(self._response) - self._read_offset

    def _check(self, fh: int) -> None:
        if fh != self._fh:
            raise OSError(errno.EBADF, f"file handle {fh} is not the open vTPM file")

    def _drop_response(self) -> None:
        self._response = b""
        self._read_offset = 0
        self._generation += 1

    async def _wait_booted(self) -> None:
        if not self._booted.is_set():
            await self._booted.wait()

    async def _wait_idle(self) -> None:
        while self._done is not None:
            await self._done.wait()

    # --- the same on trio, where writes of long commands and reads behind them wait ---------

    async def open(self, flags: int) -> int:
        return self.open_now(flags)

    async def release(self, fh: int, flags: int) -> None:
        self.release_now(fh, flags)

    async def write(self, fh: int, data: bytes, nonblock: bool) -> int:
        self._check(fh)
        await self._wait_booted()
        taken = self.write_now(fh, data, nonblock)
        if taken is not None:
            return taken
        self._drop_response()
        done = self._done = trio.Event()
        generation = self._generation
        command = bytes(data)
        if nonblock and self._nursery is not None:
            self._nursery.start_soon(self._execute, command, generation, done)
        else:
            await self._execute(command, generation, done)
        return len(data)

    async def _execute(self, command: bytes, generation: int, done: trio.Event) -> None:
        """Run one command; shielded because the engine cannot stop half-way and the
        response must be published (a cancelled writer still wrote the command)."""
        with trio.CancelScope(shield=True):
            response = error_response(TPM_RC.FAILURE)
            try:
                response = await self.vtpm.execute(command)
            except Exception:
                log.exception("TPM command failed unexpectedly")
            finally:
                with self._lock:  # the response first: the data thread reads once _done is None
                    if generation == self._generation:
                        self._response = response
                        self._read_offset = 0
                    self._done = None
                done.set()
            self._poll_waiters.wake()

    async def read(self, fh: int, size: int, nonblock: bool) -> bytes:
        self._check(fh)
        await self._wait_booted()
        while (chunk := self.read_now(fh, size, nonblock)) is None:
            await self._wait_idle()  # cancelled by INTERRUPT -> EINTR
        return chunk

    async def poll(self, fh: int, kh: int, flags: PollFlags, events: int, notify_poll: NotifyPoll) -> int:
        return self.poll_now(fh, kh, flags, events, notify_poll)

    # --- ioctl: the PTM control operations -------------------------------------------------

    async def ioctl(
        self, fh: int, cmd: int, arg: int, in_data: bytes, out_size: int, flags: IoctlFlags
    ) -> tuple[int, bytes]:
        self._check(fh)
        await self._wait_booted()
        try:
            spec, abi = by_ioctl(cmd)
        except UnknownCommand:
            raise OSError(errno.EINVAL, f"no PTM ioctl {cmd:#010x}") from None
        if spec.cmd == PtmCmd.CMD_SET_DATAFD:
            raise OSError(errno.EINVAL, "PTM_SET_DATAFD is a socket-only operation")
        try:
            request = spec.request.unpack_ioctl(in_data, abi)
        except MalformedMessage as exc:
            raise OSError(errno.EINVAL, f"{spec.name}: {exc}") from None
        if spec.cmd in _RESETS_RESPONSE:
            await self._wait_idle()
        result = await dispatch(self.vtpm, spec.cmd, request, Transport.CUSE, transfer=self.transfer)
        reply = result.response.pack_ioctl(abi)
        if len(reply) > out_size:
            raise OSError(errno.EINVAL, f"{spec.name} answers {len(reply)} bytes, the caller takes {out_size}")
        if spec.cmd in _RESETS_RESPONSE:
            self._drop_response()
        if result.terminate:
            self._terminate()
        elif self._poll_waiters and self.transfer.mode is TransferMode.GET:
            self._poll_waiters.wake()  # a GET_STATEBLOB tail is now readable
        return 0, reply

    def _terminate(self) -> None:
        """Ask the daemon to end once this reply is out. The session writes the reply
        in the same scheduling step in which ioctl() returns, before the daemon's
        task waiting for termination can run."""
        if self.terminated:
            return
        self.terminated = True
        if self._on_terminate is not None:
            self._on_terminate()

    async def destroy(self) -> None:
        """The device node is going away: stop the TPM cleanly (auto TPM2_Shutdown, persist)."""
        self._poll_waiters.clear()
        if self.vtpm.running:
            try:
                await self.vtpm.shutdown()
            except Exception:
                log.exception("stopping the TPM at device removal failed")
