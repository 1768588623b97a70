"""A small DER (ITU-T X.690) reader and writer: the tag-length-value layer only.

TPM2_CertifyX509 takes a caller's partial certificate apart and wraps the TPM's own parts
around it; the values are opaque except for a few INTEGERs, OIDs and BIT STRINGs, so this
module knows tags and lengths and nothing of X.509 (that is :mod:`.x509_tbs`).  Only
single-octet tags and definite lengths of up to two octets exist here: a TPM command buffer
is at most MAX_DIGEST_BUFFER octets, so anything else is malformed input, reported as
:class:`DerError` with what was wrong and where.
"""

from __future__ import annotations

import dataclasses
import enum

__all__ = [
    "DerError",
    "Tag",
    "Tlv",
    "bit_string",
    "bit_string_value",
    "encode",
    "integer",
    "object_identifier",
    "read_all",
    "read_one",
]

#: A long-form length of more octets than this cannot describe a TPM command buffer.
MAX_LENGTH_OCTETS = 2
_LONG_FORM = 0x80
_HIGH_TAG_NUMBER = 0x1F
_OID_ARC_BITS = 7


class DerError(ValueError):
    """Octets that are not the DER this reader expects."""


class Tag(enum.IntEnum):
    """The identifier octets used here (universal class, or context-specific constructed)."""

    BOOLEAN = 0x01
    INTEGER = 0x02
    BIT_STRING = 0x03
    OCTET_STRING = 0x04
    NULL = 0x05
    OBJECT_IDENTIFIER = 0x06
    SEQUENCE = 0x30
    #: [n] EXPLICIT: context-specific, constructed.
    CONTEXT_0 = 0xA0
    CONTEXT_1 = 0xA1
    CONTEXT_2 = 0xA2
    CONTEXT_3 = 0xA3


@dataclasses.dataclass(frozen=True)
class Tlv:
    """One element: its tag, its contents, and the whole encoding (tag, length and contents)."""

    tag: int
    value: bytes
    encoded: bytes


def _length(data: bytes, at: int) -> tuple[int, int]:
    """(length, offset of the contents) of the length field at ``at``."""
    if at >= len(data):
        raise DerError(f"no length octet at offset {at}")
    first = data[at]
    if first < _LONG_FORM:
        return first, at + 1
    count = first & ~_LONG_FORM
    if not 0 < count <= MAX_LENGTH_OCTETS:
        raise DerError(f"length form 0x{first:02x} at offset {at}")
    if at + 1 + count > len(data):
        raise DerError(f"length field at offset {at} runs past the end")
    return int.from_bytes(data[at + 1 : at + 1 + count], "big"), at + 1 + count


def read_one(data: bytes, at: int = 0) -> Tlv:
    """The element starting at ``at``, which must fit in ``data``."""
    if at >= len(data):
        raise DerError(f"no element at offset {at}")
    tag = data[at]
    if tag & _HIGH_TAG_NUMBER == _HIGH_TAG_NUMBER:
        raise DerError(f"multi-octet tag 0x{tag:02x} at offset {at}")
    length, start = _length(data, at + 1)
    end = start + length
    if end > len(data):
        raise DerError(f"element 0x{tag:02x} at offset {at} claims {length} octets, {len(data) - start} remain")
    return Tlv(tag, bytes(data[start:end]), bytes(data[at:end]))


def read_all(data: bytes) -> list[Tlv]:
    """The consecutive elements that make up ``data`` exactly."""
    elements: list[Tlv] = []
    at = 0
    while at < len(data):
        element = read_one(data, at)
        elements.append(element)
        at += len(element.encoded)
    return elements


def encode(tag: int, value: bytes) -> bytes:
    """The DER encoding of one element (minimal length octets)."""
    size = len(value)
    if size < _LONG_FORM:
        return bytes([tag, size]) + value
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, _LONG_FORM | len(octets)]) + octets + value


def integer(magnitude: bytes) -> bytes:
    """An INTEGER of the unsigned big-endian ``magnitude``: no leading zero octets, and one zero
    octet in front when the top bit is set, so it stays positive."""
    stripped = magnitude.lstrip(b"\0") or b"\0"
    return encode(Tag.INTEGER, (b"\0" if stripped[0] & 0x80 else b"") + stripped)


def object_identifier(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER from its dotted form ("1.2.840.113549.1.1.11")."""
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= _OID_ARC_BITS
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= _OID_ARC_BITS
        body.extend(reversed(chunk))
    return encode(Tag.OBJECT_IDENTIFIER, bytes(body))


def bit_string(octets: bytes) -> bytes:
    """A BIT STRING of whole octets (no unused bits): how keys travel in a certificate."""
    return encode(Tag.BIT_STRING, b"\0" + octets)


def bit_string_value(element: Tlv, width: int = 32) -> int:
    """The named bits of a BIT STRING as a ``width``-bit integer, bit 0 of the string as the
    integer's top bit (X.509's KeyUsage and TCG's TPMA_OBJECT extension are numbered so)."""
    if element.tag != Tag.BIT_STRING or not element.value:
        raise DerError("not a BIT STRING")
    unused, octets = element.value[0], element.value[1:]
    if unused > 7 or (unused and not octets):
        raise DerError(f"a BIT STRING with {unused} unused bits of {len(octets)} octets")
    bits = 8 * len(octets) - unused
    if bits > width:
        raise DerError(f"a BIT STRING of {bits} bits, more than {width}")
    value = int.from_bytes(octets, "big") >> unused if octets else 0
    return value << (width - bits)
