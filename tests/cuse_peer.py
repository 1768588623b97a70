"""A simulated kernel for testing the CUSE server without /dev/cuse.

The kernel side of the wire runs over a SOCK_SEQPACKET socketpair, which preserves
message boundaries the way /dev/cuse does (one read = one request, one write = one
reply). The layouts here are written out independently of vtpm_cuse.cuse.protocol,
from the <linux/fuse.h> facts, so the tests check the server's bytes against a second
rendering of the ABI rather than against itself.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from tests.support.trio_run import trio_test as trio_test  # re-exported: the CUSE tests import it from here

# fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding
IN_HEADER = struct.Struct("=IIQQIIIHH")
# fuse_out_header: len, error, unique
OUT_HEADER = struct.Struct("=IiQ")
CUSE_INIT_IN = struct.Struct("=IIII")
CUSE_INIT_OUT = struct.Struct("=IIIIIIII40x")
OPEN_IN = struct.Struct("=II")
OPEN_OUT = struct.Struct("=QIi")
READ_IN = struct.Struct("=QQIIQII")  # fh, offset, size, read_flags, lock_owner, flags, padding
WRITE_IN = struct.Struct("=QQIIQII")
WRITE_OUT = struct.Struct("=II")
RELEASE_IN = struct.Struct("=QIIQ")
FLUSH_IN = struct.Struct("=QIIQ")
FSYNC_IN = struct.Struct("=QII")
INTERRUPT_IN = struct.Struct("=Q")
IOCTL_IN = struct.Struct("=QIIQII")
IOCTL_OUT = struct.Struct("=iIII")
POLL_IN = struct.Struct("=QQII")
POLL_OUT = struct.Struct("=II")
NOTIFY_POLL_WAKEUP_OUT = struct.Struct("=Q")

assert (IN_HEADER.size, OUT_HEADER.size, CUSE_INIT_OUT.size, READ_IN.size, IOCTL_IN.size) == (40, 16, 72, 40, 32)

OP_GETATTR = 3
OP_OPEN = 14
OP_READ = 15
OP_WRITE = 16
OP_RELEASE = 18
OP_FSYNC = 20
OP_FLUSH = 25
OP_INIT = 26
OP_INTERRUPT = 36
OP_DESTROY = 38
OP_IOCTL = 39
OP_POLL = 40
OP_CUSE_INIT = 4096

NOTIFY_POLL = 1
IOCTL_COMPAT = 1 << 0
IOCTL_32BIT = 1 << 3
POLL_SCHEDULE_NOTIFY = 1 << 0
CUSE_UNRESTRICTED_IOCTL = 1 << 0
INT_REQ_BIT = 1

REPLY_TIMEOUT = 5.0


@dataclass(frozen=True)
class Message:
    """One server-to-kernel message, split at the out header."""

    raw: bytes
    len: int
    error: int
    unique: int
    body: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Message:
        assert len(raw) >= OUT_HEADER.size, f"server sent {len(raw)} bytes, less than an out header"
        length, error, unique = OUT_HEADER.unpack_from(raw)
        return cls(raw, length, error, unique, raw[OUT_HEADER.size :])


def error_reply(unique: int, errno: int) -> bytes:
    """The exact bytes of an error reply."""
    return OUT_HEADER.pack(OUT_HEADER.size, -errno, unique)


def ok_reply(unique: int, body: bytes = b"") -> bytes:
    return OUT_HEADER.pack(OUT_HEADER.size + len(body), 0, unique) + body


@dataclass
class KernelPeer:
    """The kernel's end of the channel. ``unique`` values count up in steps of 2 like
    the kernel's, so INTERRUPT ids (unique | 1) never collide with request ids."""

    sock: trio.socket.SocketType
    next_unique: int = 2
    stash: list[Message] = field(default_factory=list)

    # --- raw I/O ----------------------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        await self.sock.send(data)

    async def send(
        self, opcode: int, body: bytes = b"", *, unique: int | None = None, pid: int = 4242, extlen: int = 0
    ) -> int:
        if unique is None:
            unique = self.next_unique
            self.next_unique += 2
        header = IN_HEADER.pack(IN_HEADER.size + len(body), opcode, unique, 0, 0, 0, pid, extlen, 0)
        await self.send_raw(header + body)
        return unique

    async def recv(self, timeout: float = REPLY_TIMEOUT) -> Message:
        """The next message in arrival order (stashed ones first)."""
        if self.stash:
            return self.stash.pop(0)
        with trio.fail_after(timeout):
            raw = await self.sock.recv(1 << 20)
        assert raw, "server closed the channel"
        return Message.parse(raw)

    async def reply_to(self, unique: int, timeout: float = REPLY_TIMEOUT) -> Message:
        """The reply for ``unique``; other messages that arrive first are stashed."""
        for i, message in enumerate(self.stash):
            if message.unique == unique:
                return self.stash.pop(i)
        with trio.fail_after(timeout):
            while True:
                raw = await self.sock.recv(1 << 20)
                assert raw, "server closed the channel"
                message = Message.parse(raw)
                if message.unique == unique:
                    return message
                self.stash.append(message)

    async def expect_silence(self, seconds: float = 0.15) -> None:
        """Assert that the server sends nothing for a while."""
        assert not self.stash, f"unexpected stashed messages {self.stash}"
        with trio.move_on_after(seconds):
            raw = await self.sock.recv(1 << 20)
            raise AssertionError(f"expected no message, got {raw!r}")

    # --- requests ---------------------------------------------------------------------

    async def cuse_init(self, major: int = 7, minor: int = 38, flags: int = CUSE_UNRESTRICTED_IOCTL) -> int:
        return await self.send(OP_CUSE_INIT, CUSE_INIT_IN.pack(major, minor, 0, flags))

    async def open(self, flags: int = 2) -> int:
        return await self.send(OP_OPEN, OPEN_IN.pack(flags, 0))

    async def read(self, fh: int, size: int, flags: int = 2) -> int:
        return await self.send(OP_READ, READ_IN.pack(fh, 0, size, 0, 0, flags, 0))

    async def write(self, fh: int, data: bytes, flags: int = 2, size: int | None = None) -> int:
        declared = len(data) if size is None else size
        return await self.send(OP_WRITE, WRITE_IN.pack(fh, 0, declared, 0, 0, flags, 0) + data)

    async def ioctl(
        self, fh: int, cmd: int, arg: int = 0, in_data: bytes = b"", out_size: int = 0, flags: int = 0
    ) -> int:
        return await self.send(OP_IOCTL, IOCTL_IN.pack(fh, flags, cmd, arg, len(in_data), out_size) + in_data)

    async def poll(self, fh: int, kh: int, flags: int = 0, events: int = 0) -> int:
        return await self.send(OP_POLL, POLL_IN.pack(fh, kh, flags, events))

    async def interrupt(self, target: int) -> int:
        return await self.send(OP_INTERRUPT, INTERRUPT_IN.pack(target), unique=target | INT_REQ_BIT)

    async def release(self, fh: int, flags: int = 2) -> int:
        return await self.send(OP_RELEASE, RELEASE_IN.pack(fh, flags, 0, 0))

    async def flush(self, fh: int) -> int:
        return await self.send(OP_FLUSH, FLUSH_IN.pack(fh, 0, 0, 0))

    async def fsync(self, fh: int, flags: int = 0) -> int:
        return await self.send(OP_FSYNC, FSYNC_IN.pack(fh, flags, 0))

    async def destroy(self) -> int:
        return await self.send(OP_DESTROY)

    # --- request + reply --------------------------------------------------------------

    async def call_open(self, flags: int = 2) -> int:
        unique = await self.open(flags)
        reply = await self.reply_to(unique)
        assert reply.error == 0 and len(reply.raw) == 32, reply
        return OPEN_OUT.unpack(reply.body)[0]


@dataclass
class Harness:
    peer: KernelPeer
    session: Any
    device: Any
    init_reply: Message | None
    server_sock: socket.socket
    nursery: trio.Nursery


@asynccontextmanager
async def cuse_server(device: Any, options: Any, *, kernel_minor: int = 38) -> AsyncIterator[Harness]:
    """Run a CuseSession for ``device`` against a fresh KernelPeer, handshake done."""
    from vtpm_cuse.cuse.session import CuseSession

    server_sock, kernel_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    peer = KernelPeer(trio.socket.from_stdlib_socket(kernel_sock))
    session = CuseSession(server_sock.fileno(), device, options)
    try:
        async with trio.open_nursery() as nursery:
            init_unique = await peer.cuse_init(minor=kernel_minor)
            await nursery.start(session.run)
            init_reply = await peer.reply_to(init_unique)
            yield Harness(peer, session, device, init_reply, server_sock, nursery)
            nursery.cancel_scope.cancel()
    finally:
        server_sock.close()
        kernel_sock.close()
