"""The FUSE/CUSE kernel wire protocol: message layouts, opcodes, flags and framing.

Layouts and numbers are facts of the Linux uapi header <linux/fuse.h> (protocol 7.x);
the behaviour notes come from fs/fuse/{cuse,dev,file,ioctl}.c. Integers travel in host
byte order (kernel and server share the machine). Every struct here is naturally
aligned, so the ``=`` struct formats below reproduce the C layout exactly; C padding
members are encoded as pad bytes and are not exposed.

This module is pure: it turns bytes into typed requests and typed replies into bytes,
and refuses anything that does not fit with an error that says which value was wrong.
What to do with a refusal (reply with an errno, drop, abort) is the session's call.
"""

from __future__ import annotations

import enum
import errno as _errno
import operator
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar, Self, TypeVar

# --- versions and limits -----------------------------------------------------------------

FUSE_KERNEL_VERSION = 7
"""Protocol major version; the kernel refuses a CUSE_INIT reply with any other major."""

FUSE_KERNEL_MINOR_VERSION = 38
"""The minor version this implementation speaks (what Debian 12's kernel offers). The
reply carries min(kernel's, ours); nothing used here changed after 7.21."""

CUSE_MIN_KERNEL_MINOR = 11
"""CUSE needs protocol 7.11 or newer; the kernel refuses replies with a lower minor."""

FUSE_MIN_READ_BUFFER = 8192
"""The kernel fails reads of /dev/cuse with EINVAL if the buffer is smaller than
max(this, in_header + write_in + max_write)."""

CUSE_INIT_INFO_MAX = 4096
"""Maximum size of the packed ``KEY=value\\0`` device-info strings in the CUSE_INIT reply."""

KERNEL_MIN_IO_SIZE = 4096
"""The kernel raises max_read and max_write in the CUSE_INIT reply to at least this."""

FUSE_INT_REQ_BIT = 1
"""Set in the ``unique`` of an INTERRUPT request (ordinary requests have even uniques)."""

MAX_REPLY_ERRNO = 511
"""The kernel rejects a reply whose ``error`` is <= -512 (internal kernel codes) or > 0."""


class Opcode(enum.IntEnum):
    """Request opcodes (``enum fuse_opcode``). A CUSE channel only ever carries
    CUSE_INIT, OPEN, READ, WRITE, RELEASE, INTERRUPT, IOCTL and POLL from the kernel
    (cuse.c registers no flush/fsync); the rest are listed so logs can name them."""

    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    GETLK = 31
    SETLK = 32
    SETLKW = 33
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    BMAP = 37
    DESTROY = 38
    IOCTL = 39
    POLL = 40
    NOTIFY_REPLY = 41
    BATCH_FORGET = 42
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    LSEEK = 46
    COPY_FILE_RANGE = 47
    SETUPMAPPING = 48
    REMOVEMAPPING = 49
    SYNCFS = 50
    TMPFILE = 51
    STATX = 52
    CUSE_INIT = 4096


class NotifyCode(enum.IntEnum):
    """Codes of unsolicited server-to-kernel messages (carried in ``out_header.error``
    with ``unique == 0``). CUSE devices only use POLL."""

    POLL = 1
    INVAL_INODE = 2
    INVAL_ENTRY = 3
    STORE = 4
    RETRIEVE = 5
    DELETE = 6


class CuseInitFlags(enum.IntFlag):
    """``cuse_init_in/out.flags``. The kernel offers UNRESTRICTED_IOCTL; replying 0
    (as we do) makes the kernel derive ioctl transfers from the _IOC bits alone."""

    UNRESTRICTED_IOCTL = 1 << 0


class IoctlFlags(enum.IntFlag):
    """``fuse_ioctl_in/out.flags``."""

    COMPAT = 1 << 0
    """The caller used the compat (32-bit) ioctl entry point."""
    UNRESTRICTED = 1 << 1
    """Unrestricted mode: the server may ask for arbitrary buffers via RETRY."""
    RETRY = 1 << 2
    """Reply flag asking the kernel to retry with other iovecs (EIO in restricted mode)."""
    IS_32BIT = 1 << 3
    """The caller is a 32-bit process (FUSE_IOCTL_32BIT)."""
    DIR = 1 << 4
    """The file is a directory (never on CUSE)."""
    COMPAT_X32 = 1 << 5
    """The caller uses the x32 ABI."""


FUSE_IOCTL_COMPAT = IoctlFlags.COMPAT
FUSE_IOCTL_UNRESTRICTED = IoctlFlags.UNRESTRICTED
FUSE_IOCTL_RETRY = IoctlFlags.RETRY
FUSE_IOCTL_32BIT = IoctlFlags.IS_32BIT
FUSE_IOCTL_DIR = IoctlFlags.DIR
FUSE_IOCTL_COMPAT_X32 = IoctlFlags.COMPAT_X32
FUSE_IOCTL_MAX_IOV = 256
CUSE_UNRESTRICTED_IOCTL = CuseInitFlags.UNRESTRICTED_IOCTL


class PollFlags(enum.IntFlag):
    """``fuse_poll_in.flags``."""

    SCHEDULE_NOTIFY = 1 << 0
    """Someone sleeps in poll(): send a FUSE_NOTIFY_POLL for ``kh`` once the device's
    readiness changes, or that poll() sleeps until its timeout."""


FUSE_POLL_SCHEDULE_NOTIFY = PollFlags.SCHEDULE_NOTIFY
FUSE_NOTIFY_POLL = NotifyCode.POLL


class FsyncFlags(enum.IntFlag):
    FDATASYNC = 1 << 0


# --- errors ------------------------------------------------------------------------------


class CuseProtocolError(Exception):
    """The peer violated the protocol in a way the session cannot serve past."""


class TruncatedStruct(CuseProtocolError):
    """A fixed-size struct did not fit into the bytes that arrived."""

    def __init__(self, struct_name: str, offset: int, needed: int, available: int) -> None:
        super().__init__(
            f"{struct_name} needs {needed} bytes at offset {offset}, but the message has only {available} bytes there"
        )
        self.struct_name = struct_name
        self.needed = needed
        self.available = available


class MalformedRequest(CuseProtocolError):
    """A request that cannot be served. ``unique`` is None when even the request id
    could not be read (then no reply is possible); ``errno`` is what to reply."""

    def __init__(self, message: str, *, unique: int | None, errno: int) -> None:
        super().__init__(message)
        self.unique = unique
        self.errno = errno


# --- fixed-size structs ------------------------------------------------------------------

_W = TypeVar("_W", bound="WireStruct")


class WireStruct:
    """Base of the kernel structs: subclasses are slotted dataclasses made by
    :func:`wire_struct`, whose fields map 1:1 onto the non-padding struct members.

    They are deliberately not frozen: a frozen dataclass costs three times as much to
    build, every request builds at least two, and under emulation that adds up to a
    measurable part of a round trip. Treat them as values anyway."""

    LAYOUT: ClassVar[struct.Struct]
    SIZE: ClassVar[int]
    _FIELD_NAMES: ClassVar[tuple[str, ...]]
    _FIELD_VALUES: ClassVar[Callable[[object], tuple[int, ...]]]

    @classmethod
    def unpack_from(cls, buf: bytes | bytearray | memoryview, offset: int = 0) -> Self:
        end = offset + cls.SIZE
        if offset < 0 or len(buf) < end:
            raise TruncatedStruct(cls.__name__, offset, cls.SIZE, max(0, len(buf) - offset))
        return cls(*cls.LAYOUT.unpack_from(buf, offset))

    def pack(self) -> bytes:
        values = self._FIELD_VALUES(self)
        try:
            return self.LAYOUT.pack(*values)
        except struct.error as exc:
            shown = ", ".join(f"{n}={v!r}" for n, v in zip(self._FIELD_NAMES, values, strict=True))
            raise ValueError(f"{type(self).__name__}({shown}) does not fit its layout: {exc}") from exc


def wire_struct(fmt: str) -> Callable[[type[_W]], type[_W]]:
    """Make ``cls`` a frozen dataclass laid out as ``fmt`` (host order, no implicit
    padding). Checks that the dataclass fields and the format agree in number."""

    layout = struct.Struct("=" + fmt)

    def wrap(cls: type[_W]) -> type[_W]:
        cls = dataclass(slots=True)(cls)
        names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        if len(layout.unpack(bytes(layout.size))) != len(names):
            raise TypeError(f"{cls.__name__}: format {fmt!r} does not match fields {names}")
        cls.LAYOUT = layout
        cls.SIZE = layout.size
        cls._FIELD_NAMES = names
        if len(names) == 1:  # attrgetter of one name returns the bare value
            only = operator.attrgetter(names[0])
            cls._FIELD_VALUES = staticmethod(lambda value: (only(value),))  # type: ignore[assignment]
        else:
            cls._FIELD_VALUES = operator.attrgetter(*names)  # type: ignore[assignment]
        return cls

    return wrap


@wire_struct("IIQQIIIH2x")
class InHeader(WireStruct):
    """``fuse_in_header`` (40 bytes), in front of every kernel-to-server message."""

    len: int
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int
    total_extlen: int = 0
    """Length of request extensions at the end of the message, in 8-byte units."""


@wire_struct("IiQ")
class OutHeader(WireStruct):
    """``fuse_out_header`` (16 bytes), in front of every server-to-kernel message.
    ``error`` is 0 or -errno for replies, the notify code for notifications."""

    len: int
    error: int
    unique: int


@wire_struct("IIII")
class CuseInitIn(WireStruct):
    major: int
    minor: int
    unused: int
    flags: int


@wire_struct("IIIIIIII40x")
class CuseInitOut(WireStruct):
    """``cuse_init_out`` (72 bytes including ``spare[10]``); followed by device info."""

    major: int
    minor: int
    unused: int
    flags: int
    max_read: int
    max_write: int
    dev_major: int
    dev_minor: int


@wire_struct("II")
class OpenIn(WireStruct):
    flags: int
    """The opener's ``f_flags`` (O_ACCMODE, O_NONBLOCK, ...) minus O_CREAT/O_EXCL/O_NOCTTY."""
    open_flags: int


@wire_struct("QIi")
class OpenOut(WireStruct):
    fh: int
    open_flags: int = 0
    backing_id: int = 0


@wire_struct("QQIIQI4x")
class ReadIn(WireStruct):
    fh: int
    offset: int
    size: int
    read_flags: int
    lock_owner: int
    flags: int
    """The file's current ``f_flags``: O_NONBLOCK here means a non-blocking read."""


@wire_struct("QQIIQI4x")
class WriteIn(WireStruct):
    fh: int
    offset: int
    size: int
    write_flags: int
    lock_owner: int
    flags: int


@wire_struct("I4x")
class WriteOut(WireStruct):
    size: int


@wire_struct("QIIQ")
class ReleaseIn(WireStruct):
    fh: int
    flags: int
    release_flags: int
    lock_owner: int


@wire_struct("QI4xQ")
class FlushIn(WireStruct):
    fh: int
    unused: int
    lock_owner: int


@wire_struct("QI4x")
class FsyncIn(WireStruct):
    fh: int
    fsync_flags: int


@wire_struct("Q")
class InterruptIn(WireStruct):
    unique: int
    """The ``unique`` of the request to interrupt."""


@wire_struct("QIIQII")
class IoctlIn(WireStruct):
    fh: int
    flags: int
    cmd: int
    arg: int
    in_size: int
    out_size: int


@wire_struct("iIII")
class IoctlOut(WireStruct):
    result: int
    flags: int = 0
    in_iovs: int = 0
    out_iovs: int = 0


@wire_struct("QQII")
class PollIn(WireStruct):
    fh: int
    kh: int
    """Kernel handle of the polled file, to name in a FUSE_NOTIFY_POLL."""
    flags: int
    events: int


@wire_struct("I4x")
class PollOut(WireStruct):
    revents: int


@wire_struct("Q")
class NotifyPollWakeupOut(WireStruct):
    kh: int


REQUEST_BODIES: dict[Opcode, type[WireStruct] | None] = {
    Opcode.CUSE_INIT: CuseInitIn,
    Opcode.OPEN: OpenIn,
    Opcode.READ: ReadIn,
    Opcode.WRITE: WriteIn,
    Opcode.RELEASE: ReleaseIn,
    Opcode.FSYNC: FsyncIn,
    Opcode.FLUSH: FlushIn,
    Opcode.INTERRUPT: InterruptIn,
    Opcode.IOCTL: IoctlIn,
    Opcode.POLL: PollIn,
    Opcode.DESTROY: None,
}
"""The fixed struct after the header for each opcode this package parses."""


# --- requests ----------------------------------------------------------------------------


@dataclass(slots=True)
class Request:
    """One kernel-to-server message. ``body`` is the opcode's struct from
    :data:`REQUEST_BODIES` (None for DESTROY and for opcodes not parsed here);
    ``payload`` is what follows it: WRITE data or IOCTL input."""

    header: InHeader
    opcode: Opcode | int
    body: WireStruct | None
    payload: bytes

    @property
    def unique(self) -> int:
        return self.header.unique


def opcode_name(opcode: int) -> str:
    try:
        return f"{Opcode(opcode).name} ({opcode})"
    except ValueError:
        return f"unknown opcode {opcode}"


_UNIQUE_AT = struct.Struct("=Q")


def parse_request(buf: bytes) -> Request:
    """Parse one message read from the channel, checking every length.

    Raises :class:`MalformedRequest`: EIO when the framing is wrong (the header's
    ``len`` disagrees with what arrived), EINVAL when the opcode's struct or payload
    does not fit.
    """
    if len(buf) < InHeader.SIZE:
        unique = _UNIQUE_AT.unpack_from(buf, 8)[0] if len(buf) >= 16 else None
        raise MalformedRequest(
            f"request of {len(buf)} bytes is shorter than fuse_in_header ({InHeader.SIZE})",
            unique=unique,
            errno=_errno.EIO,
        )
    header = InHeader.unpack_from(buf)
    if header.len != len(buf):
        raise MalformedRequest(
            f"{opcode_name(header.opcode)}: header len {header.len} but {len(buf)} bytes arrived",
            unique=header.unique,
            errno=_errno.EIO,
        )
    end = len(buf) - 8 * header.total_extlen
    if end < InHeader.SIZE:
        raise MalformedRequest(
            f"{opcode_name(header.opcode)}: {header.total_extlen} extension words do not fit in {len(buf)} bytes",
            unique=header.unique,
            errno=_errno.EINVAL,
        )
    try:
        opcode: Opcode | int = Opcode(header.opcode)
    except ValueError:
        opcode = header.opcode
    layout = REQUEST_BODIES.get(opcode) if isinstance(opcode, Opcode) else None
    if layout is None:
        return Request(header, opcode, None, bytes(buf[InHeader.SIZE : end]))
    region = buf[:end]
    try:
        body = layout.unpack_from(region, InHeader.SIZE)
    except TruncatedStruct as exc:
        raise MalformedRequest(
            f"{opcode_name(header.opcode)}: {exc}", unique=header.unique, errno=_errno.EINVAL
        ) from None
    payload = bytes(region[InHeader.SIZE + layout.SIZE :])
    expected: int | None = None
    if isinstance(body, WriteIn):
        expected = body.size
    elif isinstance(body, IoctlIn):
        expected = body.in_size
    if expected is not None and expected != len(payload):
        raise MalformedRequest(
            f"{opcode_name(header.opcode)}: declares {expected} bytes of data but carries {len(payload)}",
            unique=header.unique,
            errno=_errno.EINVAL,
        )
    return Request(header, opcode, body, payload)


# --- replies and notifications -----------------------------------------------------------


def encode_reply(unique: int, *parts: WireStruct | bytes) -> bytes:
    """A successful reply: out header + the given structs/bytes, as one message."""
    body = b"".join(p.pack() if isinstance(p, WireStruct) else bytes(p) for p in parts)
    return OutHeader(OutHeader.SIZE + len(body), 0, unique).pack() + body


def encode_error(unique: int, errno: int) -> bytes:
    """An error reply: a bare out header with ``error = -errno`` (the kernel rejects
    error replies that carry a body)."""
    if not 0 < errno <= MAX_REPLY_ERRNO:
        raise ValueError(f"errno {errno} is outside 1..{MAX_REPLY_ERRNO}, the kernel would refuse it")
    return OutHeader(OutHeader.SIZE, -errno, unique).pack()


def encode_notify(code: NotifyCode, *parts: WireStruct | bytes) -> bytes:
    """An unsolicited notification: ``unique`` 0 and the code in ``error``."""
    body = b"".join(p.pack() if isinstance(p, WireStruct) else bytes(p) for p in parts)
    return OutHeader(OutHeader.SIZE + len(body), int(code), 0).pack() + body


def encode_devinfo(entries: dict[str, str]) -> bytes:
    """Pack device info for the CUSE_INIT reply: ``KEY=value\\0`` strings back to back.
    The kernel strips whitespace around keys and values and needs DEVNAME."""
    out = bytearray()
    for key, value in entries.items():
        for what, text in (("key", key), ("value", value)):
            if not text or "\0" in text or text != text.strip():
                raise ValueError(f"device info {what} {text!r} is empty, has NUL or surrounding spaces")
        if "=" in key:
            raise ValueError(f"device info key {key!r} contains '='")
        out += f"{key}={value}".encode() + b"\0"
    if len(out) > CUSE_INIT_INFO_MAX:
        raise ValueError(f"device info is {len(out)} bytes, more than CUSE_INIT_INFO_MAX {CUSE_INIT_INFO_MAX}")
    return bytes(out)
