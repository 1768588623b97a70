"""Declarative byte layout of one half (``req`` or ``resp``) of a tpm_ioctl.h union.

Every half is a run of naturally aligned integers, optionally ending in a
``u32 length`` + byte array.  The same description serves both transports:

* ioctl: host byte order, the array is its full C size (zero filled);
* socket: big endian, the array is exactly ``length`` bytes (it may exceed
  the C size, e.g. HASH_DATA and state blobs are streamed).

Describing the fields once keeps the two encodings from drifting apart.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from .abi import Abi
from .errors import MalformedMessage, PayloadTooLarge

__all__ = ["Field", "Int", "Layout", "Length", "Pad", "Payload", "u8", "u32", "u64"]

_CODES = {1: "B", 4: "I", 8: "Q"}


@dataclass(frozen=True)
class Int:
    """An unsigned integer field of ``width`` bytes."""

    name: str
    width: Literal[1, 4, 8]

    @property
    def limit(self) -> int:
        return 1 << (8 * self.width)


@dataclass(frozen=True)
class Pad:
    """Explicit padding bytes (always sent as zero, ignored when read)."""

    size: int


@dataclass(frozen=True)
class Length:
    """The ``u32`` that states how many payload bytes follow; derived, never set by hand."""

    name: str = "length"


@dataclass(frozen=True)
class Payload:
    """Trailing byte array; ``capacity`` is its size in the C struct."""

    name: str
    capacity: int


Field: TypeAlias = Int | Pad | Length | Payload


def u8(name: str) -> Int:
    return Int(name, 1)


def u32(name: str) -> Int:
    return Int(name, 4)


def u64(name: str) -> Int:
    return Int(name, 8)


class Layout:
    """Ordered fields of one union half, with pack/unpack for both byte orders."""

    def __init__(self, *fields: Field) -> None:
        self.fields: tuple[Field, ...] = fields
        self.payload: Payload | None = None
        self.length_field: Length | None = None
        self.header_size = 0
        """Bytes before the payload (the whole half if it has none)."""
        self.length_offset = -1
        self._header_names: list[str] = []
        codes: list[str] = []
        for index, field in enumerate(fields):
            if isinstance(field, Payload):
                if index != len(fields) - 1 or not isinstance(fields[index - 1], Length):
                    raise TypeError("a Payload must be last and directly follow its Length")
                self.payload = field
                continue
            if isinstance(field, Pad):
                codes.append(f"{field.size}x")
                self.header_size += field.size
                continue
            width = 4 if isinstance(field, Length) else field.width
            if self.header_size % width:
                raise TypeError(f"field {field.name} at offset {self.header_size} is misaligned")
            if isinstance(field, Length):
                self.length_field = field
                self.length_offset = self.header_size
            codes.append(_CODES[width])
            self._header_names.append(field.name)
            self.header_size += width
        if self.length_field is not None and self.payload is None:
            raise TypeError("a Length needs a Payload after it")
        self._format = "".join(codes)
        self._structs = {order: struct.Struct(order + self._format) for order in "<>"}

    @property
    def value_fields(self) -> tuple[Int | Payload, ...]:
        """Fields that correspond to dataclass attributes (not Pad/Length)."""
        return tuple(f for f in self.fields if isinstance(f, Int | Payload))

    @property
    def is_empty(self) -> bool:
        return not self.fields

    @property
    def has_result(self) -> bool:
        """True for response halves whose first field is ``u32 tpm_result``."""
        return bool(self.fields) and self.fields[0] == Int("tpm_result", 4)

    @property
    def ioctl_size(self) -> int:
        """Size of this half in the C struct (payload at full capacity)."""
        return self.header_size + (self.payload.capacity if self.payload else 0)

    def alignment(self, abi: Abi) -> int:
        """C alignment of this half: its widest integer (u64 per the ABI)."""
        widths = [4 if isinstance(f, Length) else f.width for f in self.fields if isinstance(f, Int | Length)]
        return max((abi.u64_align if w == 8 else w for w in widths), default=1)

    def peek_length(self, data: bytes, order: str) -> int:
        """The payload length stated in ``data`` (which must hold the header)."""
        return int.from_bytes(data[self.length_offset : self.length_offset + 4], "little" if order == "<" else "big")

    def encode(self, values: Mapping[str, object], order: str, *, ioctl: bool, what: str) -> bytes:
        """Pack ``values`` (by field name; Length is derived from the payload)."""
        payload = b""
        if self.payload is not None:
            payload = bytes(values[self.payload.name])  # type: ignore[call-overload]
        header_values = [
            len(payload) if self.length_field is not None and name == self.length_field.name else values[name]
            for name in self._header_names
        ]
        header = self._structs[order].pack(*header_values)
        if self.payload is None:
            return header
        if ioctl:
            if len(payload) > self.payload.capacity:
                raise PayloadTooLarge(what, "ioctl", len(payload), self.payload.capacity)
            return header + payload.ljust(self.payload.capacity, b"\0")
        return header + payload

    def decode(self, data: bytes, order: str, *, ioctl: bool, what: str) -> dict[str, object]:
        """Unpack field values by name.  The caller has checked ``len(data) >= header_size``."""
        transport = "ioctl" if ioctl else "socket"
        values: dict[str, object] = dict(
            zip(self._header_names, self._structs[order].unpack_from(data, 0), strict=True)
        )
        if self.payload is not None and self.length_field is not None:
            length = values.pop(self.length_field.name)
            assert isinstance(length, int)
            if ioctl and length > self.payload.capacity:
                raise PayloadTooLarge(what, transport, length, self.payload.capacity)
            end = self.header_size + length
            if end > len(data):
                raise MalformedMessage(
                    what,
                    transport,
                    f"length field says {length} payload bytes, only {len(data) - self.header_size} present",
                    actual=len(data),
                    expected=end,
                )
            values[self.payload.name] = bytes(data[self.header_size : end])
        return values
