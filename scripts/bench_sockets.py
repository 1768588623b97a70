#!/usr/bin/env python3
"""GetRandom round trips, start-up time and memory over the socket transport, vs swtpm.

Starts ``vtpm-cuse socket`` (this tree, via ``python -m vtpm_cuse.cli.daemon``),
optionally the same daemon from another source tree (``--baseline DIR``, e.g. a
copy taken before a change, so before/after/reference come from one run), and
Debian's ``swtpm socket --tpm2`` side by side on free loopback ports, and measures

* ``persistent``: N GetRandom commands over one TCP connection,
* ``reconnect``:  N commands, a new TCP connection for each (tpm2-tss' swtpm TCTI),
* start-up: exec to the control socket accepting a connection (``listen``) and
  exec to the answer of the first GetRandom (``first cmd``, ``--flags
  not-need-init,startup-clear``), median of ``--starts`` launches,
* memory: VmRSS and RssAnon of the idle daemon and after ``--memory-commands``
  more commands (growth would show a leak).

``--floor`` adds scripts/transport_floor.py, a Python server that answers without
any TPM work: the least a Python process costs per command on this transport, so
the ratios split ours into interpreter floor and TPM.  ``--pin CPU`` runs every
server and this client on that one CPU: on this 2-CPU VM a wake-up across CPUs
costs ~20 us, and where the scheduler put the two ends made unpinned runs of the
same tree differ by 2x (42 vs 67-86 us).

Usage: python scripts/bench_sockets.py [--count N] [--bytes B] [--baseline DIR] [--floor] [--pin CPU]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.net import free_port, is_listening, recv_exact, tpm_roundtrip  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
CMD_INIT = (0x02).to_bytes(4, "big") + bytes(4)
CMD_SHUTDOWN = (0x03).to_bytes(4, "big")
START_TIMEOUT = 15.0
POLL_SECONDS = 0.0005


def get_random(count: int) -> bytes:
    return bytes.fromhex("80010000000c0000017b") + count.to_bytes(2, "big")


@dataclass
class Server:
    name: str
    base: list[str]
    state: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = REPO
    data_port: int = 0
    ctrl_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def argv(self, *extra: str) -> list[str]:
        self.data_port, self.ctrl_port = free_port(), free_port()
        return [
            *self.base,
            "--tpm2",
            "--tpmstate",
            f"dir={self.state}",
            "--server",
            f"type=tcp,port={self.data_port},bindaddr=127.0.0.1",
            "--ctrl",
            f"type=tcp,port={self.ctrl_port},bindaddr=127.0.0.1",
            *extra,
        ]

    def spawn(self, *extra: str) -> float:
        argv = self.argv(*extra)
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, cwd=self.cwd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        return start

    def wait_connectable(self, port: int) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not is_listening(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start: {self.proc.stderr.read()!r}")
            time.sleep(POLL_SECONDS)

    def start(self) -> None:
        self.spawn()
        self.wait_connectable(self.ctrl_port)
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

    def memory_kib(self) -> tuple[int, int]:
        """(VmRSS, RssAnon) of the server process in KiB."""
        assert self.proc is not None
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                values[key] = int(rest.split()[0])
        return values["VmRSS"], values["RssAnon"]

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process (all its threads) has used so far."""
        assert self.proc is not None
        # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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
        self.proc = None


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


def time_startup(server: Server, command: bytes) -> tuple[float, float]:
    """(exec -> control socket connectable, exec -> first command answered) in seconds."""
    start = server.spawn("--flags", "not-need-init,startup-clear")
    try:
        server.wait_connectable(server.ctrl_port)
        listening = time.perf_counter() - start
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with server.connect() as s:
                    response = tpm_roundtrip(s, command)
                if response[6:10] == bytes(4):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name}: no answer to the first command")
            time.sleep(POLL_SECONDS)
        return listening, time.perf_counter() - start
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="round trips per measurement")
    parser.add_argument("--bytes", type=int, default=32, help="GetRandom size")
    parser.add_argument("--baseline", type=Path, help="also run the daemon from this source tree ('before')")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds the round trips are split into")
    parser.add_argument("--starts", type=int, default=5, help="launches per start-up measurement")
    parser.add_argument("--memory-commands", type=int, default=100_000, help="commands between memory readings")
    parser.add_argument("--floor", action="store_true", help="also run the Python transport floor (no TPM work)")
    parser.add_argument("--pin", type=int, metavar="CPU", help="run the servers and this client on this CPU only")
    args = parser.parse_args()
    if shutil.which("swtpm") is None:
        print("swtpm is not installed (apt-get install swtpm)", file=sys.stderr)
        return 1
    command = get_random(args.bytes)
    pin = [] if args.pin is None else ["taskset", "-c", str(args.pin)]
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    daemon = [*pin, sys.executable, "-m", "vtpm_cuse.cli.daemon", "socket"]
    with tempfile.TemporaryDirectory(prefix="bench-sockets-") as tmp:
        servers = [Server("vtpm-cuse", daemon, Path(tmp) / "vtpm-cuse")]
        if args.baseline is not None:
            env = dict(os.environ, PYTHONPATH=str(args.baseline.resolve()))
            servers.append(Server("before", daemon, Path(tmp) / "before", env=env, cwd=args.baseline.resolve()))
        if args.floor:
            servers.append(
                Server(
                    "floor", [*pin, sys.executable, str(REPO / "scripts" / "transport_floor.py")], Path(tmp) / "floor"
                )
            )
        servers.append(Server("swtpm", [*pin, "swtpm", "socket"], Path(tmp) / "swtpm"))
        for server in servers:
            server.state.mkdir()
        results: dict[tuple[str, str], list[float]] = {}
        startup: dict[str, tuple[float, float]] = {}
        memory: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
        cpu: dict[str, float] = {}
        try:
            for server in servers:
                samples = [time_startup(server, command) for _ in range(args.starts)]
                startup[server.name] = (
                    statistics.median(s[0] for s in samples),
                    statistics.median(s[1] for s in samples),
                )
            for server in servers:
                server.start()
            modes: dict[str, Callable[[Server, bytes, int], list[float]]] = {
                "persistent": time_persistent,
                "reconnect": time_reconnect,
            }
            # Interleaved: every round measures each server in turn, so a burst of load
            # on this shared machine hits all of them alike instead of one whole column.
            for mode, measure in modes.items():
                for server in servers:
                    measure(server, command, min(100, args.count))  # warm-up
                    results[(server.name, mode)] = []
                per_round = max(1, args.count // args.rounds)
                for _ in range(args.rounds):
                    for server in servers:
                        results[(server.name, mode)] += measure(server, command, per_round)
            for server in servers:
                idle = server.memory_kib()
                cpu_before = server.cpu_seconds()
                with server.connect() as s:
                    for _ in range(args.memory_commands):
                        tpm_roundtrip(s, command)
                cpu[server.name] = (server.cpu_seconds() - cpu_before) / max(1, args.memory_commands)
                memory[server.name] = (idle, server.memory_kib())
        finally:
            for server in servers:
                server.stop()
    print(
        f"TPM2_GetRandom({args.bytes}) round trips, {args.count} per measurement in {args.rounds} interleaved rounds,"
        f" loopback TCP; {f'all on CPU {args.pin}' if args.pin is not None else 'unpinned'};"
        f" load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'server':<10} {'mode':<11} {'mean us':>9} {'median us':>10} {'p99 us':>9} {'cmds/s':>9}")
    for (name, mode), times in results.items():
        mean = statistics.fmean(times)
        p99 = sorted(times)[int(len(times) * 0.99) - 1]
        print(
            f"{name:<10} {mode:<11} {mean * 1e6:9.1f} {statistics.median(times) * 1e6:10.1f} "
            f"{p99 * 1e6:9.1f} {1 / mean:9.0f}"
        )
    names = [s.name for s in servers if s.name != "swtpm"]
    for mode in ("persistent", "reconnect"):
        theirs = statistics.median(results[("swtpm", mode)])
        for name in names:
            ours = statistics.median(results[(name, mode)])
            print(f"ratio {name}/swtpm ({mode}, median): {ours / theirs:.2f}x")
            if args.floor and name != "floor":
                floor = statistics.median(results[("floor", mode)])
                print(f"ratio {name}/floor ({mode}, median): {ours / floor:.2f}x")
    print(f"start-up, median of {args.starts} (exec -> ctrl socket connectable / -> first GetRandom answered):")
    for name, (listening, first) in startup.items():
        print(f"  {name:<10} listen {listening * 1e3:7.1f} ms   first cmd {first * 1e3:7.1f} ms")
    print(f"server CPU time per command (user + system, all threads; {args.memory_commands} persistent commands):")
    for name, seconds in cpu.items():
        print(f"  {name:<10} {seconds * 1e6:7.1f} us")
    print(f"memory (VmRSS / RssAnon), idle and after {args.memory_commands} more commands:")
    for name, ((rss0, anon0), (rss1, anon1)) in memory.items():
        print(
            f"  {name:<10} idle {rss0 / 1024:6.1f} / {anon0 / 1024:6.1f} MB   "
            f"after {rss1 / 1024:6.1f} / {anon1 / 1024:6.1f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
