"""Data-channel framing: where a TPM command ends, and the send-command-header.

swtpm reads a command with one ``read()`` and never looks at ``paramSize``
(spec §3.4), so every client writes a command in one piece.  We keep that
"one command per read" contract -- everything that arrived together is one
command -- but additionally wait (briefly) for the rest of a command whose
header announces more bytes than one read delivered, so a command split by
the network is not executed in pieces.  The wait is bounded: a client that
lies in ``paramSize`` gets the engine's size error after
:data:`COMPLETION_TIMEOUT` instead of a hang.

The send-command-header framing (``PTM_CAP_SEND_COMMAND_HEADER``, the
Microsoft simulator's data port) wraps a command in
``{u32 TPM_SEND_COMMAND=8; u8 locality; u32 size}`` and the response in
``u32 size`` ... ``u32 0``.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final, NamedTuple

from vtpm_cuse.tpm.wire import HEADER_SIZE

__all__ = [
    "COMPLETION_TIMEOUT",
    "MAX_MESSAGE",
    "MssimCommand",
    "DataMessage",
    "expected_length",
    "parse_message",
    "frame_response",
]

TPM_BUFFER_MAX: Final = 4096
_SEND_HEADER = struct.Struct(">IBI")
"""``{u32 cmd; u8 locality; u32 size}``, packed."""
SEND_HEADER_SIZE: Final = _SEND_HEADER.size
MAX_MESSAGE: Final = TPM_BUFFER_MAX + SEND_HEADER_SIZE
"""swtpm's read buffer: the largest command plus the send-command header."""
COMPLETION_TIMEOUT: Final = 0.5
"""Seconds to wait for the rest of a command after its first bytes (swtpm's control-channel bound)."""
_TPM_TAGS: Final = frozenset({0x8001, 0x8002, 0x00C1, 0x00C2, 0x00C3})
"""TPM 2 (NO_SESSIONS, SESSIONS) and TPM 1.2 request tags: such a message is raw."""
_U32 = struct.Struct(">I")


class MssimCommand(IntEnum):
    """First u32 of a send-command-header message (Microsoft simulator numbering)."""

    TPM_SEND_COMMAND = 8
    TPM_SESSION_END = 20
    """Sent by tpm2-tss' mssim TCTI when it closes; there is nothing to answer."""


class DataMessage(NamedTuple):
    """One message from a data client (a NamedTuple: immutable, and built for every
    command at a third of a frozen dataclass's cost)."""

    command: bytes
    """The TPM command bytes (without any send-command header)."""
    locality: int | None = None
    """Locality from the send-command header; None for a raw command."""
    framed: bool = False
    """Whether the response needs the send-command-header framing."""
    session_end: bool = False
    """The client announced it is going away (mssim TPM_SESSION_END)."""


def _is_raw(prefix: bytes) -> bool:
    return len(prefix) >= 2 and (prefix[0] << 8 | prefix[1]) in _TPM_TAGS


def expected_length(prefix: bytes) -> int:
    """How many bytes the message starting with ``prefix`` has, as far as ``prefix`` tells.

    Capped at :data:`MAX_MESSAGE`; the answer grows as more of the header is known.
    """
    if len(prefix) >= 4 and not _is_raw(prefix):
        (first,) = _U32.unpack_from(prefix)
        if first == MssimCommand.TPM_SESSION_END:
            return 4
        if first == MssimCommand.TPM_SEND_COMMAND:
            if len(prefix) < SEND_HEADER_SIZE:
                return SEND_HEADER_SIZE
            _, _, size = _SEND_HEADER.unpack_from(prefix)
            return min(SEND_HEADER_SIZE + size, MAX_MESSAGE)
    if len(prefix) < HEADER_SIZE:
        return HEADER_SIZE
    (size,) = _U32.unpack_from(prefix, 2)
    return max(HEADER_SIZE, min(size, MAX_MESSAGE))


def parse_message(data: bytes) -> DataMessage:
    """Interpret everything read for one message (see the module docstring)."""
    if len(data) >= 4 and not _is_raw(data):
        (first,) = _U32.unpack_from(data)
        if first == MssimCommand.TPM_SESSION_END and len(data) == 4:
            return DataMessage(b"", session_end=True)
        if first == MssimCommand.TPM_SEND_COMMAND and len(data) >= SEND_HEADER_SIZE:
            _, locality, size = _SEND_HEADER.unpack_from(data)
            body = data[SEND_HEADER_SIZE:]
            # Like swtpm, a size that disagrees with what arrived is left for the
            # TPM to complain about: pass the bytes that are there.
            return DataMessage(body[:size] if size <= len(body) else body, locality, framed=True)
    return DataMessage(data)


def frame_response(response: bytes, message: DataMessage) -> bytes:
    """The bytes to send back: raw, or ``u32 size`` + response + ``u32 0`` for framed commands."""
    if not message.framed:
        return response
    return _U32.pack(len(response)) + response + _U32.pack(0)
