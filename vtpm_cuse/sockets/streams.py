"""Small helpers on trio sockets shared by both channels."""

from __future__ import annotations

import trio

__all__ = ["send_all"]


async def send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    """trio sockets have no ``sendall``; a response must go out whole."""
    view = memoryview(data)
    while view:
        sent = await sock.send(view)
        view = view[sent:]
