"""The control channel server: ``CMD_*`` requests for one Vtpm, one client at a time.

Messages are received by :mod:`.ctrl_framing`, decoded with :mod:`ioctl_defs`
and executed by :func:`vtpm_cuse.control.dispatch`; the only command handled
here is CMD_SET_DATAFD, because it is about this transport (it hands a
connected socket to the :class:`~.data_channel.DataChannel`).

The control channel runs in its own trio task, so it answers while a TPM
command executes on the Vtpm's worker thread; operations that need a quiet
TPM queue behind the command inside the Vtpm, not here.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

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
from .data_channel import DataChannel
from .streams import send_all

__all__ = ["ControlChannel"]

log = logging.getLogger(__name__)


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
    ) -> None:
        self._vtpm = vtpm
        self._data = data_channel
        self._request_exit = request_exit
        self._terminate_on_disconnect = terminate_on_disconnect

    async def run(
        self,
        listener: trio.socket.SocketType | None = None,
        connected: trio.socket.SocketType | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``connected`` first (``clientfd=``), then clients from ``listener``, one by one."""
        task_status.started()
        if connected is not None:
            await self._serve(connected)
        if listener is None:
            await trio.sleep_forever()
        while True:
            sock, _ = await listener.accept()
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self._serve(sock)

    async def _serve(self, sock: trio.socket.SocketType) -> None:
        with sock:
            try:
                while True:
                    message = await receive_control_message(sock)
                    if message is None:
                        break
                    reply, exit_after, close_after = await self._handle(message)
                    await send_all(sock, reply)
                    if exit_after:
                        self._request_exit()
                        return
                    if close_after:
                        break
            except OSError as exc:
                log.info("control connection lost: %s", exc)
        if self._terminate_on_disconnect:
            log.info("control client went away; terminating (--ctrl ...,terminate)")
            self._request_exit()

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
        if message.body:
            return PtmResult.TPM_BAD_PARAMETER
        if self._data is None or self._data.in_use or not message.fds:
            return PtmResult.TPM_IOERROR
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
