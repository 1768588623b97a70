"""swtpm's state blob container: a 10-byte header followed by TLVs (spec §5.2).

Both the state files in the state directory and the blobs moved by
GET/SET_STATEBLOB use this container, so files and blobs produced here have
the outer shape swtpm and its tools expect::

    header  u8 version (2) | u8 min_version (1) | u16 hdrsize (10)
            | u16 flags | u32 totlen (header + body)      -- all big-endian
    body    { u16 tag | u32 length | length bytes }*

Parsing never trusts a length field: every violation raises
:class:`~vtpm_cuse.state.errors.StateError` with the result code swtpm would
report for it, checked in swtpm's order:

* fewer than 10 bytes, or ``totlen`` != actual size  -> TPM_BAD_PARAMETER
* ``min_version`` > 2                                 -> TPM_BAD_VERSION
* ``hdrsize`` != 10                                    -> TPM_BAD_DATASIZE
* a TLV running past the end, or a duplicate tag      -> TPM_BAD_PARAMETER

Header ``version`` 1 (swtpm's pre-TLV layout) is refused with TPM_BAD_VERSION:
it only ever held libtpms state, which this TPM cannot use anyway.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from .errors import PtmResult, StateError

__all__ = [
    "BLOB_VERSION",
    "BLOB_MIN_VERSION",
    "HEADER_SIZE",
    "TLV_HEADER_SIZE",
    "BlobFlag",
    "Tag",
    "BlobHeader",
    "Tlv",
    "ParsedBlob",
    "encode_tlvs",
    "decode_tlvs",
    "find_tlv",
    "require_tlv",
    "build_blob",
    "parse_header",
    "parse_blob",
]

#: Header version we write; readers accept anything whose min_version <= this.
BLOB_VERSION = 2
#: Oldest reader version able to read what we write.
BLOB_MIN_VERSION = 1

_HEADER = struct.Struct(">BBHHI")
_TLV_HEADER = struct.Struct(">HI")
HEADER_SIZE = _HEADER.size  # 10
TLV_HEADER_SIZE = _TLV_HEADER.size  # 6
_U32_MAX = 0xFFFFFFFF


class BlobFlag(IntFlag):
    """Header flag bits (swtpm's ``BLOB_FLAG_*``)."""

    NONE = 0
    #: body encrypted with the state-file key (``--key``)
    ENCRYPTED = 0x01
    #: body encrypted with the migration key (``--migration-key``)
    MIGRATION_ENCRYPTED = 0x02
    #: a GET_STATEBLOB blob (body holds MIGRATION_DATA or its encryption)
    MIGRATION_DATA = 0x04
    #: the state-file key is 256 bits (else 128)
    ENCRYPTED_256BIT_KEY = 0x08
    #: the migration key is 256 bits (else 128)
    MIGRATION_256BIT_KEY = 0x10


class Tag(IntEnum):
    """TLV tags. 1..7 are swtpm's; :attr:`VTPM_AEAD_SCHEME` is ours.

    ``VTPM_AEAD_SCHEME`` (0x7601, far away from swtpm's small numbers) sits
    next to our ENCRYPTED_DATA / ENCRYPTED_MIGRATION_DATA TLVs and names the
    authenticated cipher used for them (see :mod:`vtpm_cuse.state.crypto`).
    swtpm never writes it, and swtpm's reader looks for an HMAC TLV we never
    write, so neither side can mistake the other's ciphertext for its own.
    """

    DATA = 1
    ENCRYPTED_DATA = 2
    HMAC = 3
    MIGRATION_DATA = 4
    ENCRYPTED_MIGRATION_DATA = 5
    IVEC_ENCRYPTED_DATA = 6
    IVEC_ENCRYPTED_MIGRATION_DATA = 7
    VTPM_AEAD_SCHEME = 0x7601


def _tag_name(tag: int) -> str:
    try:
        return f"{Tag(tag).name}({tag})"
    except ValueError:
        return f"tag {tag}"


@dataclass(frozen=True)
class BlobHeader:
    """The 10-byte container header."""

    flags: BlobFlag
    totlen: int
    version: int = BLOB_VERSION
    min_version: int = BLOB_MIN_VERSION
    hdrsize: int = HEADER_SIZE

    def pack(self) -> bytes:
        return _HEADER.pack(self.version, self.min_version, self.hdrsize, int(self.flags), self.totlen)


@dataclass(frozen=True)
class Tlv:
    """One tag-length-value record. ``repr`` hides the data: it may be a
    ciphertext, a nonce or plaintext TPM secrets."""

    tag: int
    data: bytes

    def pack(self) -> bytes:
        if len(self.data) > _U32_MAX:
            raise StateError(PtmResult.TPM_FAIL, f"{_tag_name(self.tag)} too long to encode")
        return _TLV_HEADER.pack(self.tag, len(self.data)) + self.data

    def __repr__(self) -> str:
        return f"Tlv({_tag_name(self.tag)}, {len(self.data)} bytes)"


@dataclass(frozen=True)
class ParsedBlob:
    """A validated container: its header and its top-level TLVs."""

    header: BlobHeader
    tlvs: tuple[Tlv, ...]

    @property
    def flags(self) -> BlobFlag:
        return self.header.flags


def encode_tlvs(tlvs: Iterable[Tlv]) -> bytes:
    """Serialise TLVs back to back."""
    return b"".join(t.pack() for t in tlvs)


def decode_tlvs(data: bytes, *, where: str = "blob") -> tuple[Tlv, ...]:
    """Split ``data`` into TLVs, checking every length against the buffer.

    Duplicate tags are refused: a reader that takes the first and one that
    takes the last occurrence would disagree about the content, which is a
    classic way to smuggle data past a check.
    """
    view = memoryview(data)
    out: list[Tlv] = []
    seen: set[int] = set()
    offset = 0
    while offset < len(view):
        if len(view) - offset < TLV_HEADER_SIZE:
            raise StateError(
                PtmResult.TPM_BAD_PARAMETER,
                f"truncated TLV header at offset {offset} of {where} ({len(view) - offset} of {TLV_HEADER_SIZE} bytes)",
            )
        tag, length = _TLV_HEADER.unpack_from(view, offset)
        start = offset + TLV_HEADER_SIZE
        if length > len(view) - start:
            raise StateError(
                PtmResult.TPM_BAD_PARAMETER,
                f"{_tag_name(tag)} at offset {offset} of {where} claims {length} bytes "
                f"but only {len(view) - start} remain",
            )
        if tag in seen:
            raise StateError(
                PtmResult.TPM_BAD_PARAMETER,
                f"duplicate {_tag_name(tag)} at offset {offset} of {where}",
            )
        seen.add(tag)
        out.append(Tlv(tag, bytes(view[start : start + length])))
        offset = start + length
    return tuple(out)


def find_tlv(tlvs: Sequence[Tlv], tag: int) -> bytes | None:
    """Return the data of the TLV with ``tag``, or None."""
    for tlv in tlvs:
        if tlv.tag == tag:
            return tlv.data
    return None


def require_tlv(tlvs: Sequence[Tlv], tag: int, *, where: str = "blob") -> bytes:
    """Like :func:`find_tlv` but a missing TLV is an error (TPM_FAIL, which is
    what swtpm reports when it cannot find the data it needs)."""
    data = find_tlv(tlvs, tag)
    if data is None:
        raise StateError(PtmResult.TPM_FAIL, f"{where} has no {_tag_name(tag)} TLV")
    return data


def build_blob(flags: BlobFlag, tlvs: Iterable[Tlv]) -> bytes:
    """Header + TLVs, with ``totlen`` computed."""
    body = encode_tlvs(tlvs)
    totlen = HEADER_SIZE + len(body)
    if totlen > _U32_MAX:
        raise StateError(PtmResult.TPM_FAIL, f"state blob of {totlen} bytes is too large")
    return BlobHeader(flags=BlobFlag(flags), totlen=totlen).pack() + body


def parse_header(data: bytes, *, where: str = "state blob") -> BlobHeader:
    """Validate the header of ``data`` (the complete blob) in swtpm's order; the
    messages start with ``where`` (a file name names the file that is damaged)."""
    if len(data) < HEADER_SIZE:
        raise StateError(
            PtmResult.TPM_BAD_PARAMETER,
            f"{where} of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header",
        )
    version, min_version, hdrsize, flags, totlen = _HEADER.unpack_from(data, 0)
    if totlen != len(data):
        raise StateError(
            PtmResult.TPM_BAD_PARAMETER,
            f"{where} header says totlen {totlen} but the blob has {len(data)} bytes",
        )
    if min_version > BLOB_VERSION:
        raise StateError(
            PtmResult.TPM_BAD_VERSION,
            f"{where} needs reader version {min_version}; we support {BLOB_VERSION}",
        )
    if hdrsize != HEADER_SIZE:
        raise StateError(
            PtmResult.TPM_BAD_DATASIZE,
            f"{where} header size {hdrsize} != {HEADER_SIZE}",
        )
    if version < BLOB_VERSION:
        raise StateError(
            PtmResult.TPM_BAD_VERSION,
            f"{where} header version {version} (pre-TLV layout) is not supported",
        )
    return BlobHeader(
        flags=BlobFlag(flags),
        totlen=totlen,
        version=version,
        min_version=min_version,
        hdrsize=hdrsize,
    )


def parse_blob(data: bytes, *, where: str = "state blob") -> ParsedBlob:
    """Validate header and TLV framing of a complete container."""
    header = parse_header(data, where=where)
    tlvs = decode_tlvs(bytes(data[header.hdrsize :]), where=where)
    return ParsedBlob(header=header, tlvs=tlvs)
