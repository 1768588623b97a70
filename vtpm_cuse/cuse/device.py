"""The interface between the CUSE session (protocol) and a device (semantics).

A device is everything behind /dev/<name>: it never sees protocol messages, only
calls with decoded arguments. To fail a call it raises ``OSError(errno, message)``;
the session turns that into the errno the caller of read()/write()/ioctl() sees.
Any other exception is a device bug: the session logs it and answers EIO, and keeps
serving.

Two ways in. The session's data thread, which reads the channel, first offers a
request to the device's synchronous ``*_now`` method (:meth:`CuseDevice.open_now`,
``read_now``, ``write_now``, ``poll_now``, ``release_now``): a device that can
finish the call without waiting does it there and then, which saves every hand-off
of a round trip; one that cannot returns None *without having changed anything*,
and the request goes to trio. The data thread offers a request only while no
earlier request is being served on trio, so ``*_now`` never runs concurrently with
a device's async methods -- only with the device's own background trio tasks, whose
state changes it must guard with a ``threading.Lock``.

The async methods run on trio, one task per request, so a method may block (a read
waiting for data) while other requests, ioctls in particular, are being served. A
blocked call is cancelled (trio cancellation) when the kernel interrupts it because
the caller got a signal; the caller then sees EINTR. Devices must therefore be safe
against concurrent calls, and should leave their state consistent when cancelled.
"""

from __future__ import annotations

import abc
import errno
import threading
from collections.abc import Callable

from .protocol import IoctlFlags, PollFlags

NotifyPoll = Callable[[int], None]
"""``notify_poll(kh)``: tell the kernel the file with kernel handle ``kh`` may have
become ready, so a poll()/select() sleeping on it polls again. Synchronous and
callable from any thread: /dev/cuse takes a notification inside write()."""


class CuseDevice(abc.ABC):
    """What a CUSE session serves. ``fh`` is the value :meth:`open` returned; the
    kernel hands it back with every request on that open file."""

    # --- the data thread's synchronous fast path (see the module docstring) ------------

    def open_now(self, flags: int) -> int | None:
        """:meth:`open` without waiting, or None to have it served on trio. Default: None."""
        return None

    def release_now(self, fh: int, flags: int) -> bool:
        """:meth:`release` without waiting; False to have it served on trio. Default: False."""
        return False

    def poll_now(self, fh: int, kh: int, flags: PollFlags, events: int, notify_poll: NotifyPoll) -> int | None:
        """:meth:`poll` without waiting, or None to have it served on trio. Default: None."""
        return None

    def read_now(self, fh: int, size: int, nonblock: bool) -> bytes | None:
        """:meth:`read` if it needs no waiting (data ready, EOF, or EAGAIN), else None. Default: None."""
        return None

    def write_now(self, fh: int, data: bytes, nonblock: bool) -> int | None:
        """:meth:`write` if it needs nothing but brief work, else None. Default: None."""
        return None

    @abc.abstractmethod
    async def open(self, flags: int) -> int:
        """A process opened the device with ``flags`` (O_RDWR, O_NONBLOCK, ...).
        Returns a file handle (0 <= fh < 2**64) for the later calls on this file."""

    @abc.abstractmethod
    async def read(self, fh: int, size: int, nonblock: bool) -> bytes:
        """Return at most ``size`` bytes. Fewer bytes (b"" = end of file) end the
        caller's read() there. May wait for data unless ``nonblock`` (then raise
        EAGAIN); a wait is cancelled when the caller is interrupted."""

    @abc.abstractmethod
    async def write(self, fh: int, data: bytes, nonblock: bool) -> int:
        """Consume ``data`` (never empty: the kernel does not forward 0-byte writes)
        and return how many bytes were taken, at most ``len(data)``."""

    async def ioctl(
        self, fh: int, cmd: int, arg: int, in_data: bytes, out_size: int, flags: IoctlFlags
    ) -> tuple[int, bytes]:
        """Handle ioctl ``cmd``. The kernel runs CUSE ioctls in restricted mode: it
        copied ``_IOC_SIZE(cmd)`` bytes from the caller's ``arg`` pointer into
        ``in_data`` if ``_IOC_DIR(cmd)`` has WRITE, and accepts up to ``out_size``
        bytes back (copied to ``arg``) if it has READ. ``arg`` is the raw argument,
        meaningful by itself for ``_IO`` numbers. ``flags`` says whether the caller is
        32-bit (COMPAT/IS_32BIT). Returns (the value ioctl() returns, output bytes)."""
        raise OSError(errno.ENOTTY, f"ioctl {cmd:#010x} is not supported by this device")

    async def poll(self, fh: int, kh: int, flags: PollFlags, events: int, notify_poll: NotifyPoll) -> int:
        """Return the ready poll events (select.POLLIN, POLLOUT, ...). If ``flags``
        has SCHEDULE_NOTIFY and the device is not ready for ``events``, remember
        ``kh`` and call ``notify_poll(kh)`` once readiness changes (once is enough:
        the kernel polls again and re-arms). The default, ENOSYS, makes the kernel
        stop asking and report the device as always readable and writable."""
        raise OSError(errno.ENOSYS, "poll is not supported by this device")

    async def flush(self, fh: int) -> None:
        """close() of one file descriptor (CUSE kernels do not send this today)."""
        raise OSError(errno.ENOSYS, "flush is not supported by this device")

    async def fsync(self, fh: int, datasync: bool) -> None:
        """fsync()/fdatasync() (CUSE kernels do not send this today)."""
        raise OSError(errno.ENOSYS, "fsync is not supported by this device")

    async def release(self, fh: int, flags: int) -> None:  # noqa: B027 (an optional hook)
        """The last reference to the open file went away. Errors are not seen by anyone."""

    async def destroy(self) -> None:  # noqa: B027 (an optional hook)
        """The session is ending (channel closed, DESTROY, or cancelled). Runs shielded
        from cancellation, so it must finish promptly."""


class PollWaiters:
    """The poll()ers sleeping on a device, remembered by kernel handle until readiness
    changes. Thread-safe: the data thread adds waiters while a trio task may wake them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, NotifyPoll] = {}

    def __bool__(self) -> bool:
        return bool(self._waiters)

    def add(self, kh: int, notify_poll: NotifyPoll) -> None:
        with self._lock:
            self._waiters[kh] = notify_poll

    def clear(self) -> None:
        with self._lock:
            self._waiters.clear()

    def wake(self) -> None:
        """Notify every waiter once; the kernel polls again and re-arms if still waiting."""
        if not self._waiters:
            return
        with self._lock:
            waiters, self._waiters = self._waiters, {}
        for kh, notify in waiters.items():
            notify(kh)
