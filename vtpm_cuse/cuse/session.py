"""The server for one CUSE channel: the /dev/cuse file descriptor (or, in tests,
one end of a SOCK_SEQPACKET socketpair, which keeps message boundaries the same way).

The kernel speaks first: CUSE_INIT, answered (on trio) with the device name and
limits, which makes the kernel create /dev/<name> before our write returns. After
that each read returns exactly one request and each write must be exactly one reply.

Who serves what (README, "What runs where"): one data thread (``cuse-data``) sleeps
in poll() on the channel, reads each request into one reused buffer, unpacks its
header with precompiled structs and -- while no earlier request is still being
served on trio -- offers OPEN, RELEASE, POLL, READ and WRITE to the device's
synchronous ``*_now`` methods (:mod:`.device`), writing the reply itself. That is
three system calls and no scheduler per round trip. Everything else (a read that
must wait, ioctls, long commands, INTERRUPT, DESTROY, anything malformed) is handed
to trio, which serves it in a task of its own, because a read() may wait a long
time while the same device must keep answering ioctls. While anything handed to
trio is unanswered, every later request follows it there, so requests are never
served out of order and the ``*_now`` methods never overlap a device's async ones.
The channel's lifetime is the device's lifetime: closing the fd removes /dev/<name>.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import select
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from .device import CuseDevice
from .handshake import (
    CHANNEL_GONE,
    CUSE_PATH,
    CuseOptions,
    Handshake,
    HandshakeError,
    answer_init,
    log_device_up,
    open_channel,
    probe_after_reply,
)
from .protocol import (
    MAX_REPLY_ERRNO,
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
    WireStruct,
    WriteIn,
    WriteOut,
    encode_error,
    encode_notify,
    encode_reply,
    opcode_name,
    parse_request,
)

log = logging.getLogger(__name__)

MAX_IDLE_WORKERS = 8
"""Request workers kept waiting for work; more are started while requests block."""

_Handler = Callable[[Request], Awaitable[bytes]]
_Job = tuple[_Handler, Request, trio.CancelScope]

_OUT_HEADER = OutHeader.LAYOUT  # the hot path packs reply headers directly
_IN_HEADER = InHeader.LAYOUT
_HEADER_SIZE = InHeader.SIZE


def _reply_layout(body: type[WireStruct]) -> struct.Struct:
    """The out header and ``body`` as one precompiled struct (both are "=" formats)."""
    return struct.Struct(_OUT_HEADER.format + body.LAYOUT.format.lstrip("="))


_OPEN_IN, _OPEN_END = OpenIn.LAYOUT, _HEADER_SIZE + OpenIn.SIZE
_RELEASE_IN, _RELEASE_END = ReleaseIn.LAYOUT, _HEADER_SIZE + ReleaseIn.SIZE
_POLL_IN, _POLL_END = PollIn.LAYOUT, _HEADER_SIZE + PollIn.SIZE
_READ_IN, _READ_END = ReadIn.LAYOUT, _HEADER_SIZE + ReadIn.SIZE
_WRITE_IN, _WRITE_END = WriteIn.LAYOUT, _HEADER_SIZE + WriteIn.SIZE
_INTERRUPT_END = _HEADER_SIZE + InterruptIn.SIZE
_OPEN_REPLY = _reply_layout(OpenOut)
_POLL_REPLY = _reply_layout(PollOut)
_WRITE_REPLY = _reply_layout(WriteOut)

_READABLE = select.POLLIN | select.POLLHUP | select.POLLERR
_WRITABLE = select.POLLOUT | select.POLLHUP | select.POLLERR


class CuseSession:
    """Serves ``device`` on the channel ``fd``. The session does not own ``fd``:
    whoever opened it closes it (see :func:`serve_cuse`)."""

    def __init__(
        self, fd: int, device: CuseDevice, options: CuseOptions, *, handshake: Handshake | None = None
    ) -> None:
        """``handshake``: the channel has had its CUSE_INIT already (:func:`.handshake.handshake_blocking`)."""
        self.fd = fd
        self._handshaken = handshake
        self.device = device
        self.options = options
        self.kernel_version: tuple[int, int] | None = None
        """(major, minor) the kernel offered in CUSE_INIT."""
        self.protocol_minor: int | None = None
        """The minor version we replied with."""
        self._buffer = bytearray(options.read_buffer_size)
        self._write_lock = trio.Lock()
        self._inflight: dict[int, trio.CancelScope] = {}
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
        # The data thread -> trio hand-over: messages (or the end of the channel) in
        # arrival order. ``_handed`` is written by the data thread only, ``_settled``
        # by trio only; while they differ, a handed request is still being served.
        self._inbox: collections.deque[bytes | _ChannelEnd] = collections.deque()
        self._handed = 0
        self._settled = 0
        self._parked: trio.lowlevel.Task | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: threading.Thread | None = None
        self._stop_r = self._stop_w = -1
        self._fast: dict[int, Callable[[int, int], bytes | None]] = {
            Opcode.OPEN: self._fast_open,
            Opcode.READ: self._fast_read,
            Opcode.WRITE: self._fast_write,
            Opcode.POLL: self._fast_poll,
            Opcode.RELEASE: self._fast_release,
            Opcode.INTERRUPT: self._fast_interrupt,
        }

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Handshake, then serve until DESTROY, the peer closing the channel, or
        cancellation. ``task_status.started(self)`` fires once the device exists.
        Raises :class:`CuseProtocolError` if the handshake fails."""
        os.set_blocking(self.fd, False)
        destroy_request: Request | None = None
        try:
            handshake = self._handshaken or await self._handshake()
            self.kernel_version, self.protocol_minor = handshake.kernel_version, handshake.protocol_minor
            self._pending = handshake.pending
            task_status.started(self)
            async with trio.open_nursery() as nursery:
                self._start_data_thread()
                destroy_request = await self._serve(nursery)
                nursery.cancel_scope.cancel()  # requests in flight die with the channel
        finally:
            with trio.CancelScope(shield=True):
                await self._stop_data_thread()
                try:
                    await self.device.destroy()
                except Exception:
                    log.exception("device %r: destroy failed", self.options.name)
        if destroy_request is not None:
            await self._send(encode_reply(destroy_request.unique))

    async def notify_poll(self, kh: int) -> None:
        """Wake poll()/select() callers sleeping on the file with kernel handle ``kh``."""
        self.notify_poll_now(kh)

    def notify_poll_now(self, kh: int) -> None:
        """:meth:`notify_poll` from any thread (the kernel takes it inside write())."""
        self._write_blocking(encode_notify(NotifyCode.POLL, NotifyPollWakeupOut(kh)))

    def _start_data_thread(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._data_thread, name="cuse-data", daemon=True)
        self._thread.start()

    async def _stop_data_thread(self) -> None:
        """Wake the data thread out of poll() and wait for it (it finishes the request in
        hand, at most a short command), so nothing touches the fd once we return."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        os.write(self._stop_w, b"\0")
        await trio.to_thread.run_sync(thread.join)
        os.close(self._stop_r)
        os.close(self._stop_w)
        self._stop_r = self._stop_w = -1

    async def _handshake(self) -> Handshake:
        """CUSE_INIT on trio, for a channel that has not had it (see :mod:`.handshake`)."""
        try:
            reply, kernel_version, minor = answer_init(await self._receive(), self.options)
        except HandshakeError as exc:
            if exc.reply is not None:
                await self._send(exc.reply)
            raise
        await self._send(reply)
        handshake = Handshake(kernel_version, minor, probe_after_reply(self._try_read, self.options))
        log_device_up(self.options, handshake)
        return handshake

    # --- channel I/O --------------------------------------------------------------------

    def _try_read(self) -> bytes | None:
        """One non-blocking read (handshake): a message, b"" at end of channel, None if none yet."""
        n = self._read_into_buffer()
        return None if n is None else bytes(memoryview(self._buffer)[:n])

    def _read_into_buffer(self) -> int | None:
        """One non-blocking read into the reused buffer: its length, 0 at end of
        channel, None if nothing is there (yet)."""
        while True:
            try:
                return os.readv(self.fd, [self._buffer])
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # the request vanished before it was copied out; next
                raise

    async def _receive(self) -> bytes | None:
        """The next message during the handshake, or None once the peer has gone."""
        while True:
            await trio.lowlevel.wait_readable(self.fd)
            try:
                message = self._try_read()
            except OSError as exc:
                if exc.errno in CHANNEL_GONE:
                    log.info("device %r: channel closed (%s)", self.options.name, exc)
                    return None
                raise
            if message is not None:
                return message or None

    async def _send(self, message: bytes) -> None:
        """Write one whole message from trio. Replies to requests the kernel no longer
        waits for (ENOENT) are dropped; if the channel is gone, the session ends.

        /dev/cuse consumes a reply inside write() and never blocks, so the message is
        written at once unless an earlier one is still waiting for the fd to become
        writable (only a socket peer does that); the lock keeps such waiters, and
        everything after them, in order."""
        if not self._write_lock.locked() and self._write_once(message):
            return
        async with self._write_lock:
            while not self._write_once(message):
                await trio.lowlevel.wait_writable(self.fd)

    def _write_blocking(self, message: bytes) -> None:
        """Write one whole message from any thread, waiting in poll() while a socket
        peer's buffer is full (/dev/cuse never is); gives up once the session stops."""
        while not self._write_once(message):
            waiter = select.poll()
            waiter.register(self.fd, _WRITABLE)
            if self._stop_r >= 0:
                waiter.register(self._stop_r, select.POLLIN)
            if any(fd != self.fd for fd, _ in waiter.poll()):
                return

    def _write_once(self, message: bytes) -> bool:
        """Try to write ``message`` whole; False if the fd is not writable yet."""
        while True:
            try:
                written = os.write(self.fd, message)
            except BlockingIOError:
                return False
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in CHANNEL_GONE:
                    log.info("device %r: channel closed while replying (%s)", self.options.name, exc)
                    self._hand_over(_ChannelEnd())
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

    # --- the data thread ----------------------------------------------------------------

    def _data_thread(self) -> None:
        try:
            self._read_channel()
        except BaseException as exc:
            log.exception("device %r: the data thread failed", self.options.name)
            self._hand_over(_ChannelEnd(exc))

    def _read_channel(self) -> None:
        """Sleep in poll() on the channel and the stop pipe; serve each request."""
        fd = self.fd
        waiter = select.poll()
        waiter.register(fd, _READABLE)
        waiter.register(self._stop_r, select.POLLIN)
        pending, self._pending = self._pending, None
        if pending is not None:
            self._buffer[: len(pending)] = pending
            if not self._serve_message(len(pending)):
                return
        buffers = [self._buffer]
        readv = os.readv
        while True:
            ready = waiter.poll()
            if len(ready) != 1 or ready[0][0] != fd:
                if any(ready_fd == self._stop_r for ready_fd, _ in ready):
                    return
            try:
                n = readv(fd, buffers)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # the request vanished before it was copied out; next
                if exc.errno not in CHANNEL_GONE:
                    raise
                log.info("device %r: channel closed (%s)", self.options.name, exc)
                self._hand_over(_ChannelEnd())
                return
            if not self._serve_message(n):
                return

    def _serve_message(self, n: int) -> bool:
        """Serve the ``n``-byte message in the buffer here if the device can finish it
        now and nothing handed to trio is unanswered; else hand it to trio. False at
        the end of the channel."""
        if n == 0:
            self._hand_over(_ChannelEnd())
            return False
        buffer = self._buffer
        if n >= _HEADER_SIZE and self._handed == self._settled:
            length, opcode, unique, _nodeid, _uid, _gid, _pid, extlen = _IN_HEADER.unpack_from(buffer)
            if length == n and not extlen and unique and (serve := self._fast.get(opcode)) is not None:
                reply = serve(unique, n)
                if reply is not None:
                    if reply:
                        try:  # the usual case first: /dev/cuse takes a reply whole, at once
                            written = os.write(self.fd, reply)
                        except OSError:
                            self._write_blocking(reply)  # waits, retries or reports, as the error asks
                        else:
                            if written != len(reply):
                                raise CuseProtocolError(f"short write of a reply: {written} of {len(reply)} bytes")
                    return True
        self._hand_over(bytes(memoryview(buffer)[:n]))
        return True

    def _hand_over(self, item: bytes | _ChannelEnd) -> None:
        """Queue a message (or the end of the channel) for trio and wake it (any thread)."""
        if not isinstance(item, _ChannelEnd):
            self._handed += 1
        self._inbox.append(item)
        token = self._token
        if token is None:
            return
        try:
            token.run_sync_soon(self._wake_dispatcher)
        except trio.RunFinishedError:
            pass

    # Fast handlers: (unique, message length) -> the reply, b"" for no reply, or None
    # to hand the request to trio. Lengths other than the struct's go to trio, whose
    # parser answers them with the precise error.

    def _fast_open(self, unique: int, n: int) -> bytes | None:
        if n != _OPEN_END:
            return None
        flags, _open_flags = _OPEN_IN.unpack_from(self._buffer, _HEADER_SIZE)
        try:
            fh = self.device.open_now(flags)
            if fh is None:
                return None
            _check_fh(fh)
        except Exception as exc:
            return self._error_reply(unique, Opcode.OPEN, exc)
        return _OPEN_REPLY.pack(_OPEN_REPLY.size, 0, unique, fh, 0, 0)

    def _fast_release(self, unique: int, n: int) -> bytes | None:
        if n != _RELEASE_END:
            return None
        fh, flags, _release_flags, _lock_owner = _RELEASE_IN.unpack_from(self._buffer, _HEADER_SIZE)
        try:
            if not self.device.release_now(fh, flags):
                return None
        except Exception as exc:
            return self._error_reply(unique, Opcode.RELEASE, exc)
        return _OUT_HEADER.pack(_OUT_HEADER.size, 0, unique)

    def _fast_poll(self, unique: int, n: int) -> bytes | None:
        if n != _POLL_END:
            return None
        fh, kh, flags, events = _POLL_IN.unpack_from(self._buffer, _HEADER_SIZE)
        try:
            revents = self.device.poll_now(fh, kh, PollFlags(flags), events, self.notify_poll_now)
        except Exception as exc:
            return self._error_reply(unique, Opcode.POLL, exc)
        if revents is None:
            return None
        return _POLL_REPLY.pack(_POLL_REPLY.size, 0, unique, revents)

    def _fast_read(self, unique: int, n: int) -> bytes | None:
        if n != _READ_END:
            return None
        fh, _offset, size, _read_flags, _lock_owner, flags = _READ_IN.unpack_from(self._buffer, _HEADER_SIZE)
        try:
            data = self.device.read_now(fh, size, bool(flags & os.O_NONBLOCK))
            if data is None:
                return None
            if len(data) > size:
                raise _DeviceBug(f"read returned {len(data)} bytes for a {size}-byte request")
        except Exception as exc:
            return self._error_reply(unique, Opcode.READ, exc)
        return _OUT_HEADER.pack(_OUT_HEADER.size + len(data), 0, unique) + data

    def _fast_write(self, unique: int, n: int) -> bytes | None:
        if n < _WRITE_END:
            return None
        fh, _offset, size, _write_flags, _lock_owner, flags = _WRITE_IN.unpack_from(self._buffer, _HEADER_SIZE)
        if size != n - _WRITE_END:
            return None
        data = bytes(memoryview(self._buffer)[_WRITE_END:n])
        try:
            taken = self.device.write_now(fh, data, bool(flags & os.O_NONBLOCK))
            if taken is None:
                return None
            if not isinstance(taken, int) or not 0 <= taken <= size:
                raise _DeviceBug(f"write returned {taken!r} for {size} bytes")
        except Exception as exc:
            return self._error_reply(unique, Opcode.WRITE, exc)
        return _WRITE_REPLY.pack(_WRITE_REPLY.size, 0, unique, taken)

    def _fast_interrupt(self, unique: int, n: int) -> bytes | None:
        """Nothing handed to trio is unanswered, so the target was answered already
        (the kernel only interrupts requests we have read): nothing to do, no reply."""
        return b"" if n == _INTERRUPT_END else None

    def _error_reply(self, unique: int, opcode: int, exc: Exception) -> bytes:
        """The error reply for a handler that raised ``exc``: its errno for an OSError
        the kernel accepts, else EIO (and a log line: that is a device bug)."""
        name = self.options.name
        if isinstance(exc, OSError):
            code = exc.errno
            if code is not None and 0 < code <= MAX_REPLY_ERRNO:
                return encode_error(unique, code)
            log.warning("device %r: %s failed with errno %r, replying EIO: %s", name, opcode_name(opcode), code, exc)
        else:
            log.error("device %r: %s failed, replying EIO", name, opcode_name(opcode), exc_info=exc)
        return encode_error(unique, errno.EIO)

    # --- trio: the requests the data thread handed over ------------------------------

    def _wake_dispatcher(self) -> None:
        task, self._parked = self._parked, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def _next_handed(self) -> bytes | _ChannelEnd:
        """The next message from the data thread. Checkpoints every time, so each
        request's task takes its first step before the next request is dispatched
        (trio runs a scheduling batch in random order) and requests start in order."""
        await trio.lowlevel.checkpoint()
        while not self._inbox:

            def abort(_: object) -> trio.lowlevel.Abort:
                self._parked = None
                return trio.lowlevel.Abort.SUCCEEDED

            self._parked = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(abort)
        return self._inbox.popleft()

    async def _serve(self, nursery: trio.Nursery) -> Request | None:
        """Dispatch the handed-over requests; returns the DESTROY request if one ended it."""
        while True:
            message = await self._next_handed()
            if isinstance(message, _ChannelEnd):
                if message.error is not None:
                    raise CuseProtocolError(f"device {self.options.name!r}: serving failed") from message.error
                return None
            try:
                request = parse_request(message)
            except MalformedRequest as exc:
                self._settled += 1
                log.warning("device %r: malformed request: %s", self.options.name, exc)
                if exc.unique:
                    await self._send(encode_error(exc.unique, exc.errno))
                continue
            if request.unique == 0:
                self._settled += 1
                log.warning("device %r: dropped a %s with request id 0", self.options.name, opcode_name(request.opcode))
                continue  # the notification id: a reply with it would be taken for a notification
            opcode = request.opcode
            handler = self._handlers.get(opcode)  # type: ignore[call-overload]
            if handler is not None:
                scope = trio.CancelScope()
                self._inflight[request.unique] = scope
                self._dispatch(nursery, (handler, request, scope))
                continue
            self._settled += 1
            if opcode == Opcode.INTERRUPT:
                assert isinstance(request.body, InterruptIn)
                self._interrupt(request.body.unique)
            elif opcode == Opcode.DESTROY:
                return request
            elif opcode in (Opcode.FORGET, Opcode.BATCH_FORGET):
                # fuse.h: no reply (the kernel would refuse one for an id it never waits on).
                log.debug("device %r: %s ignored", self.options.name, opcode_name(request.header.opcode))
            elif opcode == Opcode.CUSE_INIT:
                log.warning("device %r: CUSE_INIT after the handshake", self.options.name)
                await self._send(encode_error(request.unique, errno.EPROTO))
            else:
                log.debug("device %r: %s not implemented", self.options.name, opcode_name(request.header.opcode))
                await self._send(encode_error(request.unique, errno.ENOSYS))

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
        reply = await self._reply(handler, request, scope)
        self._settled += 1  # the device is done with it: the data thread may serve again
        await self._send(reply)

    async def _reply(self, handler: _Handler, request: Request, scope: trio.CancelScope) -> bytes:
        """Run the handler (inside ``scope``, which INTERRUPT cancels) and encode its reply."""
        try:
            with scope:
                body = await handler(request)
            if scope.cancelled_caught:
                return encode_error(request.unique, errno.EINTR)
            return _OUT_HEADER.pack(_OUT_HEADER.size + len(body), 0, request.unique) + body
        except Exception as exc:
            return self._error_reply(request.unique, request.header.opcode, exc)
        finally:
            self._inflight.pop(request.unique, None)

    # --- per-opcode handlers: decoded request -> reply body (raise OSError to fail) ---

    async def _open(self, request: Request) -> bytes:
        assert isinstance(request.body, OpenIn)
        fh = await self.device.open(request.body.flags)
        _check_fh(fh)
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
        revents = await self.device.poll(body.fh, body.kh, PollFlags(body.flags), body.events, self.notify_poll_now)
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


@dataclass(frozen=True)
class _ChannelEnd:
    """Handed to trio when the channel ends; ``error`` if the data thread failed."""

    error: BaseException | None = None


class _DeviceBug(Exception):
    """A device broke the interface contract; the caller gets EIO."""


def _check_fh(fh: object) -> None:
    if not isinstance(fh, int) or not 0 <= fh < (1 << 64):
        raise _DeviceBug(f"open returned file handle {fh!r}, not an int in 0..2**64-1")


async def serve_cuse(
    device: CuseDevice,
    options: CuseOptions,
    *,
    cuse_path: str = CUSE_PATH,
    opened: tuple[int, Handshake] | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open ``cuse_path``, serve ``device`` as /dev/<options.name> until cancelled or the
    kernel ends the channel, then close it, which removes the device node.
    ``opened``: a channel opened and handshaken already; its opener closes it.
    ``task_status.started(session)`` fires once the node exists."""
    fd, handshake = opened if opened is not None else (open_channel(cuse_path), None)
    try:
        session = CuseSession(fd, device, options, handshake=handshake)
        await session.run(task_status=task_status)
    finally:
        trio.lowlevel.notify_closing(fd)
        if opened is None:
            os.close(fd)
