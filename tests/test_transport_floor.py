"""scripts/transport_floor.py, the benchmark's raw-transport anchor, answers what the
benchmark sends as a TPM would (so its round trip is a fair floor) and stops on CMD_SHUTDOWN."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from tests.support.daemon import REPO
from tests.support.net import free_port, recv_exact, tpm_roundtrip

CMD_INIT = (0x02).to_bytes(4, "big") + bytes(4)
CMD_SHUTDOWN = (0x03).to_bytes(4, "big")


def _connect(port: int) -> socket.socket:
    deadline = time.monotonic() + 30
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=30)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def test_floor_answers_like_a_tpm_and_stops_on_shutdown() -> None:
    data_port, ctrl_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "transport_floor.py"), "--tpm2", "--tpmstate", "dir=/nonexistent",
         "--server", f"type=tcp,port={data_port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={ctrl_port},bindaddr=127.0.0.1"],
    )  # fmt: skip
    try:
        with _connect(ctrl_port) as ctrl, _connect(data_port) as data:
            ctrl.sendall(CMD_INIT)
            assert recv_exact(ctrl, 4) == bytes(4)
            startup = tpm_roundtrip(data, bytes.fromhex("80010000000c000001440000"))
            assert startup == bytes.fromhex("80010000000a00000000")
            for count in (0, 16, 32, 48):
                response = tpm_roundtrip(data, bytes.fromhex("80010000000c0000017b") + count.to_bytes(2, "big"))
                assert response[6:10] == bytes(4)
                assert int.from_bytes(response[10:12], "big") == count == len(response) - 12
            ctrl.sendall(CMD_SHUTDOWN)
            assert recv_exact(ctrl, 4) == bytes(4)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
