"""Socket control-channel message framing: ``u32 cmd`` (big endian) + body.

Only requests carry the command code; responses are the bare response half
(see :meth:`~ioctl_defs.part.Part.socket_wanted` for how long one is).
"""

from __future__ import annotations

import struct
from typing import Final

from .errors import MalformedMessage

__all__ = ["SOCKET_CMD_SIZE", "pack_socket_command", "split_socket_command"]

SOCKET_CMD_SIZE: Final = 4
_HEADER = struct.Struct(">I")


def pack_socket_command(cmd: int, body: bytes = b"") -> bytes:
    """Prefix ``body`` with its command code (use this for raw/unknown codes in tests)."""
    return _HEADER.pack(cmd) + body


def split_socket_command(message: bytes | bytearray | memoryview) -> tuple[int, bytes]:
    """Split a received control message into ``(cmd, body)``.

    The code is returned as a plain int: unknown codes must still be
    answered (with TPM_BAD_ORDINAL), so they are not rejected here.
    """
    data = bytes(message)
    if len(data) < SOCKET_CMD_SIZE:
        raise MalformedMessage(
            "control command header",
            "socket",
            f"got {len(data)} bytes, need {SOCKET_CMD_SIZE}",
            actual=len(data),
            expected=SOCKET_CMD_SIZE,
        )
    (cmd,) = _HEADER.unpack_from(data)
    return cmd, data[SOCKET_CMD_SIZE:]
