"""The data channel's response writer on real sockets: one send() normally, and the
rest waited for when the client's buffer is full (vtpm_cuse.sockets.data_channel)."""

from __future__ import annotations

import os
import socket
import threading
import time

from vtpm_cuse.sockets.data_channel import _send_all

#: Far more than the socket buffers hold, so send() takes only part of it.
LARGE = 1 << 20
SMALL_BUFFER = 4096


def _pair() -> tuple[socket.socket, socket.socket]:
    server, client = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    server.setblocking(False)
    return server, client


def test_a_short_response_goes_out_in_one_send() -> None:
    server, client = _pair()
    with server, client:
        response = bytes.fromhex("80010000000a00000000")
        assert _send_all(server, response, 5.0)
        assert client.recv(64) == response


def test_a_response_larger_than_the_buffers_arrives_whole_and_in_order() -> None:
    server, client = _pair()
    data = os.urandom(LARGE)
    received = bytearray()

    def read_slowly() -> None:
        while len(received) < LARGE:
            chunk = client.recv(65536)
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=read_slowly)
    with server, client:
        reader.start()
        assert _send_all(server, data, 10.0)
        reader.join(10)
    assert bytes(received) == data


def test_a_client_that_never_reads_is_given_up_after_the_timeout() -> None:
    server, client = _pair()
    with server, client:
        start = time.monotonic()
        assert not _send_all(server, os.urandom(LARGE), 0.2)
        assert time.monotonic() - start >= 0.2  # it waited for room before giving up


def test_a_client_gone_before_the_response_is_reported_not_raised() -> None:
    server, client = _pair()
    client.close()
    with server:
        assert not _send_all(server, os.urandom(LARGE), 1.0)
