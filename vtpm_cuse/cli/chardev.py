"""``vtpm-cuse chardev``: TPM commands from a character device (or any message fd).

swtpm's chardev interface reads one TPM command per read() from a file
descriptor and writes the response with one write(): ``-c/--chardev <dev>``
opens a device, ``--fd`` adopts an inherited descriptor (a socketpair works
as well), ``--vtpm-proxy`` gets the descriptor from the kernel
(:mod:`.vtpm_proxy`) once the TPM has booted.  The optional control channel (``--ctrl``) runs beside
it through the socket server with no data listener.

The descriptor is served from a thread with blocking read()s (a character
device need not support poll), running each command with
:meth:`Vtpm.execute_here` like the socket data thread; end of file on the
descriptor ends the daemon.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import trio

from vtpm_cuse.sockets.data_framing import MAX_MESSAGE
from vtpm_cuse.sockets.server import SocketServerConfig, serve

__all__ = ["ChardevConfig", "serve_chardev", "serve_fd_blocking", "MAX_COMMAND"]

log = logging.getLogger(__name__)

MAX_COMMAND = MAX_MESSAGE
"""One read() takes a whole command: the largest message the socket data channel accepts."""

_RETRY = (errno.EINTR, errno.EAGAIN)


@dataclass
class ChardevConfig:
    """Where commands come from, and the control socket beside it."""

    source: Callable[[], tuple[int, str]]
    """Returns ``(fd, description)``; called once the TPM has booted (for --vtpm-proxy the
    kernel sends its first commands as soon as the device exists)."""
    ctrl: SocketServerConfig
    """``data`` is None: only the control channel (if any) runs in the socket server."""


def serve_fd_blocking(vtpm, fd: int) -> None:  # type: ignore[no-untyped-def]
    """Read command, execute, write response -- until end of file or an I/O error."""
    while True:
        try:
            command = os.read(fd, MAX_COMMAND)
        except OSError as exc:
            if exc.errno in _RETRY:
                continue
            log.warning("chardev: read failed: %s", exc.strerror)
            return
        if not command:
            log.info("chardev: end of file; exiting")
            return
        response = vtpm.execute_here(command)
        try:
            os.write(fd, response)
        except OSError as exc:
            log.warning("chardev: write of %d response bytes failed: %s", len(response), exc.strerror)
            return


async def serve_chardev(vtpm, config: ChardevConfig, *, ready: Callable[[], None] | None = None) -> None:  # type: ignore[no-untyped-def]
    """Boot the TPM (via the socket server), serve the fd until it closes or a signal arrives."""
    booted = trio.Event()
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            await serve(vtpm, config.ctrl, ready=booted.set)
            nursery.cancel_scope.cancel()

        nursery.start_soon(server)
        await booted.wait()
        fd, description = await trio.to_thread.run_sync(config.source)
        log.info("serving chardev %s", description)
        if ready is not None:
            ready()
        try:
            await trio.to_thread.run_sync(functools.partial(serve_fd_blocking, vtpm, fd), abandon_on_cancel=True)
        finally:
            nursery.cancel_scope.cancel()
