#!/usr/bin/env python3
"""Load on the socket data channel: many per-command clients at once, plus hostile ones.

Starts ``vtpm-cuse socket`` (this tree) -- or, with ``--swtpm``, Debian's
``swtpm socket`` for comparison -- then, for ``--seconds``, keeps ``--clients``
connections in flight: each connects, sends TPM2_GetRandom(8), reads the answer
and closes (tpm2-tss' swtpm TCTI style).  Meanwhile one client stays connected
and idle, one sends a byte every 0.5 s, and every tenth connection vanishes
mid-command or before reading its answer.  Prints connections, answers, errors
(no answer within ``--timeout``, refused, reset), the slowest answer, and the
daemon's peak RSS and open descriptors (sampled from /proc).

    .venv/bin/python scripts/load_sockets.py [--clients 200] [--seconds 20] [--swtpm]

``--burst N`` instead: N per-command clients connecting at once (all connected
before any is answered) on the data channel (GetRandom), then N on the control
channel (CMD_GET_CAPABILITY), then N of each mixed; then ``--vanish R`` rounds of
clients that go away mid-command, mid-response, mid-message and mid-blob.
Prints per burst: connections, duration, errors, answered, the most later-sent
clients answered before one (order), the daemon's peak RSS and fds; after the
vanishing rounds its fds and RSS beside their values before.  With ``--swtpm``
both servers run, interleaved (ours, swtpm, ours, ...), ``--repeat`` times.

    .venv/bin/python scripts/load_sockets.py --burst 1000 --vanish 2000 --swtpm --repeat 3
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.load_clients import (  # noqa: E402
    CMD_GET_CAPABILITY,
    GET_CAPABILITY_RESPONSE_SIZE,
    GET_RANDOM_8_RESPONSE_SIZE,
    ProcessUsage,
    Request,
    burst,
    vanishing_rounds,
)
from support.net import free_port, recv_exact  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GET_RANDOM_8 = bytes.fromhex("80010000000c0000017b0008")
RESPONSE_SIZE = 20
STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
CMD_INIT = (0x02).to_bytes(4, "big") + bytes(4)
CMD_SHUTDOWN = (0x03).to_bytes(4, "big")


@dataclass
class Tally:
    connections: int = 0
    answered: int = 0
    vanished: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    slowest: float = 0.0
    peak_rss_kib: int = 0
    peak_fds: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


@dataclass
class Pending:
    sock: socket.socket
    started: float
    received: bytes = b""
    vanish: bool = False


def start_server(swtpm: bool, state: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    data_port, ctrl_port = free_port(), free_port()
    base = ["swtpm", "socket"] if swtpm else [sys.executable, "-m", "vtpm_cuse.cli.daemon", "socket"]
    argv = [
        *base,
        "--tpm2",
        "--tpmstate",
        f"dir={state}",
        "--server",
        f"type=tcp,port={data_port},bindaddr=127.0.0.1",
        "--ctrl",
        f"type=tcp,port={ctrl_port},bindaddr=127.0.0.1",
    ]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", ctrl_port), timeout=5) as c:
                c.sendall(CMD_INIT)
                if recv_exact(c, 4) != bytes(4):
                    raise RuntimeError("CMD_INIT failed")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.05)
    with socket.create_connection(("127.0.0.1", data_port), timeout=30) as s:
        s.sendall(STARTUP_CLEAR)
        recv_exact(s, 10)
    return proc, data_port, ctrl_port


def sample(pid: int, tally: Tally, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    tally.peak_rss_kib = max(tally.peak_rss_kib, int(line.split()[1]))
            tally.peak_fds = max(tally.peak_fds, len(os.listdir(f"/proc/{pid}/fd")))
        except OSError:
            return
        stop.wait(0.05)


def dribble(port: int, stop: threading.Event) -> None:
    """A client sending one byte every half second, for as long as the run lasts."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            while not stop.wait(0.5):
                s.send(b"\x80")
    except OSError:
        pass


def run_load(port: int, clients: int, seconds: float, timeout: float, tally: Tally, polite: bool) -> None:
    selector = selectors.DefaultSelector()
    in_flight: dict[socket.socket, Pending] = {}
    end = time.monotonic() + seconds
    counter = 0

    def launch() -> None:
        nonlocal counter
        counter += 1
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        tally.connections += 1
        pending = Pending(s, time.monotonic(), vanish=not polite and counter % 10 == 0)
        in_flight[s] = pending
        selector.register(s, selectors.EVENT_WRITE)

    def finish(pending: Pending) -> None:
        selector.unregister(pending.sock)
        pending.sock.close()
        del in_flight[pending.sock]

    while time.monotonic() < end or in_flight:
        while time.monotonic() < end and len(in_flight) < clients:
            launch()
        for key, events in selector.select(timeout=0.2):
            pending = in_flight[key.fileobj]  # type: ignore[index]
            try:
                if events & selectors.EVENT_WRITE:
                    if pending.vanish:
                        # half of them mid-command, the other half before the answer
                        pending.sock.send(GET_RANDOM_8[: 5 if tally.vanished % 2 else len(GET_RANDOM_8)])
                        tally.vanished += 1
                        finish(pending)
                        continue
                    pending.sock.send(GET_RANDOM_8)
                    selector.modify(pending.sock, selectors.EVENT_READ)
                    continue
                chunk = pending.sock.recv(4096)
            except ConnectionRefusedError:
                tally.error("refused")
                finish(pending)
                continue
            except OSError:
                tally.error("reset")
                finish(pending)
                continue
            pending.received += chunk
            if not chunk:
                tally.error("closed without answer")
                finish(pending)
            elif len(pending.received) >= RESPONSE_SIZE:
                if pending.received[6:10] == bytes(4):
                    tally.answered += 1
                else:
                    tally.error(f"rc {pending.received[6:10].hex()}")
                tally.slowest = max(tally.slowest, time.monotonic() - pending.started)
                finish(pending)
        now = time.monotonic()
        for pending in [p for p in in_flight.values() if now - p.started > timeout]:
            tally.error(f"no answer within {timeout:.0f} s")
            finish(pending)
    selector.close()


def stop_server(proc: subprocess.Popen[bytes], ctrl_port: int) -> None:
    try:
        with socket.create_connection(("127.0.0.1", ctrl_port), timeout=5) as c:
            c.sendall(CMD_SHUTDOWN)
            c.recv(4)
        proc.wait(20)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()


def burst_plan(kind: str, n: int, data_port: int, ctrl_port: int) -> list[Request]:
    data = Request(data_port, GET_RANDOM_8, GET_RANDOM_8_RESPONSE_SIZE)
    ctrl = Request(ctrl_port, CMD_GET_CAPABILITY, GET_CAPABILITY_RESPONSE_SIZE)
    if kind == "data":
        return [data] * n
    if kind == "ctrl":
        return [ctrl] * n
    return [data, ctrl] * n


def run_bursts(swtpm: bool, n: int, vanish: int, timeout: float) -> bool:
    """One server: the three bursts and the vanishing rounds; True when nothing failed."""
    name = "swtpm" if swtpm else "vtpm-cuse"
    ok = True
    with tempfile.TemporaryDirectory(prefix="load-sockets-") as tmp:
        proc, data_port, ctrl_port = start_server(swtpm, Path(tmp))
        try:
            usage = ProcessUsage(proc.pid)
            base_rss, base_fds = usage.sample()
            print(f"{name}: before: RSS {base_rss / 1024:.1f} MB, {base_fds} fds")
            for kind in ("data", "ctrl", "mixed"):
                with usage:
                    result = burst(burst_plan(kind, n, data_port, ctrl_port), timeout)
                order = " ".join(
                    f"{'ctrl' if k == CMD_GET_CAPABILITY else 'data'} {v}" for k, v in result.max_overtaken.items()
                )
                print(
                    f"  burst {kind:5} {result.clients:5} connections  {result.duration:6.2f} s  "
                    f"answered {result.answered}  errors {result.error_count} {result.errors or ''}  "
                    f"slowest {result.slowest:.2f} s  most overtaken: {order}  "
                    f"peak RSS {usage.peak_rss_kib / 1024:.1f} MB  peak fds {usage.peak_fds}"
                )
                ok = ok and result.error_count == 0
            if vanish:
                started = time.monotonic()
                made = vanishing_rounds(data_port, ctrl_port, vanish)
                time.sleep(1.0)  # let the daemon notice the last ones
                after = burst(burst_plan("mixed", 1, data_port, ctrl_port), timeout)
                rss, fds = usage.sample()
                print(
                    f"  vanishing: {made} connections in {time.monotonic() - started:.1f} s; afterwards "
                    f"RSS {rss / 1024:.1f} MB, {fds} fds (before {base_fds}), still answering: {after.answered == 2}"
                )
                ok = ok and after.answered == 2
        finally:
            stop_server(proc, ctrl_port)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200, help="connections in flight at once")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long new connections are made")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a client waits for its answer")
    parser.add_argument("--swtpm", action="store_true", help="load Debian's swtpm instead")
    parser.add_argument("--polite", action="store_true", help="no idle, slow or vanishing clients")
    parser.add_argument("--burst", type=int, default=0, help="N clients at once per channel (see above)")
    parser.add_argument("--vanish", type=int, default=0, help="rounds of vanishing clients after the bursts")
    parser.add_argument("--repeat", type=int, default=1, help="burst runs per server")
    args = parser.parse_args()
    if args.burst:
        ok = True
        for _ in range(args.repeat):
            for swtpm in (False, True) if args.swtpm else (False,):
                ok = run_bursts(swtpm, args.burst, args.vanish, args.timeout) and ok
        return 0 if ok else 1
    with tempfile.TemporaryDirectory(prefix="load-sockets-") as tmp:
        proc, data_port, ctrl_port = start_server(args.swtpm, Path(tmp))
        tally = Tally()
        stop = threading.Event()
        helpers = [threading.Thread(target=sample, args=(proc.pid, tally, stop))]
        idle = None
        if not args.polite:
            helpers.append(threading.Thread(target=dribble, args=(data_port, stop)))
            idle = socket.create_connection(("127.0.0.1", data_port))
        for helper in helpers:
            helper.start()
        started = time.monotonic()
        try:
            run_load(data_port, args.clients, args.seconds, args.timeout, tally, args.polite)
        finally:
            duration = time.monotonic() - started
            stop.set()
            for helper in helpers:
                helper.join()
            if idle is not None:
                idle.close()
            stop_server(proc, ctrl_port)
    name = "swtpm" if args.swtpm else "vtpm-cuse"
    errors = sum(tally.errors.values())
    hostile = "" if args.polite else " (+1 idle, +1 sending a byte per 0.5 s, 1 in 10 vanishing)"
    print(f"{name}: {args.clients} clients in flight for {args.seconds:.0f} s{hostile}")
    print(f"  connections {tally.connections}  answered {tally.answered}  vanished on purpose {tally.vanished}")
    print(f"  errors {errors} {tally.errors or ''}")
    rate = tally.answered / duration
    print(f"  duration {duration:.1f} s  slowest answer {tally.slowest:.2f} s  {rate:.0f} answers/s")
    print(f"  server peak RSS {tally.peak_rss_kib / 1024:.1f} MB  peak open fds {tally.peak_fds}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
