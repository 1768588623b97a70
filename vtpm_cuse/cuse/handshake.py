"""CUSE_INIT: the first exchange on a CUSE channel, which makes the kernel create /dev/<name>.

Kept apart from :mod:`.session` and free of trio so that the daemon can create its node
right after parsing its command line, before it imports trio, ``cryptography`` and the
engine (the kernel queues OPEN and the rest until the session reads them), as the socket
modes listen before those imports: :func:`handshake_blocking`.  The session performs the
same exchange on trio when it is given a channel that has not had it yet (tests, the echo
device): both go through :func:`answer_init` and :func:`probe_after_reply`.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import select
from collections.abc import Callable
from dataclasses import dataclass

from .ioc import IOC_SIZE_MAX
from .protocol import (
    CUSE_MIN_KERNEL_MINOR,
    FUSE_KERNEL_MINOR_VERSION,
    FUSE_KERNEL_VERSION,
    FUSE_MIN_READ_BUFFER,
    KERNEL_MIN_IO_SIZE,
    CuseInitIn,
    CuseInitOut,
    CuseProtocolError,
    InHeader,
    IoctlIn,
    Opcode,
    WriteIn,
    encode_devinfo,
    encode_error,
    encode_reply,
    opcode_name,
    parse_request,
)

__all__ = [
    "CHANNEL_GONE",
    "CUSE_PATH",
    "CuseOptions",
    "Handshake",
    "HandshakeError",
    "answer_init",
    "handshake_blocking",
    "open_channel",
    "probe_after_reply",
]

log = logging.getLogger(__name__)

CUSE_PATH = "/dev/cuse"

CHANNEL_GONE = frozenset({errno.ENODEV, errno.ECONNABORTED, errno.EPIPE, errno.ECONNRESET, errno.EBADF})
"""Errors on the channel fd that mean the peer is gone: the session ends."""

_DEVNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+@-]*")


@dataclass(frozen=True)
class CuseOptions:
    """What the CUSE_INIT reply tells the kernel about the device."""

    name: str
    """Device name: the node appears as /dev/<name>."""
    dev_major: int = 0
    """0 lets the kernel pick a free major."""
    dev_minor: int = 0
    max_read: int = 131072
    """Largest READ request; one read() syscall is split into requests of this size."""
    max_write: int = 131072
    """Largest WRITE request; also sizes our receive buffer."""

    def __post_init__(self) -> None:
        if not _DEVNAME.fullmatch(self.name) or len(self.name) > 200:
            raise ValueError(
                f"device name {self.name!r} must be 1-200 characters of letters, digits and "
                "_.:+@- (it becomes /dev/<name>) and must not start with '.' or '-'"
            )
        if not 0 <= self.dev_major < (1 << 12):
            raise ValueError(f"dev_major {self.dev_major} is outside 0..4095")
        if not 0 <= self.dev_minor < (1 << 20):
            raise ValueError(f"dev_minor {self.dev_minor} is outside 0..1048575")
        for what, value in (("max_read", self.max_read), ("max_write", self.max_write)):
            if not 0 < value < (1 << 31):
                raise ValueError(f"{what} {value} is outside 1..2**31-1")

    @property
    def devinfo(self) -> bytes:
        return encode_devinfo({"DEVNAME": self.name})

    @property
    def read_buffer_size(self) -> int:
        """Bytes per read of the channel. The kernel refuses smaller reads with EINVAL
        (fs/fuse/dev.c) and fails requests that do not fit with EIO, so it covers the
        biggest WRITE (after the kernel's raise to 4096) and the biggest ioctl input."""
        effective_max_write = max(self.max_write, KERNEL_MIN_IO_SIZE)
        return max(
            FUSE_MIN_READ_BUFFER,
            InHeader.SIZE + WriteIn.SIZE + effective_max_write,
            InHeader.SIZE + IoctlIn.SIZE + IOC_SIZE_MAX,
        )


@dataclass(frozen=True)
class Handshake:
    """A channel's completed CUSE_INIT, handed to the session that serves it."""

    kernel_version: tuple[int, int]
    """(major, minor) the kernel offered."""
    protocol_minor: int
    """The minor version we replied with."""
    pending: bytes | None
    """What the probe after the reply read already: a request (the session serves it first),
    b"" for the end of the channel, or None."""


class HandshakeError(CuseProtocolError):
    """The channel's first message cannot be answered with a device; ``reply`` (if any)
    is the error reply the kernel gets first."""

    def __init__(self, message: str, reply: bytes | None = None) -> None:
        super().__init__(message)
        self.reply = reply


def answer_init(first: bytes | None, options: CuseOptions) -> tuple[bytes, tuple[int, int], int]:
    """The reply to the channel's first message ``first`` (None: the channel closed),
    the kernel's (major, minor) and our minor; HandshakeError when it is no CUSE_INIT we
    can serve."""
    if first is None:
        raise HandshakeError("channel closed before CUSE_INIT")
    request = parse_request(first)
    if request.opcode != Opcode.CUSE_INIT or not isinstance(request.body, CuseInitIn):
        raise HandshakeError(
            f"expected CUSE_INIT first, got {opcode_name(request.header.opcode)}",
            encode_error(request.unique, errno.EPROTO),
        )
    offer = request.body
    if offer.major != FUSE_KERNEL_VERSION or offer.minor < CUSE_MIN_KERNEL_MINOR:
        raise HandshakeError(
            f"kernel offers FUSE protocol {offer.major}.{offer.minor}; "
            f"CUSE needs {FUSE_KERNEL_VERSION}.{CUSE_MIN_KERNEL_MINOR} or newer",
            encode_error(request.unique, errno.EPROTO),
        )
    minor = min(offer.minor, FUSE_KERNEL_MINOR_VERSION)
    reply = CuseInitOut(
        major=FUSE_KERNEL_VERSION,
        minor=minor,
        unused=0,
        flags=0,  # restricted ioctls: transfers follow the _IOC bits, no RETRY dance
        max_read=options.max_read,
        max_write=options.max_write,
        dev_major=options.dev_major,
        dev_minor=options.dev_minor,
    )
    return encode_reply(request.unique, reply, options.devinfo), (offer.major, offer.minor), minor


def probe_after_reply(read: Callable[[], bytes | None], options: CuseOptions) -> bytes | None:
    """One non-blocking ``read`` right after the CUSE_INIT reply.  The kernel processes
    the reply inside our write(): it either created the device or aborted the connection
    (e.g. the name is taken), which this read reports as ENODEV, so that failure surfaces
    here.  Returns what it read (a first request), or None."""
    try:
        return read()
    except OSError as exc:
        if exc.errno in CHANNEL_GONE:
            raise CuseProtocolError(
                f"the kernel refused device {options.name!r} (is /dev/{options.name} already taken?): {exc}"
            ) from exc
        raise


def log_device_up(options: CuseOptions, handshake: Handshake) -> None:
    log.info(
        "CUSE device %r up (kernel protocol %d.%d, replied 7.%d)",
        options.name,
        *handshake.kernel_version,
        handshake.protocol_minor,
    )


def open_channel(cuse_path: str = CUSE_PATH) -> int:
    """/dev/cuse opened non-blocking, as the session serves it."""
    try:
        return os.open(cuse_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, f"{cuse_path} does not exist: this kernel has no CUSE (modprobe cuse?)", cuse_path
        ) from None


def handshake_blocking(fd: int, options: CuseOptions) -> Handshake:
    """CUSE_INIT on the non-blocking channel ``fd`` without an event loop: wait for the
    kernel's offer, answer it (the node exists when this returns) and probe once."""
    size = options.read_buffer_size

    def read_now() -> bytes | None:
        while True:
            try:
                return os.read(fd, size)
            except BlockingIOError:
                return None
            except InterruptedError:
                continue

    waiter = select.poll()
    waiter.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    first: bytes | None = None
    while first is None:
        waiter.poll()
        try:
            first = read_now()
        except OSError as exc:
            if exc.errno not in CHANNEL_GONE:
                raise
            first = b""
    try:
        reply, kernel_version, minor = answer_init(first or None, options)
    except HandshakeError as exc:
        if exc.reply is not None:
            os.write(fd, exc.reply)
        raise
    os.write(fd, reply)
    handshake = Handshake(kernel_version, minor, probe_after_reply(read_now, options))
    log_device_up(options, handshake)
    return handshake
