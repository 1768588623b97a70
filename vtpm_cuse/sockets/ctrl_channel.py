"""The control channel server: ``CMD_*`` requests for one Vtpm, from several clients at once.

Messages are received by :mod:`.ctrl_framing`, decoded with :mod:`ioctl_defs`
and executed by :func:`vtpm_cuse.control.dispatch`; the only command handled
here is CMD_SET_DATAFD, because it is about this transport (it hands a
connected socket to the :class:`~.data_channel.DataChannel`).

The control channel runs in trio tasks, so it answers while a TPM command
executes on the Vtpm's worker thread; operations that need a quiet TPM queue
behind the command inside the Vtpm, not here.

Unlike swtpm, which serves one control connection at a time (an idle one
blocks every other), each connection gets its own task, up to
:data:`MAX_CONTROL_CLIENTS`; the operations still run one at a time in
arrival order (the Vtpm's turn).  While the table is full and another client
waits, a connection idle for ``idle_timeout`` seconds is closed to make room,
as on the data channel.  accept() failing for lack of descriptors or memory
backs off for :data:`ACCEPT_BACKOFF` instead of spinning or ending the daemon.
Every wait has a bound: a message must arrive within ``ctrl_framing``'s
deadlines, a reply be taken within :data:`~.data_channel.SEND_TIMEOUT`.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import trio

from ioctl_defs import (
    MalformedMessage,
    Part,
    PtmCmd,
    PtmResResponse,
    PtmResult,
    by_cmd,
)
from vtpm_cuse import control

from .ctrl_framing import ControlMessage, close_fds, receive_control_message
from .data_channel import DEFAULT_IDLE_TIMEOUT, SEND_TIMEOUT, DataChannel
from .streams import send_all

__all__ = ["ACCEPT_BACKOFF", "MAX_CONTROL_CLIENTS", "ControlChannel"]

log = logging.getLogger(__name__)

MAX_CONTROL_CLIENTS: Final = 16
"""Control connections served at once (QEMU or libvirt hold one; swtpm_ioctl-style
tools connect per command); more wait in the listen queue."""
ACCEPT_BACKOFF: Final = 0.1
"""Seconds to wait before accepting again after accept() failed for lack of resources."""
_RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ROOM_CHECK: Final = 0.1
"""Seconds between looks for an idle connection to close while the table is full."""


@dataclass(eq=False)
class _Client:
    """One control connection: its task's cancel scope and whether it sits between messages."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    idle_since: float | None = None
    """trio time since which the client is between messages; None while one is handled."""


def _result_only(result: int) -> bytes:
    return PtmResResponse(tpm_result=result).pack_socket()


class ControlChannel:
    """Serves control clients for ``vtpm``.

    ``request_exit`` ends the daemon: after CMD_SHUTDOWN (or a fatal error
    reported by the control layer), and -- with ``terminate_on_disconnect``
    (``--ctrl ...,terminate``) -- when the control client goes away.
    """

    def __init__(
        self,
        vtpm: object,
        data_channel: DataChannel | None,
        *,
        request_exit: Callable[[], None],
        terminate_on_disconnect: bool = False,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_clients: int = MAX_CONTROL_CLIENTS,
    ) -> None:
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout {idle_timeout!r} must be a positive number of seconds")
        if max_clients < 1:
            raise ValueError(f"max_clients {max_clients!r} must be at least 1")
        self._vtpm = vtpm
        self._data = data_channel
        self._request_exit = request_exit
        self._terminate_on_disconnect = terminate_on_disconnect
        self._idle_timeout = idle_timeout
        self._max_clients = max_clients
        self._clients: set[_Client] = set()

    async def run(
        self,
        listener: trio.socket.SocketType | None = None,
        connected: trio.socket.SocketType | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``connected`` (``clientfd=``) and every client from ``listener``, each in its task."""
        task_status.started()
        async with trio.open_nursery() as nursery:
            if connected is not None:
                nursery.start_soon(self._serve, connected, self._register())
            if listener is None:
                return
            while True:
                sock = await self._accept(listener)
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await self._make_room()
                nursery.start_soon(self._serve, sock, self._register())

    @staticmethod
    async def _accept(listener: trio.socket.SocketType) -> trio.socket.SocketType:
        """The next connection; resource errors (EMFILE ...) back off, a peer's reset is skipped."""
        logged = False
        while True:
            try:
                sock, _ = await listener.accept()
                return sock
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    log.info("accepting a control connection failed: %s", exc)
                    continue
                if not logged:  # once per burst: a full fd table must not flood the log
                    log.warning("accepting a control connection failed: %s; retrying every %.1f s", exc, ACCEPT_BACKOFF)
                    logged = True
                await trio.sleep(ACCEPT_BACKOFF)

    def _register(self) -> _Client:
        client = _Client()
        self._clients.add(client)
        return client

    async def _make_room(self) -> None:
        """Wait for a free slot; while none is free, close a connection idle for ``idle_timeout``."""
        while len(self._clients) >= self._max_clients:
            now = trio.current_time()
            idle = [c for c in self._clients if c.idle_since is not None and now - c.idle_since >= self._idle_timeout]
            if idle:
                oldest = min(idle, key=lambda c: c.idle_since or now)
                idle_for = now - (oldest.idle_since or now)
                log.info("closing a control connection idle for %.0f s: another client waits", idle_for)
                oldest.scope.cancel()
                self._clients.discard(oldest)
                continue
            await trio.sleep(_ROOM_CHECK)

    async def _serve(self, sock: trio.socket.SocketType, client: _Client) -> None:
        try:
            with client.scope:
                await self._converse(sock, client)
        finally:
            self._clients.discard(client)
            sock.close()
        if self._terminate_on_disconnect:
            log.info("control client went away; terminating (--ctrl ...,terminate)")
            self._request_exit()

    async def _converse(self, sock: trio.socket.SocketType, client: _Client) -> None:
        """Answer messages until the client closes, a reply ends the connection or the daemon."""
        try:
            while True:
                client.idle_since = trio.current_time()
                await trio.lowlevel.wait_readable(sock)
                client.idle_since = None
                message = await receive_control_message(sock)
                if message is None:
                    break
                reply, exit_after, close_after = await self._handle(message)
                with trio.move_on_after(SEND_TIMEOUT) as sending:
                    await send_all(sock, reply)
                if sending.cancelled_caught:
                    log.info("control client took no reply for %.0f s; closing it", SEND_TIMEOUT)
                    close_after = True
                if exit_after:
                    self._request_exit()
                    return
                if close_after:
                    break
        except OSError as exc:
            log.info("control connection lost: %s", exc)

    async def _handle(self, message: ControlMessage) -> tuple[bytes, bool, bool]:
        """Returns (reply bytes, exit the daemon afterwards, close this connection)."""
        try:
            if message.error is not None:
                return _result_only(message.error), False, message.resync_impossible
            if message.cmd == PtmCmd.CMD_SET_DATAFD:
                return _result_only(self._set_datafd(message)), False, False
            return await self._dispatch(message)
        finally:
            close_fds(message.fds)

    def _set_datafd(self, message: ControlMessage) -> int:
        """A descriptor is looked for before the body, as in swtpm (TCP: TPM_IOERROR either way)."""
        if self._data is None or self._data.in_use or not message.fds:
            return PtmResult.TPM_IOERROR
        if message.body:
            return PtmResult.TPM_BAD_PARAMETER
        fd = message.fds.pop(0)
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            log.warning("CMD_SET_DATAFD: fd is not a socket: %s", exc)
            close_fds([fd])
            return PtmResult.TPM_IOERROR
        if sock.type != socket.SOCK_STREAM or not self._data.adopt(sock):
            sock.close()
            return PtmResult.TPM_IOERROR
        log.info("data channel now on the descriptor passed with CMD_SET_DATAFD")
        return PtmResult.TPM_SUCCESS

    async def _dispatch(self, message: ControlMessage) -> tuple[bytes, bool, bool]:
        spec = by_cmd(message.cmd)
        try:
            request = spec.socket_request.unpack_socket(message.body)
        except MalformedMessage as exc:
            log.info("malformed %s: %s", spec.cmd_name, exc)
            return _result_only(PtmResult.TPM_BAD_PARAMETER), False, False
        try:
            result = await control.dispatch(self._vtpm, spec.cmd, request, control.Transport.SOCKET)
        except Exception:  # a bug must not take the control channel down
            log.exception("%s failed", spec.cmd_name)
            return _result_only(PtmResult.TPM_FAIL), False, False
        response: Part = result.response
        return response.pack_socket(), bool(result.terminate), False
