"""The TPM 2.0 command and response header: the one place that lays it out.

Every response, from the dispatcher and from the transports that answer on
the TPM's behalf (a stopped TPM, swtpm's vendor SET_LOCALITY command), starts
with ``tag (2) || size (4) || responseCode (4)``; commands the transports
build themselves (the auto Startup/Shutdown) with ``tag || size || code``.
"""

from __future__ import annotations

import struct
from typing import Final

from .constants import TPM_ST

__all__ = [
    "HEADER_SIZE",
    "command_bytes",
    "command_code",
    "error_response",
    "response_code",
    "response_header",
]

#: tag + size + responseCode (or commandCode).
HEADER_SIZE: Final = 10
_HEADER = struct.Struct(">HII")
"""tag (2) || size (4) || responseCode or commandCode (4)."""


def response_header(tag: int, size: int, rc: int) -> bytes:
    return _HEADER.pack(tag, size, rc)


def error_response(rc: int, tag: int = TPM_ST.NO_SESSIONS) -> bytes:
    """A 10-byte response carrying only ``rc``."""
    return response_header(tag, HEADER_SIZE, rc)


def command_bytes(code: int, body: bytes = b"", tag: int = TPM_ST.NO_SESSIONS) -> bytes:
    """A whole command: header with the size filled in, then ``body``."""
    return (
        int(tag).to_bytes(2, "big") + (HEADER_SIZE + len(body)).to_bytes(4, "big") + int(code).to_bytes(4, "big") + body
    )


def response_code(response: bytes) -> int | None:
    """The responseCode of a response, or None when it is shorter than a header."""
    if len(response) < HEADER_SIZE:
        return None
    return int.from_bytes(response[6:HEADER_SIZE], "big")


def command_code(command: bytes) -> int | None:
    """The commandCode of a command, or None when it is shorter than a header.

    It sits where a response has its responseCode; a separate name keeps
    callers from reading "response" where they handle a command.
    """
    if len(command) < HEADER_SIZE:
        return None
    return int.from_bytes(command[6:HEADER_SIZE], "big")
