"""Client side of the control channel: send one PTM request, get its typed response.

:class:`ControlClient` is the interface the ``vtpm-ioctl`` commands are
written against; :class:`SocketControlClient` implements it for swtpm's
big-endian socket control channel (TCP or UnixIO), :class:`DeviceControlClient`
for ioctls on a CUSE character device.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass

from ioctl_defs import CommandSpec, Part, host_abi
from ioctl_defs.ioc import IocDir

__all__ = [
    "ControlClient",
    "ControlConnectError",
    "ControlIOError",
    "DeviceControlClient",
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

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SocketControlClient(ControlClient):
    """The swtpm socket control channel: ``u32 cmd`` + BE body in, BE response half out."""

    def __init__(self, sock: socket.socket, timeout: float = RESPONSE_TIMEOUT) -> None:
        self._sock = sock
        self._timeout = timeout

    @classmethod
    def connect(cls, address: TcpAddress | UnixAddress, timeout: float = RESPONSE_TIMEOUT) -> SocketControlClient:
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
                f"Could not connect to host '{address.host}' on port '{address.port}' using TCP socket: {reason}",
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
                raise ControlIOError(0, f"connection closed after {len(buf)} of {wanted} response bytes")
            buf += chunk
        return response_type.unpack_socket(buf)

    def close(self) -> None:
        self._sock.close()


class DeviceControlClient(ControlClient):
    """The CUSE character device: each request is one ``ioctl()`` with the tpm_ioctl.h
    struct in host byte order, numbered for this interpreter's ABI (swtpm_ioctl's
    char-device path).  ``read``/``write`` carry state blobs when
    SWTPM_IOCTL_BUFFERSIZE asks for the read()/write() transfer."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def open(cls, path: str) -> DeviceControlClient:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise ControlConnectError(exc.errno, f"Unable to open device '{path}': {exc.strerror}") from exc
        if not stat.S_ISCHR(os.fstat(fd).st_mode):
            os.close(fd)
            raise ControlConnectError(0, f"'{path}' is not a character device")
        return cls(fd, path)

    def request(self, spec: CommandSpec, request: Part | None = None) -> Part:
        abi = host_abi()
        buf = bytearray(spec.ioctl_size(abi))
        if spec.direction & IocDir.WRITE:
            buf[:] = (request if request is not None else spec.request()).pack_ioctl(abi)
        try:
            fcntl.ioctl(self.fd, spec.ioctl_number(abi), buf, True)
        except OSError as exc:
            raise ControlIOError(exc.errno, exc.strerror or str(exc)) from exc
        return spec.response.unpack_ioctl(bytes(buf), abi)

    def send(self, data: bytes) -> None:
        self.write(data)

    def receive(self, spec: CommandSpec) -> Part:
        raise ControlIOError(0, "a character device answers inside the ioctl; nothing to receive")

    def read(self, size: int) -> bytes:
        try:
            return os.read(self.fd, size)
        except OSError as exc:
            raise ControlIOError(exc.errno, exc.strerror or str(exc)) from exc

    def write(self, data: bytes) -> int:
        try:
            return os.write(self.fd, data)
        except OSError as exc:
            raise ControlIOError(exc.errno, exc.strerror or str(exc)) from exc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
