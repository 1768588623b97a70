#!/usr/bin/env python3
"""Round-trip latency of TPM2_GetRandom over the socket data channel.

Starts ``vtpm-cuse socket`` (this tree, via ``python -m vtpm_cuse.cli.daemon``)
and Debian's ``swtpm socket --tpm2`` side by side on free loopback ports,
initialises both the same way (CMD_INIT on the control channel, then
TPM2_Startup(CLEAR) on the data channel) and measures

* ``persistent``: N commands over one TCP connection,
* ``reconnect``:  N commands, a new TCP connection for each,

printing the mean/median per round trip and vtpm-cuse / swtpm ratios.

Usage: python scripts/bench_sockets.py [--count N] [--bytes B]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.net import free_port, recv_exact, tpm_roundtrip  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
CMD_INIT = (0x02).to_bytes(4, "big") + bytes(4)
CMD_SHUTDOWN = (0x03).to_bytes(4, "big")
START_TIMEOUT = 15.0


def get_random(count: int) -> bytes:
    return bytes.fromhex("80010000000c0000017b") + count.to_bytes(2, "big")


@dataclass
class Server:
    name: str
    argv: list[str]
    data_port: int
    ctrl_port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not start: {self.proc.stderr.read()!r}") from None
                time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", self.ctrl_port)) as c:
            c.sendall(CMD_INIT)
            if recv_exact(c, 4) != bytes(4):
                raise RuntimeError(f"{self.name}: CMD_INIT failed")
        with self.connect() as s:
            rc = tpm_roundtrip(s, STARTUP_CLEAR)[6:10]
            if rc != bytes(4):
                raise RuntimeError(f"{self.name}: TPM2_Startup answered {rc.hex()}")

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.data_port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=2) as c:
                c.sendall(CMD_SHUTDOWN)
                c.recv(4)
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def time_persistent(server: Server, command: bytes, count: int) -> list[float]:
    times = []
    with server.connect() as s:
        for _ in range(count):
            start = time.perf_counter()
            response = tpm_roundtrip(s, command)
            times.append(time.perf_counter() - start)
            assert response[6:10] == bytes(4), response.hex()
    return times


def time_reconnect(server: Server, command: bytes, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        with server.connect() as s:
            response = tpm_roundtrip(s, command)
        times.append(time.perf_counter() - start)
        assert response[6:10] == bytes(4), response.hex()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="round trips per measurement")
    parser.add_argument("--bytes", type=int, default=32, help="GetRandom size")
    args = parser.parse_args()
    if shutil.which("swtpm") is None:
        print("swtpm is not installed (apt-get install swtpm)", file=sys.stderr)
        return 1
    command = get_random(args.bytes)
    with tempfile.TemporaryDirectory(prefix="bench-sockets-") as tmp:
        servers = []
        for name, base in (
            ("vtpm-cuse", [sys.executable, "-m", "vtpm_cuse.cli.daemon", "socket"]),
            ("swtpm", ["swtpm", "socket"]),
        ):
            data_port, ctrl_port = free_port(), free_port()
            state = Path(tmp) / name
            state.mkdir()
            servers.append(
                Server(
                    name,
                    [
                        *base,
                        "--tpm2",
                        "--tpmstate",
                        f"dir={state}",
                        "--server",
                        f"type=tcp,port={data_port},bindaddr=127.0.0.1",
                        "--ctrl",
                        f"type=tcp,port={ctrl_port},bindaddr=127.0.0.1",
                    ],
                    data_port,
                    ctrl_port,
                )
            )
        results: dict[tuple[str, str], list[float]] = {}
        try:
            for server in servers:
                server.start()
            modes: dict[str, Callable[[Server, bytes, int], list[float]]] = {
                "persistent": time_persistent,
                "reconnect": time_reconnect,
            }
            for mode, measure in modes.items():
                for server in servers:
                    measure(server, command, min(100, args.count))  # warm-up
                    results[(server.name, mode)] = measure(server, command, args.count)
        finally:
            for server in servers:
                server.stop()
    print(f"TPM2_GetRandom({args.bytes}) round trips, {args.count} per measurement, loopback TCP")
    print(f"{'server':<10} {'mode':<11} {'mean us':>9} {'median us':>10} {'p99 us':>9} {'cmds/s':>9}")
    for (name, mode), times in results.items():
        mean = statistics.fmean(times)
        p99 = sorted(times)[int(len(times) * 0.99) - 1]
        print(
            f"{name:<10} {mode:<11} {mean * 1e6:9.1f} {statistics.median(times) * 1e6:10.1f} "
            f"{p99 * 1e6:9.1f} {1 / mean:9.0f}"
        )
    for mode in ("persistent", "reconnect"):
        ours = statistics.fmean(results[("vtpm-cuse", mode)])
        theirs = statistics.fmean(results[("swtpm", mode)])
        print(f"ratio vtpm-cuse/swtpm ({mode}): {ours / theirs:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
