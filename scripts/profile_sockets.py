#!/usr/bin/env python3
"""Where a command's time goes on the socket data path: cProfile on the data thread.

Starts ``vtpm-cuse socket`` (from this tree, or ``--tree DIR``) with its data thread
(``DataChannel._serve``) under cProfile, sends ``--count`` GetRandom commands over one
persistent TCP connection, stops the daemon and prints, per command, the data thread's
time split into waiting in poll(), recv(), send(), the Vtpm (turn, lock and persist
checks), the engine and the dispatcher, and the data channel's own Python; then the
top functions by own time.  cProfile roughly doubles Python's cost, so read the split
as proportions; the unprofiled round trip is ``scripts/bench_sockets.py``'s job.

Usage: python scripts/profile_sockets.py [--count N] [--bytes B] [--tree DIR] [--top N]
"""

from __future__ import annotations

import argparse
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from support.net import free_port, recv_exact, tpm_roundtrip  # noqa: E402

CMD_SHUTDOWN = (0x03).to_bytes(4, "big")
START_TIMEOUT = 30.0

#: Run in the daemon's interpreter: wrap the data thread's loop in cProfile, then run the daemon.
_LAUNCHER = """
import cProfile, sys
from vtpm_cuse.sockets import data_channel
out = sys.argv.pop(1)
serve = data_channel.DataChannel._serve
def profiled(self, listener):
    profile = cProfile.Profile()
    profile.enable()
    try:
        serve(self, listener)
    finally:
        profile.disable()
        profile.dump_stats(out)
data_channel.DataChannel._serve = profiled
from vtpm_cuse.cli.daemon import main
main(sys.argv[1:])
"""


def get_random(count: int) -> bytes:
    return bytes.fromhex("80010000000c0000017b") + count.to_bytes(2, "big")


def run_daemon(tree: Path, state: Path, out: Path, command: bytes, count: int) -> None:
    data_port, ctrl_port = free_port(), free_port()
    argv = [sys.executable, "-c", _LAUNCHER, str(out), "socket", "--tpm2", "--tpmstate", f"dir={state}"]
    argv += ["--server", f"type=tcp,port={data_port},bindaddr=127.0.0.1"]
    argv += ["--ctrl", f"type=tcp,port={ctrl_port},bindaddr=127.0.0.1", "--flags", "not-need-init,startup-clear"]
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", data_port), timeout=10)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the daemon did not start") from None
                time.sleep(0.05)
        with sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(count):
                response = tpm_roundtrip(sock, command)
                if response[6:10] != bytes(4):
                    raise SystemExit(f"GetRandom answered {response[:10].hex()}")
        with socket.create_connection(("127.0.0.1", ctrl_port), timeout=10) as ctrl:
            ctrl.sendall(CMD_SHUTDOWN)
            recv_exact(ctrl, 4)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def per_command(stats: pstats.Stats, count: int, file_suffix: str, name: str, cumulative: bool = True) -> float:
    """Microseconds per command in the function (cumulative or own time); 0 if it never ran."""
    for (filename, _line, function), (_cc, _nc, own, cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if filename.endswith(file_suffix) and function == name:
            return (cum if cumulative else own) / count * 1e6
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--bytes", type=int, default=32, help="GetRandom size")
    parser.add_argument("--tree", type=Path, default=REPO, help="source tree of the daemon (e.g. a baseline copy)")
    parser.add_argument("--top", type=int, default=20, help="functions listed by own time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="profile-sockets-") as tmp:
        out = Path(tmp) / "data-thread.prof"
        state = Path(tmp) / "state"
        state.mkdir()
        run_daemon(args.tree.resolve(), state, out, get_random(args.bytes), args.count)
        stats = pstats.Stats(str(out))
    n = args.count  # the daemon's own Startup (--flags startup-clear) does not pass the data thread
    total = per_command(stats, n, "data_channel.py", "_serve")
    poll = per_command(stats, n, "~", "<method 'poll' of 'select.poll' objects>")
    recv = per_command(stats, n, "~", "<method 'recv' of '_socket.socket' objects>")
    send = per_command(stats, n, "~", "<method 'send' of '_socket.socket' objects>")
    vtpm = per_command(stats, n, "vtpm.py", "execute_here")
    engine = per_command(stats, n, "engine.py", "execute")
    dispatcher = per_command(stats, n, "dispatcher.py", "execute")
    print(f"GetRandom({args.bytes}) x {args.count}, data thread under cProfile, us per command (profiled)")
    print(f"  {'function calls':58} {stats.total_calls / n:7.0f}")  # type: ignore[attr-defined]
    rows = [
        ("data thread, all", total),
        ("poll() (waiting for the client's next command)", poll),
        ("recv()", recv),
        ("send()", send),
        ("Vtpm.execute_here (turn, lock + persist checks, engine)", vtpm),
        ("  Engine.execute", engine),
        ("    Dispatcher.execute", dispatcher),
        ("data channel's own Python (framing, queue, bookkeeping)", total - poll - recv - send - vtpm),
    ]
    for label, value in rows:
        print(f"  {label:58} {value:7.1f}")
    print(f"top {args.top} by own time:")
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
