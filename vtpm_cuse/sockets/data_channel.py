"""The TPM data channel: commands in, responses out, one client at a time.

A client is served until it closes (persistent connection), or -- with
``disconnect`` -- for exactly one command, so both client styles work: the
swtpm TCTI and QEMU keep one connection, ``-p`` style clients reconnect for
every command.  Like swtpm, only one data connection exists at a time; the
listener is not accepted on while a client (or a descriptor passed with
CMD_SET_DATAFD) is being served.

Commands are executed by :meth:`Vtpm.execute`, which runs them on the
Vtpm's worker thread, so the trio loop -- and with it the control channel --
stays responsive while a command runs.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Protocol

import trio

from vtpm_cuse.tpm.errors import TPM_RC
from vtpm_cuse.tpm.wire import error_response
from vtpm_cuse.vtpm import LocalityPolicy

from .data_framing import (
    COMPLETION_TIMEOUT,
    MAX_MESSAGE,
    DataMessage,
    expected_length,
    frame_response,
    parse_message,
)
from .streams import send_all

__all__ = ["DataChannel", "CommandExecutor", "receive_data_message"]

log = logging.getLogger(__name__)


class CommandExecutor(Protocol):
    """What the data channel needs from a Vtpm."""

    locality: int
    locality_policy: LocalityPolicy

    async def execute(self, command: bytes) -> bytes: ...


async def receive_data_message(sock: trio.socket.SocketType) -> bytes | None:
    """Read one message: one read, completed up to its announced size within a bounded wait.

    Returns None when the client closed the connection before sending anything.
    """
    data = await sock.recv(MAX_MESSAGE)
    if not data:
        return None
    with trio.move_on_after(COMPLETION_TIMEOUT):
        while len(data) < (wanted := expected_length(data)):
            chunk = await sock.recv(wanted - len(data))
            if not chunk:
                break
            data += chunk
    return data


class DataChannel:
    """Serves TPM commands on a listener and/or handed-over connections.

    ``on_client_lost`` is called when a served connection ends (the daemon
    uses it for ``-t/--terminate``).
    """

    def __init__(
        self,
        vtpm: CommandExecutor,
        *,
        disconnect: bool = False,
        on_client_lost: Callable[[], None] | None = None,
    ) -> None:
        self._vtpm = vtpm
        self._disconnect = disconnect
        self._on_client_lost = on_client_lost
        self._nursery: trio.Nursery | None = None
        self._idle = trio.Event()
        self._idle.set()
        self._in_use = False

    @property
    def in_use(self) -> bool:
        """Whether a data connection is being served (CMD_SET_DATAFD is refused then)."""
        return self._in_use

    async def run(
        self,
        listener: trio.socket.SocketType | None = None,
        connected: trio.socket.SocketType | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled.  Connections from :meth:`adopt` are served too."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if connected is not None:
                self._start(connected)
            task_status.started()
            if listener is not None:
                await self._accept_loop(listener)
            else:
                await trio.sleep_forever()

    def adopt(self, sock: socket.socket) -> bool:
        """Serve a connected socket received with CMD_SET_DATAFD; False if one is in use."""
        if self._in_use or self._nursery is None:
            return False
        sock.setblocking(False)
        self._start(trio.socket.from_stdlib_socket(sock))
        return True

    def _start(self, sock: trio.socket.SocketType) -> None:
        assert self._nursery is not None
        self._in_use = True
        self._idle = trio.Event()
        self._nursery.start_soon(self._serve, sock)

    async def _accept_loop(self, listener: trio.socket.SocketType) -> None:
        while True:
            await self._idle.wait()
            sock, _ = await listener.accept()
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._in_use:  # a SET_DATAFD connection arrived meanwhile
                sock.close()
                continue
            self._start(sock)

    async def _serve(self, sock: trio.socket.SocketType) -> None:
        try:
            with sock:
                await self._serve_commands(sock)
        except OSError as exc:
            log.info("data connection lost: %s", exc)
        finally:
            self._in_use = False
            self._idle.set()
        if self._on_client_lost is not None:
            self._on_client_lost()

    async def _serve_commands(self, sock: trio.socket.SocketType) -> None:
        while True:
            data = await receive_data_message(sock)
            if data is None:
                return
            message = parse_message(data)
            if message.session_end:
                return
            response = await self._execute(message)
            await send_all(sock, frame_response(response, message))
            if self._disconnect:
                return

    async def _execute(self, message: DataMessage) -> bytes:
        if message.locality is not None:
            if not self._vtpm.locality_policy.allows(message.locality):
                return error_response(TPM_RC.LOCALITY)
            # swtpm lets the header's locality replace the current one (it is
            # the same variable CMD_SET_LOCALITY sets), so it stays in effect.
            self._vtpm.locality = message.locality
        return await self._vtpm.execute(message.command)
