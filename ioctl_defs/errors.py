"""Exceptions raised when bytes do not match the tpm_ioctl.h contract.

Servers turn these into protocol answers (``TPM_BAD_PARAMETER``,
``TPM_BAD_ORDINAL``, ``EINVAL``), clients into error messages; both need to
know *which* message was wrong and by how much, which a bare
``struct.error`` or ``IndexError`` would not tell them.
"""

from __future__ import annotations

__all__ = ["MalformedMessage", "PayloadTooLarge", "UnknownCommand"]


class MalformedMessage(ValueError):
    """A request/response could not be decoded (too short, too long, inconsistent)."""

    def __init__(
        self,
        struct: str,
        transport: str,
        reason: str,
        *,
        actual: int | None = None,
        expected: int | None = None,
    ) -> None:
        self.struct = struct
        """What was being decoded, e.g. ``"ptm_getstate.resp"``."""
        self.transport = transport
        """``"ioctl"`` or ``"socket"``."""
        self.reason = reason
        self.actual = actual
        """Number of bytes received (when the problem is a length)."""
        self.expected = expected
        """Number of bytes the contract requires (when known)."""
        super().__init__(f"malformed {struct} ({transport}): {reason}")


class PayloadTooLarge(MalformedMessage):
    """A length field exceeds the fixed array of the ioctl struct.

    Separate from :class:`MalformedMessage` because servers answer it
    differently per command (e.g. ``TPM_FAIL`` for HASH_DATA,
    ``TPM_BAD_PARAMETER`` for SET_STATEBLOB).
    """

    def __init__(self, struct: str, transport: str, length: int, capacity: int) -> None:
        self.length = length
        self.capacity = capacity
        super().__init__(
            struct,
            transport,
            f"payload length {length} exceeds the {capacity}-byte buffer",
            actual=length,
            expected=capacity,
        )


class UnknownCommand(LookupError):
    """No control command has this ioctl number / CMD code / name."""

    def __init__(self, kind: str, key: object) -> None:
        self.kind = kind
        self.key = key
        shown = f"{key:#x}" if isinstance(key, int) else repr(key)
        super().__init__(f"unknown {kind} {shown}")
