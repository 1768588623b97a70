#!/usr/bin/env python3
"""The raw transport floor for scripts/bench_sockets.py: the fastest a Python server can
answer a TPM command over swtpm's TCP sockets, doing no TPM work at all.

It takes the benchmark's command line shape (``--server type=tcp,port=N,...``,
``--ctrl type=tcp,port=M,...``; every other option is ignored), answers each
control message with a success result (CMD_SHUTDOWN then exits) and each TPM
command, read whole by its header's size, with a canned success response: for
TPM2_GetRandom(n) the n bytes asked for (zeros), else the bare header.  One
thread, blocking sockets, one client at a time on each channel -- the least a
Python process can do per command, so ``vtpm-cuse / floor`` is what our TPM
adds and ``floor / swtpm`` is what the interpreter alone costs against C.

Usage: python scripts/transport_floor.py --server type=tcp,port=N --ctrl type=tcp,port=M [ignored ...]
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys

HEADER = 10
GET_RANDOM = 0x17B
CMD_INIT = 0x02
CMD_SHUTDOWN = 0x03
CTRL_BODY = {CMD_INIT: 4}
"""Control commands with a fixed body the floor must read past (others have none here)."""


def port_of(option: str) -> int:
    """The ``port=`` value of a ``--server``/``--ctrl`` option string."""
    for part in option.split(","):
        key, _, value = part.partition("=")
        if key == "port":
            return int(value)
    raise SystemExit(f"transport_floor: no port= in {option!r}")


def listen(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


def recv_exact(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def answer(command: bytes) -> bytes:
    """A success response to ``command``: GetRandom gets its bytes, anything else a header."""
    code = int.from_bytes(command[6:10], "big")
    body = b""
    if code == GET_RANDOM and len(command) >= HEADER + 2:
        count = int.from_bytes(command[10:12], "big")
        body = count.to_bytes(2, "big") + bytes(count)
    return b"\x80\x01" + (HEADER + len(body)).to_bytes(4, "big") + bytes(4) + body


def serve_data(conn: socket.socket) -> bool:
    """Answer one command; False when the client has gone."""
    header = recv_exact(conn, HEADER)
    if header is None:
        return False
    rest = recv_exact(conn, max(0, int.from_bytes(header[2:6], "big") - HEADER))
    if rest is None:
        return False
    conn.sendall(answer(header + rest))
    return True


def serve_ctrl(conn: socket.socket) -> bool | None:
    """Answer one control message; False when the client has gone, None on CMD_SHUTDOWN."""
    head = recv_exact(conn, 4)
    if head is None:
        return False
    code = int.from_bytes(head, "big")
    if recv_exact(conn, CTRL_BODY.get(code, 0)) is None:
        return False
    conn.sendall(bytes(4))
    return None if code == CMD_SHUTDOWN else True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--ctrl", required=True)
    args, _ignored = parser.parse_known_args(argv)
    selector = selectors.DefaultSelector()
    for option, role in ((args.server, "data"), (args.ctrl, "ctrl")):
        selector.register(listen(port_of(option)), selectors.EVENT_READ, ("listen", role))
    while True:
        for key, _ in selector.select():
            kind, role = key.data
            if kind == "listen":
                conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(conn, selectors.EVENT_READ, ("conn", role))
                continue
            conn = key.fileobj  # type: ignore[assignment]
            served = serve_data(conn) if role == "data" else serve_ctrl(conn)
            if served is None:
                return 0
            if not served:
                selector.unregister(conn)
                conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
