"""Loopback helpers shared by tests and benchmarks: free ports, exact reads,
one TPM command round trip over a stream socket."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on ``host:port``.  A connect to a free port in the
    ephemeral range can pick that same port as its source and "succeed" by TCP
    simultaneous open, connected to itself: that is no listener (a daemon still
    starting was once taken as ready this way, and its first client was refused)."""
    try:
        with socket.create_connection((host, port), timeout=1) as probe:
            return probe.getsockname() != probe.getpeername()
    except OSError:
        return False


def free_port_pair() -> tuple[int, int]:
    """Two consecutive free ports: tpm2-tss' swtpm TCTI expects control = data + 1."""
    for _ in range(100):
        first = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", first + 1))
        except OSError:
            continue
        return first, first + 1
    raise RuntimeError("no two consecutive free ports")


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def tpm_roundtrip(sock: socket.socket, command: bytes) -> bytes:
    """Send a raw TPM command and read one complete response."""
    sock.sendall(command)
    header = recv_exact(sock, 10)
    return header + recv_exact(sock, int.from_bytes(header[2:6], "big") - 10)
