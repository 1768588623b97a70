#!/usr/bin/env python3
"""Engine time per command, in process, side by side with Debian's swtpm (libtpms).

Our engine is called directly (``Engine.execute``).  libtpms can only be reached
through swtpm, so its engine time is what swtpm's round trip of a command costs
*beyond* its floor: the round trip of a command of the same length that libtpms
rejects at the header (an unimplemented command code, TPM_RC_COMMAND_CODE).  Both
go over the same Unix socket with the same client code, so the transport, swtpm's
loop and the client cancel out instead of being estimated by a separate echo server.

Why the figures are stable on a busy machine: the three measurements of a command
(ours, swtpm, swtpm's floor) are interleaved in ``--rounds`` rounds of ``--batch``
calls each, and every column is the median of the per-round means, so a burst of
load hits all three alike and is voted out.

``--pin CPU`` puts swtpm and this process on one CPU: on this 2-CPU VM a wake-up
across CPUs costs ~20 us and made swtpm's round trip vary 15-80 us between runs, more
than libtpms' whole engine time, so unpinned ``libtpms`` figures can be noise.

Usage: python scripts/bench_engine.py [--rounds N] [--batch N] [--pin CPU]
"""

from __future__ import annotations

import argparse
import hashlib
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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from support.net import tpm_roundtrip  # noqa: E402
from support.tpm_client import command, tpm2b, u16, u32  # noqa: E402
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH  # noqa: E402
from vtpm_cuse.tpm.engine import Engine  # noqa: E402
from vtpm_cuse.tpm.errors import TPM_RC  # noqa: E402
from vtpm_cuse.tpm.wire import HEADER_SIZE  # noqa: E402

STARTUP = bytes.fromhex("80010000000c000001440000")
COMMANDS = {
    "GetRandom(32)": command(TPM_CC.GetRandom, u16(32)),
    "PCR_Extend(sha256)": command(
        TPM_CC.PCR_Extend, u32(1) + u16(TPM_ALG.SHA256) + hashlib.sha256(b"m").digest(), u32(16), b""
    ),
    "PCR_Read(sha256, 8 PCRs)": command(TPM_CC.PCR_Read, u32(1) + u16(TPM_ALG.SHA256) + b"\x03\xff\x00\x00"),
    "Hash(1 KiB, sha256)": command(TPM_CC.Hash, tpm2b(bytes(1024)) + u16(TPM_ALG.SHA256) + u32(TPM_RH.OWNER)),
}
#: A command code no TPM implements (below TPM_CC_FIRST): libtpms answers it from the header alone.
UNIMPLEMENTED_CC = 0x00000100
#: TPM_RC_RETRY, TPM_RC_TESTING: libtpms did not execute the command (first use self-tests).
NOT_EXECUTED = (0x922, 0x90A)
START_TIMEOUT = 10.0


def floor_command(cmd: bytes) -> bytes:
    """``cmd`` with its command code replaced by an unimplemented one: same length, same tag."""
    return cmd[:6] + UNIMPLEMENTED_CC.to_bytes(4, "big") + cmd[HEADER_SIZE:]


def response_code(response: bytes) -> int:
    return int.from_bytes(response[6:10], "big")


class Swtpm:
    """``swtpm socket --tpm2`` with its data channel on a Unix socket (no loopback TCP stack)."""

    def __init__(self, directory: Path, pin: list[str]) -> None:
        if shutil.which("swtpm") is None:
            raise SystemExit("swtpm is not installed (apt-get install swtpm)")
        path = directory / "data.sock"
        self.proc = subprocess.Popen(
            [
                *pin,
                "swtpm",
                "socket",
                "--tpm2",
                "--tpmstate",
                f"dir={directory}",
                "--server",
                f"type=unixio,path={path}",
                "--ctrl",
                f"type=unixio,path={directory / 'ctrl.sock'}",
                "--flags",
                "not-need-init",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"swtpm did not start: {self.proc.stderr.read()!r}") from None
                time.sleep(0.02)

    def execute(self, cmd: bytes) -> bytes:
        return tpm_roundtrip(self.sock, cmd)

    def execute_until_done(self, cmd: bytes) -> bytes:
        """Repeat while libtpms answers "not executed" (it self-tests an algorithm on first use)."""
        for _ in range(5):
            response = self.execute(cmd)
            if response_code(response) not in NOT_EXECUTED:
                break
        return response

    def close(self) -> None:
        self.sock.close()
        self.proc.terminate()
        self.proc.wait()


@dataclass
class Row:
    """Per-call means (seconds) of each round, per column."""

    ours: list[float] = field(default_factory=list)
    ours_floor: list[float] = field(default_factory=list)
    """Our engine answering the floor command (its own header rejection), in process."""
    swtpm: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    libtpms: list[float] = field(default_factory=list)
    """swtpm minus floor of the same round."""


def per_call(fn: Callable[[], object], batch: int) -> float:
    start = time.perf_counter()
    for _ in range(batch):
        fn()
    return (time.perf_counter() - start) / batch


def check(name: str, what: str, response: bytes, expected: int) -> None:
    if response_code(response) != expected:
        raise SystemExit(f"{name}: {what} answered 0x{response_code(response):x}, expected 0x{expected:x}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41, help="interleaved rounds per command (median over them)")
    parser.add_argument("--batch", type=int, default=200, help="calls per measurement in a round")
    parser.add_argument("--pin", type=int, metavar="CPU", help="run swtpm and this process on this CPU only")
    args = parser.parse_args()
    pin = [] if args.pin is None else ["taskset", "-c", str(args.pin)]
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    engine = Engine()
    check("engine", "Startup", engine.execute(STARTUP), TPM_RC.SUCCESS)
    rows = {name: Row() for name in COMMANDS}
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        swtpm = Swtpm(Path(tmp), pin)
        try:
            check("swtpm", "Startup", swtpm.execute_until_done(STARTUP), TPM_RC.SUCCESS)
            for name, cmd in COMMANDS.items():
                floor = floor_command(cmd)
                check(name, "our engine", engine.execute(cmd), TPM_RC.SUCCESS)
                check(name, "swtpm", swtpm.execute_until_done(cmd), TPM_RC.SUCCESS)
                check(name, "swtpm (floor)", swtpm.execute(floor), TPM_RC.COMMAND_CODE)
                check(name, "our engine (floor)", engine.execute(floor), TPM_RC.COMMAND_CODE)
                row = rows[name]
                for _ in range(args.rounds):
                    row.ours.append(per_call(lambda cmd=cmd: engine.execute(cmd), args.batch))
                    row.ours_floor.append(per_call(lambda floor=floor: engine.execute(floor), args.batch))
                    theirs = per_call(lambda cmd=cmd: swtpm.execute(cmd), args.batch)
                    base = per_call(lambda floor=floor: swtpm.execute(floor), args.batch)
                    row.swtpm.append(theirs)
                    row.floor.append(base)
                    row.libtpms.append(theirs - base)
        finally:
            swtpm.close()
    print(f"medians of {args.rounds} interleaved rounds x {args.batch} calls; swtpm over a Unix socket")
    print(
        f"{'command':26} {'ours in-process':>16} {'ours floor':>11} {'swtpm':>10} {'floor':>10} {'libtpms':>10} "
        f"{'ratio':>7} {'ours spread':>12}"
    )
    for name, row in rows.items():
        ours = statistics.median(row.ours)
        libtpms = statistics.median(row.libtpms)
        quartiles = statistics.quantiles(row.ours, n=4)
        ratio = f"{ours / libtpms:6.2f}x" if libtpms > 0 else "   n/a"
        print(
            f"{name:26} {ours * 1e6:13.1f} us {statistics.median(row.ours_floor) * 1e6:8.1f} us "
            f"{statistics.median(row.swtpm) * 1e6:7.1f} us "
            f"{statistics.median(row.floor) * 1e6:7.1f} us {libtpms * 1e6:7.1f} us {ratio} "
            f"{(quartiles[2] - quartiles[0]) * 1e6:9.1f} us"
        )
    print(
        "libtpms = swtpm - floor (floor: the same-size command rejected at the header, TPM_RC_COMMAND_CODE);"
        " ratio = ours / libtpms; ours floor = our engine rejecting that command; spread = IQR of ours"
    )


if __name__ == "__main__":
    main()
