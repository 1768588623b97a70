"""Turn ``--server`` / ``--ctrl`` endpoints into real sockets.

This happens synchronously, before the daemon forks and before trio runs,
so that "address in use" or a bad inherited descriptor is reported on the
terminal with a non-zero exit instead of disappearing into a daemon's log.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

__all__ = [
    "DEFAULT_BIND_ADDRESS",
    "DEFAULT_UNIX_SOCKET_MODE",
    "LISTEN_BACKLOG",
    "ConnectedFd",
    "Endpoint",
    "EndpointError",
    "ListeningFd",
    "OpenedEndpoint",
    "TcpEndpoint",
    "UnixEndpoint",
    "open_endpoint",
]

DEFAULT_BIND_ADDRESS = "127.0.0.1"
"""swtpm binds TCP servers to loopback unless ``bindaddr=`` says otherwise."""
DEFAULT_UNIX_SOCKET_MODE = 0o770
"""swtpm's default permission bits of a UnixIO socket file."""

LISTEN_BACKLOG = socket.SOMAXCONN
"""A real listen queue (the kernel caps it at net.core.somaxconn): clients that connect
at once wait there for their turn.  swtpm listens with a backlog of 1, so of many
clients connecting together most are refused or retried for seconds."""


@dataclass(frozen=True)
class TcpEndpoint:
    """Listen on ``bindaddr:port`` (TCP)."""

    port: int
    bindaddr: str = DEFAULT_BIND_ADDRESS


@dataclass(frozen=True)
class UnixEndpoint:
    """Listen on a UnixIO socket file created at ``path`` with ``mode``."""

    path: Path
    mode: int = DEFAULT_UNIX_SOCKET_MODE


@dataclass(frozen=True)
class ListeningFd:
    """An inherited descriptor of a socket to accept connections on."""

    fd: int


@dataclass(frozen=True)
class ConnectedFd:
    """An inherited descriptor of an already connected client."""

    fd: int


Endpoint: TypeAlias = TcpEndpoint | UnixEndpoint | ListeningFd | ConnectedFd


class EndpointError(Exception):
    """A socket could not be created, bound or adopted (message names the endpoint)."""


@dataclass
class OpenedEndpoint:
    """Either a socket to accept clients on, or one already connected client."""

    description: str
    listener: socket.socket | None = None
    connected: socket.socket | None = None
    unlink_on_close: Path | None = field(default=None)
    """UnixIO socket file we created and remove again at exit."""

    def close(self) -> None:
        for sock in (self.listener, self.connected):
            if sock is not None:
                sock.close()
        if self.unlink_on_close is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unlink_on_close.unlink()


def _tcp_listener(endpoint: TcpEndpoint) -> socket.socket:
    family = socket.AF_INET6 if ":" in endpoint.bindaddr else socket.AF_INET
    try:
        sock = socket.create_server((endpoint.bindaddr, endpoint.port), family=family, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        raise EndpointError(
            f"cannot listen on TCP {endpoint.bindaddr}:{endpoint.port}: {exc.strerror or exc}",
        ) from exc
    return sock


def _remove_stale_socket(path: Path) -> None:
    """A socket file left by a previous run would make bind() fail; anything else is kept."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise EndpointError(f"cannot listen on {path}: it exists and is not a socket")
    path.unlink()


def _unix_listener(endpoint: UnixEndpoint) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _remove_stale_socket(endpoint.path)
        sock.bind(os.fspath(endpoint.path))
        os.chmod(endpoint.path, endpoint.mode)
        sock.listen(LISTEN_BACKLOG)
    except EndpointError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        raise EndpointError(f"cannot listen on UnixIO socket {endpoint.path}: {exc.strerror or exc}") from exc
    return sock


def _adopt_fd(fd: int, what: str) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise EndpointError(f"{what}: fd {fd} is not a usable socket: {exc.strerror}") from exc
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise EndpointError(f"{what}: fd {fd} is not a stream socket")
    return sock


def open_endpoint(endpoint: Endpoint, what: str) -> OpenedEndpoint:
    """Create/adopt the socket for ``endpoint``; ``what`` (``"--server"``) prefixes errors.

    An inherited ``fd=`` is inspected: a listening socket is accepted on, a
    connected one is served directly.
    """
    if isinstance(endpoint, TcpEndpoint):
        return OpenedEndpoint(f"tcp {endpoint.bindaddr}:{endpoint.port}", listener=_tcp_listener(endpoint))
    if isinstance(endpoint, UnixEndpoint):
        return OpenedEndpoint(
            f"unixio {endpoint.path}",
            listener=_unix_listener(endpoint),
            unlink_on_close=endpoint.path,
        )
    sock = _adopt_fd(endpoint.fd, what)
    listening = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    if isinstance(endpoint, ListeningFd) and listening:
        return OpenedEndpoint(f"listening fd {endpoint.fd}", listener=sock)
    if isinstance(endpoint, ConnectedFd) and listening:
        sock.detach()
        raise EndpointError(f"{what}: clientfd={endpoint.fd} is a listening socket, not a client")
    return OpenedEndpoint(f"connected fd {endpoint.fd}", connected=sock)
