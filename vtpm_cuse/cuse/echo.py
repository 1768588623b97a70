"""A minimal CUSE device: bytes written come back out of read(), in order.

It exists to exercise and measure the protocol layer on its own: against the
simulated kernel in the unit tests, against the real kernel in the VM tests, and as
the transport floor in benchmarks (a TPM round trip cannot be faster than an echo).
One FIFO is shared by all openers, so a second open can feed a reader blocked on the
first. Reads block while the FIFO is empty (EAGAIN with O_NONBLOCK), poll reports
readiness and notifies sleeping pollers, and three ioctls cover the restricted-mode
transfer directions.

Run ``python -m vtpm_cuse.cuse.echo NAME`` (as root, with /dev/cuse) to create
/dev/NAME in the foreground; it prints ``ready /dev/NAME`` once the node exists and
removes it on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import errno
import logging
import select
import signal
import struct
import sys
from functools import partial

import trio

from ioctl_defs.ioc import io, ior, iowr

from .device import CuseDevice, NotifyPoll, PollWaiters
from .protocol import CuseProtocolError, IoctlFlags, PollFlags
from .session import CUSE_PATH, CuseOptions, serve_cuse

ECHO_IOC_COUNTER = ior("E", 0, 8)
"""Returns a u64 counter that counts the calls of this ioctl (1 on the first call)."""
ECHO_IOC_INCREMENT = iowr("E", 1, 8)
"""Takes a u64 and returns it plus one (checks data in and out of one call)."""
ECHO_IOC_CLEAR = io("E", 2)
"""Drops buffered bytes; ioctl() returns how many (checks the result value path)."""

_U64 = struct.Struct("=Q")

DEFAULT_CAPACITY = 1 << 20


class EchoDevice(CuseDevice):
    """The FIFO device. Its ``*_now`` methods serve everything that need not wait, on
    the session's data thread; only blocking reads of an empty FIFO and blocking
    writes to a full one wait, on trio. The two never overlap (the session offers a
    request to ``*_now`` only while none is being served on trio) and the device has
    no background tasks, so it needs no lock; and since a waiting read or write is a
    request being served on trio, no trio task waits on ``_changed`` while ``*_now``
    runs."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity {capacity} must be positive")
        self.capacity = capacity
        self._fifo = bytearray()
        self._changed: trio.Event | None = None
        """What blocked readers and writers wait on; made by the first of them."""
        self._handles: set[int] = set()
        self._next_fh = 1
        self._counter = 0
        self._poll_waiters = PollWaiters()
        self.destroyed = False

    # --- helpers ------------------------------------------------------------------------

    def _check(self, fh: int) -> None:
        if fh not in self._handles:
            raise OSError(errno.EBADF, f"file handle {fh} is not open")

    def _announce_change(self) -> None:
        """Wake blocked readers/writers and notify pollers. Costs nothing when nobody
        waits -- the usual case, and always the case on the data thread."""
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()
        self._poll_waiters.wake()

    async def _wait_for_change(self) -> None:
        if self._changed is None:
            self._changed = trio.Event()
        await self._changed.wait()

    # --- CuseDevice: what never waits ------------------------------------------------------

    def open_now(self, flags: int) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles.add(fh)
        return fh

    def release_now(self, fh: int, flags: int) -> bool:
        self._handles.discard(fh)
        return True

    def read_now(self, fh: int, size: int, nonblock: bool) -> bytes | None:
        self._check(fh)
        if not self._fifo:
            if nonblock:
                raise OSError(errno.EAGAIN, "echo FIFO is empty")
            return None
        data = bytes(self._fifo[:size])
        del self._fifo[:size]
        self._announce_change()
        return data

    def write_now(self, fh: int, data: bytes, nonblock: bool) -> int | None:
        self._check(fh)
        if len(self._fifo) >= self.capacity:
            if nonblock:
                raise OSError(errno.EAGAIN, f"echo FIFO is full ({self.capacity} bytes)")
            return None
        taken = min(len(data), self.capacity - len(self._fifo))
        self._fifo += data[:taken]
        self._announce_change()
        return taken

    def poll_now(self, fh: int, kh: int, flags: PollFlags, events: int, notify_poll: NotifyPoll) -> int:
        self._check(fh)
        revents = 0
        if self._fifo:
            revents |= select.POLLIN | select.POLLRDNORM
        if len(self._fifo) < self.capacity:
            revents |= select.POLLOUT | select.POLLWRNORM
        if flags & PollFlags.SCHEDULE_NOTIFY:
            self._poll_waiters.add(kh, notify_poll)
        return revents

    # --- CuseDevice: the same on trio, where reads and writes may wait ----------------------

    async def open(self, flags: int) -> int:
        return self.open_now(flags)

    async def release(self, fh: int, flags: int) -> None:
        self.release_now(fh, flags)

    async def read(self, fh: int, size: int, nonblock: bool) -> bytes:
        while (data := self.read_now(fh, size, nonblock)) is None:
            await self._wait_for_change()
        return data

    async def write(self, fh: int, data: bytes, nonblock: bool) -> int:
        while (taken := self.write_now(fh, data, nonblock)) is None:
            await self._wait_for_change()
        return taken

    async def ioctl(
        self, fh: int, cmd: int, arg: int, in_data: bytes, out_size: int, flags: IoctlFlags
    ) -> tuple[int, bytes]:
        self._check(fh)
        if cmd == ECHO_IOC_COUNTER:
            if out_size < _U64.size:
                raise OSError(errno.EINVAL, f"ECHO_IOC_COUNTER needs 8 output bytes, got room for {out_size}")
            self._counter += 1
            return 0, _U64.pack(self._counter)
        if cmd == ECHO_IOC_INCREMENT:
            if len(in_data) != _U64.size or out_size < _U64.size:
                raise OSError(
                    errno.EINVAL,
                    f"ECHO_IOC_INCREMENT needs 8 bytes in and out, got {len(in_data)} in, {out_size} out",
                )
            (value,) = _U64.unpack(in_data)
            return 0, _U64.pack((value + 1) & 0xFFFFFFFFFFFFFFFF)
        if cmd == ECHO_IOC_CLEAR:
            dropped = len(self._fifo)
            self._fifo.clear()
            self._announce_change()
            return dropped, b""
        raise OSError(errno.ENOTTY, f"echo device has no ioctl {cmd:#010x}")

    async def poll(self, fh: int, kh: int, flags: PollFlags, events: int, notify_poll: NotifyPoll) -> int:
        return self.poll_now(fh, kh, flags, events, notify_poll)

    async def destroy(self) -> None:
        self.destroyed = True


# --- runner --------------------------------------------------------------------------------


async def run_echo(options: CuseOptions, cuse_path: str = CUSE_PATH) -> None:
    """Serve an EchoDevice until SIGTERM/SIGINT or until the kernel ends the channel."""
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

        async def serve(task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED) -> None:
            await serve_cuse(EchoDevice(), options, cuse_path=cuse_path, task_status=task_status)
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_on_signal)
        await nursery.start(serve)
        print(f"ready /dev/{options.name}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vtpm_cuse.cuse.echo",
        description="Create /dev/NAME, an echo character device served over CUSE (foreground).",
    )
    parser.add_argument("name", help="device name: the node is /dev/NAME")
    parser.add_argument("--major", type=int, default=0, help="device major (0 = dynamic)")
    parser.add_argument("--minor", type=int, default=0, help="device minor")
    parser.add_argument("--max-read", type=int, default=CuseOptions.max_read)
    parser.add_argument("--max-write", type=int, default=CuseOptions.max_write)
    parser.add_argument("--cuse-path", default=CUSE_PATH, help="the CUSE channel device")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        options = CuseOptions(
            args.name,
            dev_major=args.major,
            dev_minor=args.minor,
            max_read=args.max_read,
            max_write=args.max_write,
        )
        trio.run(partial(run_echo, options, args.cuse_path))
    except Exception as exc:
        cause = _sole_cause(exc)
        if not isinstance(cause, (ValueError, OSError, CuseProtocolError)):
            raise
        print(f"echo: {cause}", file=sys.stderr)
        return 1
    return 0


def _sole_cause(exc: BaseException) -> BaseException:
    """Unwrap the exception groups trio nurseries put around a single failure."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    sys.exit(main())
