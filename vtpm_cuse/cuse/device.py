"""The interface between the CUSE session (protocol) and a device (semantics).

A device is everything behind /dev/<name>: it never sees protocol messages, only
calls with decoded arguments. To fail a call it raises ``OSError(errno, message)``;
the session turns that into the errno the caller of read()/write()/ioctl() sees.
Any other exception is a device bug: the session logs it and answers EIO, and keeps
serving.

Every method is async and runs in its own task, so a method may block (a read
waiting for data) while other requests, ioctls in particular, are being served --
unless the device says beforehand that the call returns at once
(:attr:`CuseDevice.INSTANT_CALLS`, :meth:`CuseDevice.read_returns_at_once`,
:meth:`CuseDevice.write_returns_at_once`): then the session runs it in the task
that reads the channel, which saves a task switch per request. A
blocked call is cancelled (trio cancellation) when the kernel interrupts it because
the caller got a signal; the caller then sees EINTR. Devices must therefore be safe
against concurrent calls, and should leave their state consistent when cancelled.
"""

from __future__ import annotations

import abc
import errno
from collections.abc import Awaitable, Callable

import trio

from .protocol import IoctlFlags, PollFlags

NotifyPoll = Callable[[int], Awaitable[None]]
"""``await notify_poll(kh)``: tell the kernel the file with kernel handle ``kh`` may
have become ready, so a poll()/select() sleeping on it polls again."""


class CuseDevice(abc.ABC):
    """What a CUSE session serves. ``fh`` is the value :meth:`open` returned; the
    kernel hands it back with every request on that open file."""

    INSTANT_CALLS: frozenset[str] = frozenset()
    """Names of the methods (``open``, ``release``, ``poll``, ``flush``, ``fsync``) that
    never wait for anything on this device; the session runs them without a task."""

    def read_returns_at_once(self, fh: int, nonblock: bool) -> bool:
        """Whether :meth:`read` would return (or fail) now without waiting. A promise:
        while it runs, the session reads no further requests. Default: no."""
        return False

    def write_returns_at_once(self, fh: int, data: bytes, nonblock: bool) -> bool:
        """Whether :meth:`write` of ``data`` would return (or fail) now, without
        waiting for anything but brief work. A promise, as for reads. Default: no."""
        return False

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
        ``kh`` and ``await notify_poll(kh)`` once readiness changes (once is enough:
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
    changes. Waking is shielded: the state already changed, and a cancelled
    notification would leave a poller asleep for good."""

    def __init__(self) -> None:
        self._waiters: dict[int, NotifyPoll] = {}

    def __bool__(self) -> bool:
        return bool(self._waiters)

    def add(self, kh: int, notify_poll: NotifyPoll) -> None:
        self._waiters[kh] = notify_poll

    def clear(self) -> None:
        self._waiters.clear()

    async def wake(self) -> None:
        """Notify every waiter once; the kernel polls again and re-arms if still waiting."""
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, {}
        with trio.CancelScope(shield=True):
            for kh, notify in waiters.items():
                await notify(kh)
