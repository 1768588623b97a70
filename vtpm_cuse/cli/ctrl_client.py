"""Client side of the control channel: send one PTM request, get its typed response.

:class:`ControlClient` is the interface the ``vtpm-ioctl`` commands are
written against; :class:`SocketControlClient` implements it for swtpm's
big-endian socket control channel (TCP or UnixIO).  A character-device
client (ioctls on a CUSE device) can implement the same three methods
later without touching the commands.
"""

from __future__ import annotations

import select
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass

from ioctl_defs import CommandSpec, Part

__all__ = [
    "ControlClient",
    "ControlConnectError",
    "ControlIOError",
    "SocketControlClient",
    "TcpAddress",
    "UnixAddress",
    "RESPONSE_TIMEOUT",
]

RESPONSE_TIMEOUT = 20.0
"""Seconds to wait for a response, like swtpm_ioctl's 20 s poll."""


class ControlConnectError(OSError):
    """The control channel could not be reached (message is the user-facing text)."""


class ControlIOError(OSError):
    """Sending a request or reading its response failed."""


@dataclass(frozen=True)
class TcpAddress:
    host: str
    port: int


@dataclass(frozen=True)
class UnixAddress:
    path: str


class ControlClient(ABC):
    """One control connection; requests are answered strictly in order."""

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Write raw bytes (a request header, or a streamed payload)."""

    @abstractmethod
    def receive(self, spec: CommandSpec) -> Part:
        """Read and decode the response to ``spec``'s command."""

    def request(self, spec: CommandSpec, request: Part | None = None) -> Part:
        """Send one complete request and return its response."""
        self.send(spec.pack_socket_request(request))
        return self.receive(spec)

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SocketControlClient(ControlClient):
    """The swtpm socket control channel: ``u32 cmd`` + BE body in, BE response half out."""

    def __init__(self, sock: socket.socket, timeout: float = RESPONSE_TIMEOUT) -> None:
        self._sock = sock
        self._timeout = timeout

    @classmethod
    def connect(cls, address: TcpAddress | UnixAddress, timeout: float = RESPONSE_TIMEOUT) -> "SocketControlClient":
        if isinstance(address, UnixAddress):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(address.path)
            except OSError as exc:
                sock.close()
                raise ControlConnectError(exc.errno, f"Connect failed: {exc.strerror}") from exc
            return cls(sock, timeout)
        try:
            sock = socket.create_connection((address.host, address.port), timeout=timeout)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ControlConnectError(
                exc.errno,
                f"Could not connect to host '{address.host}' on port '{address.port}' "
                f"using TCP socket: {reason}",
            ) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, timeout)

    def send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise ControlIOError(exc.errno, exc.strerror or str(exc)) from exc

    def _read_some(self, limit: int) -> bytes:
        ready, _, _ = select.select([self._sock], [], [], self._timeout)
        if not ready:
            raise ControlIOError(0, "Timeout waiting for a response")
        try:
            return self._sock.recv(limit)
        except OSError as exc:
            raise ControlIOError(exc.errno, exc.strerror or str(exc)) from exc

    def receive(self, spec: CommandSpec) -> Part:
        """Read until the response is complete (its length is known from its header)."""
        response_type = spec.socket_response
        buf = b""
        while len(buf) < (wanted := response_type.socket_wanted(buf)):
            chunk = self._read_some(max(wanted - len(buf), 1))
            if not chunk:
                raise ControlIOError(
                    0, f"connection closed after {len(buf)} of {wanted} response bytes"
                )
            buf += chunk
        return response_type.unpack_socket(buf)

    def close(self) -> None:
        self._sock.close()
