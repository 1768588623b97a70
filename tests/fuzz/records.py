"""The input format of the message-sequence fuzz targets (control channel, CUSE).

An input is a sequence of records ``u16 BE word + payload``: the low 15 bits of
the word are the payload length, bit 15 is a per-target flag (the control target
attaches a descriptor, the CUSE target does not wait for the reply).  libFuzzer's
mutators then grow, cut, duplicate and cross over whole messages while keeping
most of them intact, which raw concatenated messages would not allow; a last
record that is cut short keeps what is left.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_PAYLOAD", "Record", "decode", "encode"]

_WORD = struct.Struct(">H")
_FLAG: Final = 0x8000
MAX_PAYLOAD: Final = 0x7FFF


@dataclass(frozen=True)
class Record:
    """One message of an input and its target-specific flag."""

    payload: bytes
    flag: bool = False


def decode(data: bytes) -> Iterator[Record]:
    """The records of an input; empty payloads are skipped (sending nothing is no message)."""
    offset = 0
    while offset + _WORD.size <= len(data):
        (word,) = _WORD.unpack_from(data, offset)
        offset += _WORD.size
        length = word & MAX_PAYLOAD
        payload = data[offset : offset + length]
        if payload:
            yield Record(payload, bool(word & _FLAG))
        offset += length


def encode(records: Iterable[Record | bytes]) -> bytes:
    """The input that :func:`decode` turns into ``records`` (seeds, regression inputs)."""
    out = bytearray()
    for record in records:
        if isinstance(record, bytes):
            record = Record(record)
        if not 0 < len(record.payload) <= MAX_PAYLOAD:
            raise ValueError(f"a record holds 1..{MAX_PAYLOAD} bytes, not {len(record.payload)}")
        out += _WORD.pack(len(record.payload) | (_FLAG if record.flag else 0)) + record.payload
    return bytes(out)
