"""Receiving one control-channel message: ``u32 cmd`` (BE) + request body (+ an fd).

Framing is implicit: the body length follows from the command (and, for
HASH_DATA / SET_STATEBLOB, from the length field in it).  Reception works
like swtpm's (spec §3.2): the first read is a ``recvmsg`` that may carry a
descriptor (CMD_SET_DATAFD); whatever arrived with it belongs to the
message; missing bytes are waited for, but never for more than
:data:`BODY_TIMEOUT` without progress, so a client that sends a short body
gets ``TPM_BAD_PARAMETER`` instead of a hung channel, and never for more than
:data:`MESSAGE_DEADLINE` in all, so a client trickling a byte now and then
cannot hold the channel either.

Bytes beyond the body that arrived in the same read stay part of the
message.  One rule decides what they do (``Part.SOCKET_EXACT`` of the request,
checked for every command by ``tests/test_sockets_hostile.py`` against swtpm):
after a fixed-size body (INIT, SET_LOCALITY, RESET_TPMESTABLISHED,
GET_STATEBLOB, SET_BUFFERSIZE, GET_INFO, LOCK_STORAGE) they are ignored, as
swtpm does for all of them but INIT (QEMU pads ``loc`` to 4 bytes); a command
without a body or with a length-prefixed payload (HASH_DATA, SET_STATEBLOB)
must be exact, else TPM_BAD_PARAMETER, as swtpm does for all of them but
GET_CAPABILITY (which it answers anyway) and HASH_DATA (where it stops
answering).  A short body is answered TPM_BAD_PARAMETER once the wait is over;
swtpm closes the connection instead for most commands.
"""

from __future__ import annotations

import array
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Final

import trio

from ioctl_defs import PtmCmd, PtmResult, UnknownCommand, by_cmd

__all__ = [
    "BODY_TIMEOUT",
    "MESSAGE_DEADLINE",
    "FIRST_READ_SIZE",
    "MAX_HASH_DATA",
    "MAX_STATE_BLOB",
    "ControlMessage",
    "receive_control_message",
    "close_fds",
]

BODY_TIMEOUT: Final = 0.5
"""Seconds without progress after which an incomplete message is answered as malformed."""
MESSAGE_DEADLINE: Final = 10.0
"""Seconds from a message's first byte by which all of it must have arrived (a
SET_STATEBLOB of several MB over loopback takes milliseconds)."""
FIRST_READ_SIZE: Final = 4 + 4100
"""swtpm's ``struct input``: the command code plus the largest fixed body (ptm_hdata)."""
MAX_STATE_BLOB: Final = 512 * 1024
"""Largest SET_STATEBLOB payload swtpm accepts (TPM_FAIL above)."""
MAX_HASH_DATA: Final = 16 * 1024 * 1024
"""Largest HASH_DATA payload we buffer; swtpm streams, no real client sends this much."""
MAX_FDS: Final = 4
"""Room for descriptors in the first read; only one is used, extras are closed."""
_CMD = struct.Struct(">I")
_PAYLOAD_LIMITS: Final = {
    PtmCmd.CMD_SET_STATEBLOB: MAX_STATE_BLOB,
    PtmCmd.CMD_HASH_DATA: MAX_HASH_DATA,
}


@dataclass
class ControlMessage:
    """One received request, or the reason it cannot be executed."""

    cmd: int
    body: bytes = b""
    fds: list[int] = field(default_factory=list)
    """Descriptors received with the message (SCM_RIGHTS); the receiver owns them."""
    error: PtmResult | None = None
    """When set, answer with this result instead of executing."""
    resync_impossible: bool = False
    """The rest of an oversized payload is still in the stream: close after answering."""


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


def _fds_from(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(data[: len(data) - len(data) % received.itemsize])
            fds.extend(received)
    return fds


async def _first_read(sock: trio.socket.SocketType) -> tuple[bytes, list[int]]:
    if sock.family == socket.AF_UNIX:
        data, ancdata, _flags, _addr = await sock.recvmsg(
            FIRST_READ_SIZE, socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
        )
        return data, _fds_from(ancdata)
    return await sock.recv(FIRST_READ_SIZE), []


async def _read_up_to(sock: trio.socket.SocketType, data: bytes, wanted: int, deadline: float) -> bytes:
    """Append reads until ``wanted`` bytes, EOF, :data:`BODY_TIMEOUT` without progress or ``deadline``."""
    while len(data) < wanted:
        chunk = b""
        with trio.move_on_at(min(deadline, trio.current_time() + BODY_TIMEOUT)):
            chunk = await sock.recv(min(wanted - len(data), 1 << 16))
        if not chunk:
            break
        data += chunk
    return data


def _wanted_body(cmd: int, body: bytes) -> int:
    """Body size the command needs, judging by what is known of it so far."""
    return by_cmd(cmd).socket_request.socket_wanted(body)


async def receive_control_message(sock: trio.socket.SocketType) -> ControlMessage | None:
    """Receive one message; None when the client closed the connection."""
    data, fds = await _first_read(sock)
    if not data:
        close_fds(fds)
        return None
    deadline = trio.current_time() + MESSAGE_DEADLINE
    data = await _read_up_to(sock, data, _CMD.size, deadline)
    if len(data) < _CMD.size:
        return ControlMessage(0, data, fds, error=PtmResult.TPM_BAD_PARAMETER)
    (cmd,) = _CMD.unpack_from(data)
    try:
        by_cmd(cmd)
    except UnknownCommand:
        return ControlMessage(cmd, data[_CMD.size :], fds, error=PtmResult.TPM_BAD_ORDINAL)
    while True:
        body = data[_CMD.size :]
        wanted = _wanted_body(cmd, body)
        limit = _PAYLOAD_LIMITS.get(PtmCmd(cmd))
        if limit is not None and wanted > limit + by_cmd(cmd).socket_request.LAYOUT.header_size:
            return ControlMessage(cmd, b"", fds, error=PtmResult.TPM_FAIL, resync_impossible=True)
        if len(body) >= wanted:
            return ControlMessage(cmd, body, fds)
        data = await _read_up_to(sock, data, _CMD.size + wanted, deadline)
        if len(data) < _CMD.size + wanted:
            # Gave up waiting: the body is short.
            return ControlMessage(cmd, data[_CMD.size :], fds, error=PtmResult.TPM_BAD_PARAMETER)
