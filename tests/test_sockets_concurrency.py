"""The control channel answers while a TPM command runs on the Vtpm's worker thread.

In-process: both channels are served by :func:`vtpm_cuse.sockets.server.serve`
for a real :class:`Vtpm` whose engine is slowed down, and clients use real
loopback sockets from threads.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import trio

from tests.support.daemon import ctrl_roundtrip, tpm_roundtrip
from vtpm_cuse.sockets.endpoints import TcpEndpoint, open_endpoint
from vtpm_cuse.sockets.server import SocketServerConfig, serve
from vtpm_cuse.vtpm import Vtpm, VtpmFlags

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
GET_RANDOM_8 = bytes.fromhex("80010000000c0000017b0008")
SLOW = 1.0


def test_control_answers_during_a_slow_command(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path / "state", flags=VtpmFlags(not_need_init=True))
    data = open_endpoint(TcpEndpoint(0), "--server")
    ctrl = open_endpoint(TcpEndpoint(0), "--ctrl")
    data_port = data.listener.getsockname()[1]
    ctrl_port = ctrl.listener.getsockname()[1]
    timings: dict[str, float] = {}

    def client() -> None:
        with socket.create_connection(("127.0.0.1", data_port), timeout=10) as s:
            assert tpm_roundtrip(s, STARTUP_CLEAR)[6:10] == bytes(4)
            engine = vtpm.engine
            original = engine.execute

            def slow_execute(command: bytes, locality: int = 0, **options) -> bytes:
                time.sleep(SLOW)
                return original(command, locality, **options)

            engine.execute = slow_execute  # type: ignore[method-assign]
            start = time.monotonic()
            s.sendall(GET_RANDOM_8)
            time.sleep(0.1)  # the command is now on the worker
            with socket.create_connection(("127.0.0.1", ctrl_port), timeout=10) as c:
                assert ctrl_roundtrip(c, (1).to_bytes(4, "big"), 8) == bytes.fromhex("000000000001ffff")
                assert ctrl_roundtrip(c, (5).to_bytes(4, "big") + bytes([1]), 4) == bytes(4)
                timings["control"] = time.monotonic() - start
            response = s.recv(100)
            timings["command"] = time.monotonic() - start
            assert response[6:10] == bytes(4)
            with socket.create_connection(("127.0.0.1", ctrl_port), timeout=10) as c:
                assert ctrl_roundtrip(c, (3).to_bytes(4, "big"), 4) == bytes(4)  # SHUTDOWN ends serve()

    async def main() -> None:
        thread = threading.Thread(target=client)
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve, vtpm, SocketServerConfig(data=data, ctrl=ctrl))
                await trio.sleep(0.2)
                thread.start()
        thread.join()

    trio.run(main)
    assert timings["control"] < SLOW / 2, timings
    assert timings["command"] >= SLOW, timings
    assert vtpm.locality == 1
