"""``--cancel-fifo PATH``: a file whose writes cancel the running TPM command.

QEMU's passthrough backend cancels a command by writing ``-`` to its
``cancel-path`` (for a hardware TPM, sysfs's ``device/cancel``); libvirt opens
that path itself and passes the fd.  A CUSE device has no sysfs cancel file, so
without this option the best a caller can do is ``cancel-path=/dev/null`` and
cancels are lost.  The daemon creates a FIFO at PATH (mode 0600) before the
device appears, and every write to it does what PTM_CANCEL_TPM_CMD does: a
cancellable command running at that moment ends with TPM_RC_CANCELED; with
nothing running the write has no effect (like the ioctl).  The FIFO is removed
when the daemon ends.

The daemon holds the FIFO open read-write, so writers never block in open() and
the FIFO never reports end-of-file between writers.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

__all__ = ["CancelFifo", "CancelFifoError", "serve_with_cancel_fifo"]

log = logging.getLogger(__name__)

FIFO_MODE = 0o600
READ_SIZE = 512


class CancelFifoError(OSError):
    """The FIFO could not be created (the path is taken by something else, ...)."""


@dataclass
class CancelFifo:
    path: str
    fd: int = -1

    def create(self) -> None:
        """Make the FIFO and open it; a stale FIFO of an earlier run is reused."""
        try:
            os.mkfifo(self.path, FIFO_MODE)
        except FileExistsError:
            mode = os.lstat(self.path).st_mode
            if not stat.S_ISFIFO(mode):
                raise CancelFifoError(errno.EEXIST, f"--cancel-fifo {self.path}: exists and is not a FIFO") from None
        except OSError as exc:
            raise CancelFifoError(exc.errno, f"--cancel-fifo {self.path}: {exc.strerror}") from None
        os.chmod(self.path, FIFO_MODE)
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    def remove(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def watch(self, cancel: Callable[[], bool]) -> None:
        """Call ``cancel`` once per write burst, until cancelled."""
        while True:
            await trio.lowlevel.wait_readable(self.fd)
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                continue
            if data:
                running = cancel()
                log.info("cancel FIFO: %d byte(s) written, %s", len(data), "command cancelled" if running else "idle")


async def serve_with_cancel_fifo(
    fifo: CancelFifo, cancel: Callable[[], bool], serve: Callable[[], Awaitable[None]]
) -> None:
    """Run ``serve`` with the FIFO watched beside it; the watch ends with it."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fifo.watch, cancel)
        await serve()
        nursery.cancel_scope.cancel()
