#!/usr/bin/env python3
"""Engine time per command, in process, side by side with Debian's swtpm.

Our engine is called directly (Engine.execute); swtpm (libtpms, C) can only be
reached over its socket, so a loopback echo server measures that transport's
floor in the same run and the swtpm figure is shown both raw and minus the
floor.  Usage: python scripts/bench_engine.py [--rounds N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from support.swtpm_oracle import SwtpmOracle  # noqa: E402
from support.tpm_client import command, tpm2b, u16, u32  # noqa: E402
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH  # noqa: E402
from vtpm_cuse.tpm.engine import Engine  # noqa: E402

STARTUP = bytes.fromhex("80010000000c000001440000")
COMMANDS = {
    "GetRandom(32)": command(TPM_CC.GetRandom, u16(32)),
    "PCR_Extend(sha256)": command(
        TPM_CC.PCR_Extend, u32(1) + u16(TPM_ALG.SHA256) + hashlib.sha256(b"m").digest(), u32(16), b""
    ),
    "PCR_Read(sha256, 8 PCRs)": command(TPM_CC.PCR_Read, u32(1) + u16(TPM_ALG.SHA256) + b"\x03\xff\x00\x00"),
    "Hash(1 KiB, sha256)": command(TPM_CC.Hash, tpm2b(bytes(1024)) + u16(TPM_ALG.SHA256) + u32(TPM_RH.OWNER)),
}


def per_call(fn, rounds: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds


def echo_floor(rounds: int, size: int) -> float:
    """Round trip of ``size`` bytes over loopback TCP to a thread that echoes a 10-byte header."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(8192):
                conn.sendall(data[:10])

    threading.Thread(target=serve, daemon=True).start()
    client = socket.create_connection(("127.0.0.1", port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = bytes(size)

    def once():
        client.sendall(payload)
        client.recv(8192)

    try:
        return per_call(once, rounds)
    finally:
        client.close()
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    engine = Engine()
    engine.execute(STARTUP)
    oracle = SwtpmOracle()
    oracle.execute(STARTUP)
    oracle.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print(
        f"{'command':28} {'ours in-process':>16} {'swtpm socket':>13} {'echo floor':>11} "
        f"{'swtpm-floor':>12} {'ratio':>7}"
    )
    try:
        for name, cmd in COMMANDS.items():
            ours = per_call(lambda cmd=cmd: engine.execute(cmd), args.rounds)
            theirs = per_call(lambda cmd=cmd: oracle.execute(cmd), args.rounds)
            floor = echo_floor(args.rounds, len(cmd))
            engine_only = max(theirs - floor, 1e-9)
            print(
                f"{name:28} {ours * 1e6:13.1f} us {theirs * 1e6:10.1f} us {floor * 1e6:8.1f} us "
                f"{engine_only * 1e6:9.1f} us {ours / engine_only:6.1f}x"
            )
    finally:
        oracle.close()


if __name__ == "__main__":
    main()
