"""A trio server for one CUSE channel: the /dev/cuse file descriptor (or, in tests,
one end of a SOCK_SEQPACKET socketpair, which keeps message boundaries the same way).

The kernel speaks first: CUSE_INIT, answered with the device name and limits, which
makes the kernel create /dev/<name> before our write returns. After that each read
returns exactly one request and each write must be exactly one reply. Requests are
served concurrently, one trio task each, because a read() may wait for data for a
long time while the same device must keep answering ioctls. The channel's lifetime is
the device's lifetime: closing the fd removes /dev/<name>.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from .device import CuseDevice
from .ioc import IOC_SIZE_MAX
from .protocol import (
    CUSE_MIN_KERNEL_MINOR,
    FUSE_KERNEL_MINOR_VERSION,
    FUSE_KERNEL_VERSION,
    FUSE_MIN_READ_BUFFER,
    KERNEL_MIN_IO_SIZE,
    MAX_REPLY_ERRNO,
    CuseInitIn,
    CuseInitOut,
    CuseProtocolError,
    FlushIn,
    FsyncFlags,
    FsyncIn,
    InHeader,
    InterruptIn,
    IoctlFlags,
    IoctlIn,
    IoctlOut,
    MalformedRequest,
    NotifyCode,
    NotifyPollWakeupOut,
    Opcode,
    OpenIn,
    OpenOut,
    OutHeader,
    PollFlags,
    PollIn,
    PollOut,
    ReadIn,
    ReleaseIn,
    Request,
    WriteIn,
    WriteOut,
    encode_devinfo,
    encode_error,
    encode_notify,
    encode_reply,
    opcode_name,
    parse_request,
)

log = logging.getLogger(__name__)

_DEVNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+@-]*")

MAX_IDLE_WORKERS = 8
"""Request workers kept waiting for work; more are started while requests block."""

_Handler = Callable[[Request], Awaitable[bytes]]
_Job = tuple[_Handler, Request, trio.CancelScope]

_OUT_HEADER = OutHeader.LAYOUT  # the hot path packs reply headers directly

_INSTANT_OPCODES = {
    Opcode.OPEN: "open",
    Opcode.RELEASE: "release",
    Opcode.POLL: "poll",
    Opcode.FLUSH: "flush",
    Opcode.FSYNC: "fsync",
}
"""Requests a device may declare instant (CuseDevice.INSTANT_CALLS), by method name."""

_CHANNEL_GONE = frozenset({errno.ENODEV, errno.ECONNABORTED, errno.EPIPE, errno.ECONNRESET, errno.EBADF})
"""Errors on the channel fd that mean the peer is gone: the session ends."""


@dataclass(frozen=True)
class CuseOptions:
    """What the CUSE_INIT reply tells the kernel about the device."""

    name: str
    """Device name: the node appears as /dev/<name>."""
    dev_major: int = 0
    """0 lets the kernel pick a free major."""
    dev_minor: int = 0
    max_read: int = 131072
    """Largest READ request; one read() syscall is split into requests of this size."""
    max_write: int = 131072
    """Largest WRITE request; also sizes our receive buffer."""

    def __post_init__(self) -> None:
        if not _DEVNAME.fullmatch(self.name) or len(self.name) > 200:
            raise ValueError(
                f"device name {self.name!r} must be 1-200 characters of letters, digits and "
                "_.:+@- (it becomes /dev/<name>) and must not start with '.' or '-'"
            )
        if not 0 <= self.dev_major < (1 << 12):
            raise ValueError(f"dev_major {self.dev_major} is outside 0..4095")
        if not 0 <= self.dev_minor < (1 << 20):
            raise ValueError(f"dev_minor {self.dev_minor} is outside 0..1048575")
        for what, value in (("max_read", self.max_read), ("max_write", self.max_write)):
            if not 0 < value < (1 << 31):
                raise ValueError(f"{what} {value} is outside 1..2**31-1")

    @property
    def devinfo(self) -> bytes:
        return encode_devinfo({"DEVNAME": self.name})

    @property
    def read_buffer_size(self) -> int:
        """Bytes per read of the channel. The kernel refuses smaller reads with EINVAL
        (fs/fuse/dev.c) and fails requests that do not fit with EIO, so it covers the
        biggest WRITE (after the kernel's raise to 4096) and the biggest ioctl input."""
        effective_max_write = max(self.max_write, KERNEL_MIN_IO_SIZE)
        return max(
            FUSE_MIN_READ_BUFFER,
            InHeader.SIZE + WriteIn.SIZE + effective_max_write,
            InHeader.SIZE + IoctlIn.SIZE + IOC_SIZE_MAX,
        )


class CuseSession:
    """Serves ``device`` on the channel ``fd``. The session does not own ``fd``:
    whoever opened it closes it (see :func:`serve_cuse`)."""

    def __init__(self, fd: int, device: CuseDevice, options: CuseOptions) -> None:
        self.fd = fd
        self.device = device
        self.options = options
        self.kernel_version: tuple[int, int] | None = None
        """(major, minor) the kernel offered in CUSE_INIT."""
        self.protocol_minor: int | None = None
        """The minor version we replied with."""
        self._buffer = bytearray(options.read_buffer_size)
        self._write_lock = trio.Lock()
        self._inflight: dict[int, trio.CancelScope] = {}
        self._serve_scope: trio.CancelScope | None = None
        self._pending: bytes | None = None
        self._idle_workers: list[_Worker] = []
        self._handlers: dict[Opcode, _Handler] = {
            Opcode.OPEN: self._open,
            Opcode.READ: self._read,
            Opcode.WRITE: self._write,
            Opcode.IOCTL: self._ioctl,
            Opcode.POLL: self._poll,
            Opcode.FLUSH: self._flush,
            Opcode.FSYNC: self._fsync,
            Opcode.RELEASE: self._release,
        }

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Handshake, then serve until DESTROY, the peer closing the channel, or
        cancellation. ``task_status.started(self)`` fires once the device exists.
        Raises :class:`CuseProtocolError` if the handshake fails."""
        os.set_blocking(self.fd, False)
        destroy_request: Request | None = None
        try:
            await self._handshake()
            task_status.started(self)
            with trio.CancelScope() as self._serve_scope:
                async with trio.open_nursery() as nursery:
                    destroy_request = await self._serve(nursery)
                    nursery.cancel_scope.cancel()  # requests in flight die with the channel
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await self.device.destroy()
                except Exception:
                    log.exception("device %r: destroy failed", self.options.name)
        if destroy_request is not None:
            await self._send(encode_reply(destroy_request.unique))

    async def notify_poll(self, kh: int) -> None:
        """Wake poll()/select() callers sleeping on the file with kernel handle ``kh``."""
        await self._send(encode_notify(NotifyCode.POLL, NotifyPollWakeupOut(kh)))

    async def _handshake(self) -> None:
        first = await self._receive()
        if first is None:
            raise CuseProtocolError("channel closed before CUSE_INIT")
        request = parse_request(first)
        if request.opcode != Opcode.CUSE_INIT or not isinstance(request.body, CuseInitIn):
            await self._send(encode_error(request.unique, errno.EPROTO))
            raise CuseProtocolError(f"expected CUSE_INIT first, got {opcode_name(request.header.opcode)}")
        offer = request.body
        self.kernel_version = (offer.major, offer.minor)
        if offer.major != FUSE_KERNEL_VERSION or offer.minor < CUSE_MIN_KERNEL_MINOR:
            await self._send(encode_error(request.unique, errno.EPROTO))
            raise CuseProtocolError(
                f"kernel offers FUSE protocol {offer.major}.{offer.minor}; "
                f"CUSE needs {FUSE_KERNEL_VERSION}.{CUSE_MIN_KERNEL_MINOR} or newer"
            )
        self.protocol_minor = min(offer.minor, FUSE_KERNEL_MINOR_VERSION)
        reply = CuseInitOut(
            major=FUSE_KERNEL_VERSION,
            minor=self.protocol_minor,
            unused=0,
            flags=0,  # restricted ioctls: transfers follow the _IOC bits, no RETRY dance
            max_read=self.options.max_read,
            max_write=self.options.max_write,
            dev_major=self.options.dev_major,
            dev_minor=self.options.dev_minor,
        )
        await self._send(encode_reply(request.unique, reply, self.options.devinfo))
        # The kernel processes the reply inside our write(): it either created the
        # device or aborted the connection (e.g. the name is taken), which the next
        # read reports as ENODEV. Probe once so that failure surfaces here.
        try:
            self._pending = self._try_read()
        except OSError as exc:
            if exc.errno in _CHANNEL_GONE:
                raise CuseProtocolError(
                    f"the kernel refused device {self.options.name!r} "
                    f"(is /dev/{self.options.name} already taken?): {exc}"
                ) from exc
            raise
        log.info(
            "CUSE device %r up (kernel protocol %d.%d, replied 7.%d)",
            self.options.name,
            offer.major,
            offer.minor,
            self.protocol_minor,
        )

    # --- channel I/O --------------------------------------------------------------------

    def _try_read(self) -> bytes | None:
        """One non-blocking read: a message, b"" at end of channel, None if none yet."""
        while True:
            try:
                n = os.readv(self.fd, [self._buffer])
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # the request vanished before it was copied out; next
                raise
            return bytes(memoryview(self._buffer)[:n])

    async def _receive(self) -> bytes | None:
        """The next message, or None once the peer has gone.

        Always waits for readability first, even when a message may already be
        queued: that yield lets the task of the previous request start, so request
        tasks start in arrival order (trio runs each scheduling batch in random
        order) and one read syscall serves one request."""
        if self._pending is not None:
            message, self._pending = self._pending, None
            return message or None
        while True:
            await trio.lowlevel.wait_readable(self.fd)
            try:
                message = self._try_read()
            except OSError as exc:
                if exc.errno in _CHANNEL_GONE:
                    log.info("device %r: channel closed (%s)", self.options.name, exc)
                    return None
                raise
            if message is not None:
                return message or None

    async def _send(self, message: bytes) -> None:
        """Write one whole message. Replies to requests the kernel no longer waits for
        (ENOENT) are dropped; if the channel is gone, the session ends.

        /dev/cuse consumes a reply inside write() and never blocks, so the message is
        written at once unless an earlier one is still waiting for the fd to become
        writable (only a socket peer does that); the lock keeps such waiters, and
        everything after them, in order."""
        if not self._write_lock.locked() and self._write_now(message):
            return
        async with self._write_lock:
            while not self._write_now(message):
                await trio.lowlevel.wait_writable(self.fd)

    def _write_now(self, message: bytes) -> bool:
        """Try to write ``message`` whole; False if the fd is not writable yet."""
        while True:
            try:
                written = os.write(self.fd, message)
            except BlockingIOError:
                return False
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in _CHANNEL_GONE:
                    log.info("device %r: channel closed while replying (%s)", self.options.name, exc)
                    if self._serve_scope is not None:
                        self._serve_scope.cancel()
                    return True
                log.warning(
                    "device %r: kernel refused a %d-byte message %s...: %s",
                    self.options.name,
                    len(message),
                    message[:16].hex(),
                    exc,
                )
                return True
            if written != len(message):
                raise CuseProtocolError(f"short write of a reply: {written} of {len(message)} bytes")
            return True

    # --- dispatch -----------------------------------------------------------------------

    async def _serve(self, nursery: trio.Nursery) -> Request | None:
        """Read and dispatch requests; returns the DESTROY request if one ended it."""
        while True:
            message = await self._receive()
            if message is None:
                return None
            try:
                request = parse_request(message)
            except MalformedRequest as exc:
                log.warning("device %r: malformed request: %s", self.options.name, exc)
                if exc.unique:
                    await self._send(encode_error(exc.unique, exc.errno))
                continue
            opcode = request.opcode
            if opcode == Opcode.INTERRUPT:
                assert isinstance(request.body, InterruptIn)
                self._interrupt(request.body.unique)
            elif opcode == Opcode.DESTROY:
                return request
            elif (handler := self._handlers.get(opcode)) is not None:  # type: ignore[call-overload]
                if self._returns_at_once(request):
                    await self._send(await self._reply(handler, request, None))
                    continue
                scope = trio.CancelScope()
                self._inflight[request.unique] = scope
                self._dispatch(nursery, (handler, request, scope))
            elif opcode == Opcode.CUSE_INIT:
                log.warning("device %r: CUSE_INIT after the handshake", self.options.name)
                await self._send(encode_error(request.unique, errno.EPROTO))
            else:
                log.debug("device %r: %s not implemented", self.options.name, opcode_name(request.header.opcode))
                await self._send(encode_error(request.unique, errno.ENOSYS))

    def _returns_at_once(self, request: Request) -> bool:
        """Whether the device promises this call does not wait: then it runs right here,
        in the reading task, without a task switch, a cancel scope or an in-flight entry
        (no INTERRUPT can be read for it meanwhile)."""
        body = request.body
        device = self.device
        if isinstance(body, WriteIn):
            return device.write_returns_at_once(body.fh, request.payload, bool(body.flags & os.O_NONBLOCK))
        if isinstance(body, ReadIn):
            return device.read_returns_at_once(body.fh, bool(body.flags & os.O_NONBLOCK))
        call = _INSTANT_OPCODES.get(request.opcode)
        return call is not None and call in device.INSTANT_CALLS

    def _dispatch(self, nursery: trio.Nursery, job: _Job) -> None:
        """Hand a request to an idle worker, or start one. Each request runs in a task
        of its own so that a blocked read does not hold up ioctls; workers are reused
        and woken directly because, under emulation especially, starting a trio task
        (or passing through a memory channel) costs more than the rest of a request."""
        if self._idle_workers:
            worker = self._idle_workers.pop()
            worker.job = job
            trio.lowlevel.reschedule(worker.task)
        else:
            nursery.start_soon(self._work, job)

    async def _work(self, job: _Job) -> None:
        me = _Worker(trio.lowlevel.current_task())

        def abort(_: object) -> trio.lowlevel.Abort:  # cancelled while idle: leave the pool
            self._idle_workers.remove(me)
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            await self._serve_request(*job)
            if len(self._idle_workers) >= MAX_IDLE_WORKERS:
                return
            self._idle_workers.append(me)
            await trio.lowlevel.wait_task_rescheduled(abort)
            assert me.job is not None
            job, me.job = me.job, None

    def _interrupt(self, target: int) -> None:
        """The caller waiting for ``target`` got a signal. Cancel the request; its task
        replies EINTR (or its result, if it finished first). The kernel only sends an
        INTERRUPT after we have read the request, so an unknown target was answered
        already and there is nothing to do (no reply to the INTERRUPT itself)."""
        scope = self._inflight.get(target)
        if scope is None:
            log.debug("device %r: INTERRUPT for finished request %d", self.options.name, target)
            return
        scope.cancel()

    async def _serve_request(self, handler: _Handler, request: Request, scope: trio.CancelScope) -> None:
        await self._send(await self._reply(handler, request, scope))

    async def _reply(self, handler: _Handler, request: Request, scope: trio.CancelScope | None) -> bytes:
        """Run the handler (inside ``scope``, which INTERRUPT cancels) and encode its reply."""
        name = self.options.name
        try:
            if scope is None:
                body = await handler(request)
            else:
                with scope:
                    body = await handler(request)
            if scope is not None and scope.cancelled_caught:
                reply = encode_error(request.unique, errno.EINTR)
            else:
                reply = _OUT_HEADER.pack(_OUT_HEADER.size + len(body), 0, request.unique) + body
        except OSError as exc:
            code = exc.errno
            if code is None or not 0 < code <= MAX_REPLY_ERRNO:
                log.warning(
                    "device %r: %s failed with errno %r, replying EIO: %s",
                    name,
                    opcode_name(request.header.opcode),
                    code,
                    exc,
                )
                code = errno.EIO
            reply = encode_error(request.unique, code)
        except Exception:
            log.exception("device %r: %s failed, replying EIO", name, opcode_name(request.header.opcode))
            reply = encode_error(request.unique, errno.EIO)
        finally:
            if scope is not None:
                self._inflight.pop(request.unique, None)
        return reply

    # --- per-opcode handlers: decoded request -> reply body (raise OSError to fail) ---

    async def _open(self, request: Request) -> bytes:
        assert isinstance(request.body, OpenIn)
        fh = await self.device.open(request.body.flags)
        if not isinstance(fh, int) or not 0 <= fh < (1 << 64):
            raise _DeviceBug(f"open returned file handle {fh!r}, not an int in 0..2**64-1")
        return OpenOut(fh=fh).pack()

    async def _read(self, request: Request) -> bytes:
        body = request.body
        assert isinstance(body, ReadIn)
        data = await self.device.read(body.fh, body.size, bool(body.flags & os.O_NONBLOCK))
        if len(data) > body.size:
            raise _DeviceBug(f"read returned {len(data)} bytes for a {body.size}-byte request")
        return bytes(data)

    async def _write(self, request: Request) -> bytes:
        body = request.body
        assert isinstance(body, WriteIn)
        taken = await self.device.write(body.fh, request.payload, bool(body.flags & os.O_NONBLOCK))
        if not isinstance(taken, int) or not 0 <= taken <= len(request.payload):
            raise _DeviceBug(f"write returned {taken!r} for {len(request.payload)} bytes")
        return WriteOut(size=taken).pack()

    async def _ioctl(self, request: Request) -> bytes:
        body = request.body
        assert isinstance(body, IoctlIn)
        result, out = await self.device.ioctl(
            body.fh, body.cmd, body.arg, request.payload, body.out_size, IoctlFlags(body.flags)
        )
        if len(out) > body.out_size:
            raise _DeviceBug(f"ioctl {body.cmd:#010x} returned {len(out)} bytes, caller takes {body.out_size}")
        if not -(1 << 31) <= result < (1 << 31):
            raise _DeviceBug(f"ioctl {body.cmd:#010x} returned result {result}, not an int32")
        return IoctlOut(result=result).pack() + bytes(out)

    async def _poll(self, request: Request) -> bytes:
        body = request.body
        assert isinstance(body, PollIn)
        revents = await self.device.poll(body.fh, body.kh, PollFlags(body.flags), body.events, self.notify_poll)
        return PollOut(revents=revents).pack()

    async def _flush(self, request: Request) -> bytes:
        assert isinstance(request.body, FlushIn)
        await self.device.flush(request.body.fh)
        return b""

    async def _fsync(self, request: Request) -> bytes:
        assert isinstance(request.body, FsyncIn)
        await self.device.fsync(request.body.fh, bool(request.body.fsync_flags & FsyncFlags.FDATASYNC))
        return b""

    async def _release(self, request: Request) -> bytes:
        assert isinstance(request.body, ReleaseIn)
        await self.device.release(request.body.fh, request.body.flags)
        return b""


@dataclass(slots=True)
class _Worker:
    """A request task waiting in the pool; _dispatch puts its next job in ``job``."""

    task: trio.lowlevel.Task
    job: _Job | None = None


class _DeviceBug(Exception):
    """A device broke the interface contract; the caller gets EIO."""


CUSE_PATH = "/dev/cuse"


async def serve_cuse(
    device: CuseDevice,
    options: CuseOptions,
    *,
    cuse_path: str = CUSE_PATH,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open ``cuse_path``, serve ``device`` as /dev/<options.name> until cancelled or the
    kernel ends the channel, then close it, which removes the device node.
    ``task_status.started(session)`` fires once the node exists."""
    try:
        fd = os.open(cuse_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, f"{cuse_path} does not exist: this kernel has no CUSE (modprobe cuse?)", cuse_path
        ) from None
    try:
        session = CuseSession(fd, device, options)
        await session.run(task_status=task_status)
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)
