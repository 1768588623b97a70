"""CUSE_INIT without an event loop (vtpm_cuse.cuse.handshake.handshake_blocking), which the
daemon uses to create its node before the heavy imports: the kernel sees the same reply as
from the session's own handshake, refusals get their error reply, and a session handed the
handshaken channel serves it (first any request the probe already read) without a second
CUSE_INIT.  The kernel's side is the simulated peer's (tests/cuse_peer.py)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest
import trio

from tests.cuse_peer import (
    CUSE_INIT_IN,
    CUSE_INIT_OUT,
    IN_HEADER,
    OP_CUSE_INIT,
    OP_OPEN,
    OPEN_IN,
    KernelPeer,
    Message,
    cuse_server,
)
from vtpm_cuse.cuse.echo import EchoDevice
from vtpm_cuse.cuse.handshake import CuseOptions, Handshake, HandshakeError, handshake_blocking
from vtpm_cuse.cuse.session import CuseSession

OPTIONS = CuseOptions("vtpm-handshake-test", dev_major=240, dev_minor=7, max_read=8192, max_write=16384)


def _request(opcode: int, unique: int, body: bytes) -> bytes:
    return IN_HEADER.pack(IN_HEADER.size + len(body), opcode, unique, 0, 0, 0, 4242, 0, 0) + body


def _cuse_init(unique: int = 2, minor: int = 38) -> bytes:
    return _request(OP_CUSE_INIT, unique, CUSE_INIT_IN.pack(7, minor, 0, 0))


@pytest.fixture
def channel() -> Iterator[tuple[int, socket.socket]]:
    """(server fd, non-blocking as the daemon opens /dev/cuse; the kernel's socket)."""
    server, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.setblocking(False)
    kernel.settimeout(5)
    try:
        yield server.fileno(), kernel
    finally:
        server.close()
        kernel.close()


def test_the_reply_is_the_sessions_own(channel: tuple[int, socket.socket]) -> None:
    fd, kernel = channel
    kernel.send(_cuse_init(minor=38))
    handshake = handshake_blocking(fd, OPTIONS)
    blocking = Message.parse(kernel.recv(1 << 16))
    assert handshake == Handshake((7, 38), handshake.protocol_minor, None)

    async def on_trio() -> Message:
        async with cuse_server(EchoDevice(), OPTIONS, kernel_minor=38) as h:
            assert h.init_reply is not None
            return h.init_reply

    session_reply = trio.run(on_trio)
    assert blocking.raw[8:] == session_reply.raw[8:]  # all but len/error: the same bytes
    assert (blocking.len, blocking.error, blocking.unique) == (len(blocking.raw), 0, 2)
    major, minor, _unused, _flags, max_read, max_write, dev_major, dev_minor = CUSE_INIT_OUT.unpack_from(blocking.body)
    assert (major, minor, max_read, max_write, dev_major, dev_minor) == (
        7,
        handshake.protocol_minor,
        8192,
        16384,
        240,
        7,
    )
    assert blocking.body[CUSE_INIT_OUT.size :] == b"DEVNAME=vtpm-handshake-test\0"


@pytest.mark.parametrize(
    ("first", "why"),
    [
        (_request(OP_OPEN, 2, OPEN_IN.pack(2, 0)), "expected CUSE_INIT first, got OPEN"),
        (_cuse_init(minor=10), "kernel offers FUSE protocol 7.10"),
    ],
)
def test_a_first_message_it_cannot_serve_gets_eproto(
    channel: tuple[int, socket.socket], first: bytes, why: str
) -> None:
    fd, kernel = channel
    kernel.send(first)
    with pytest.raises(HandshakeError, match=why):
        handshake_blocking(fd, OPTIONS)
    reply = Message.parse(kernel.recv(1 << 16))
    assert (reply.error, reply.unique, reply.body) == (-errno.EPROTO, 2, b"")


def test_a_channel_closed_before_cuse_init(channel: tuple[int, socket.socket]) -> None:
    fd, kernel = channel
    kernel.shutdown(socket.SHUT_WR)
    with pytest.raises(HandshakeError, match="closed before CUSE_INIT"):
        handshake_blocking(fd, OPTIONS)


def test_a_handshaken_channel_is_served_from_its_first_request(channel: tuple[int, socket.socket]) -> None:
    fd, kernel = channel
    # What the kernel queues while the daemon imports: an OPEN right behind CUSE_INIT.
    kernel.send(_cuse_init())
    kernel.send(_request(OP_OPEN, 4, OPEN_IN.pack(2, 0)))
    handshake = handshake_blocking(fd, OPTIONS)
    kernel.recv(1 << 16)  # the CUSE_INIT reply
    assert handshake.pending is not None  # the probe read the OPEN already

    async def serve() -> None:
        peer = KernelPeer(trio.socket.from_stdlib_socket(kernel.dup()))
        async with trio.open_nursery() as nursery:
            session = await nursery.start(CuseSession(fd, EchoDevice(), OPTIONS, handshake=handshake).run)
            assert session.kernel_version == (7, 38)
            opened = await peer.reply_to(4)  # served first, without a second CUSE_INIT
            assert opened.error == 0, opened
            fh = int.from_bytes(opened.body[:8], "little")
            unique = await peer.write(fh, b"ping")
            assert (await peer.reply_to(unique)).error == 0
            unique = await peer.read(fh, 64)
            assert (await peer.reply_to(unique)).body == b"ping"
            nursery.cancel_scope.cancel()

    trio.run(serve)
