#!/usr/bin/env python3
"""The CUSE server's own cost per GetRandom round trip, natively, without /dev/cuse.

A child process plays the kernel on one end of a SOCK_SEQPACKET socketpair (message
boundaries like /dev/cuse): CUSE_INIT, OPEN, then WRITE(GetRandom(16)) + READ per
round trip, each waiting for its reply.  The parent runs the real CuseSession with
the vTPM device (CUSE protocol + device + Vtpm + engine) or the echo device (the
protocol floor).  Where /dev/cuse exists only in the TCG guest, this is the quick,
profilable view of the same code path; ``--profile`` prints the cProfile of the
session's data thread (which serves the round trips) and of the trio thread.

    .venv/bin/python scripts/bench_cuse_session.py [--rounds N] [--device vtpm|echo] [--tss] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import socket
import statistics
import struct
import sys
import tempfile
import time

import trio

IN_HEADER = struct.Struct("=IIQQIIIHH")
OUT_HEADER = struct.Struct("=IiQ")
OP_OPEN, OP_READ, OP_WRITE, OP_POLL, OP_CUSE_INIT = 14, 15, 16, 40, 4096
RW_IN = struct.Struct("=QQIIQII")
POLL_IN = struct.Struct("=QQII")  # fh, kh, flags (1 = SCHEDULE_NOTIFY), events
POLLIN = 1
GET_RANDOM_16 = struct.pack(">HIIH", 0x8001, 12, 0x17B, 16)


def kernel(sock: socket.socket, rounds: int, write_pipe: int, tss: bool) -> None:
    """The simulated kernel: returns per-round-trip seconds through ``write_pipe``."""
    unique = [2]

    def call(opcode: int, body: bytes) -> bytes:
        u = unique[0]
        unique[0] += 2
        sock.send(IN_HEADER.pack(IN_HEADER.size + len(body), opcode, u, 0, 0, 0, 1, 0, 0) + body)
        while True:
            reply = sock.recv(1 << 17)
            length, error, got = OUT_HEADER.unpack_from(reply)
            if got == u:
                if error:
                    raise OSError(-error, f"opcode {opcode}")
                return reply[OUT_HEADER.size :]

    call(OP_CUSE_INIT, struct.pack("=IIII", 7, 38, 0, 0))
    flags = os.O_RDWR | (os.O_NONBLOCK if tss else 0)
    fh = struct.unpack_from("=Q", call(OP_OPEN, struct.pack("=II", flags, 0)))[0]
    samples = []
    for _ in range(rounds + 50):
        start = time.perf_counter()
        call(OP_WRITE, RW_IN.pack(fh, 0, len(GET_RANDOM_16), 0, 0, flags, 0) + GET_RANDOM_16)
        if tss:  # tpm2-tss' device TCTI: O_NONBLOCK, poll() for POLLIN, then read()
            while not struct.unpack_from("=I", call(OP_POLL, POLL_IN.pack(fh, 7, 1, POLLIN)))[0] & POLLIN:
                while sock.recv(1 << 17)[8:16] != bytes(8):  # wait for the NOTIFY_POLL (unique 0)
                    pass
        call(OP_READ, RW_IN.pack(fh, 0, 4096, 0, 0, flags, 0))
        samples.append(time.perf_counter() - start)
    os.write(write_pipe, struct.pack("=d", statistics.median(samples[50:])))
    sock.close()


async def serve(device_kind: str, fd: int) -> None:
    from vtpm_cuse.cuse.session import CuseOptions, CuseSession

    if device_kind == "echo":
        from vtpm_cuse.cuse.echo import EchoDevice

        device = EchoDevice()
    else:
        from vtpm_cuse.device import VtpmDevice
        from vtpm_cuse.vtpm import StartupMode, Vtpm, VtpmFlags

        flags = VtpmFlags(not_need_init=True, startup=StartupMode.CLEAR)
        vtpm = Vtpm(tempfile.mkdtemp(prefix="bench-session-"), flags=flags)
        await vtpm.boot()
        device = VtpmDevice(vtpm)
    await CuseSession(fd, device, CuseOptions("bench")).run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--device", choices=("vtpm", "echo"), default="vtpm")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--tss", action="store_true", help="O_NONBLOCK write + poll + read, as tpm2-tss' device TCTI")
    args = parser.parse_args()
    server_sock, kernel_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    result_r, result_w = os.pipe()
    child = os.fork()
    if child == 0:
        server_sock.close()
        kernel(kernel_sock, args.rounds, result_w, args.tss)
        os._exit(0)
    kernel_sock.close()
    profiles = {"data thread": cProfile.Profile(), "trio thread": cProfile.Profile()} if args.profile else {}
    if profiles:
        profile_data_thread(profiles["data thread"])
        profiles["trio thread"].enable()
    trio.run(serve, args.device, server_sock.fileno())
    if profiles:
        profiles["trio thread"].disable()
    os.waitpid(child, 0)
    (median,) = struct.unpack("=d", os.read(result_r, 8))
    print(f"{args.device}: WRITE+READ round trip median {median * 1e6:.1f} us over {args.rounds} rounds")
    for name, profile in profiles.items():
        print(f"--- {name} ---")
        for order in ("cumulative", "tottime"):
            pstats.Stats(profile).sort_stats(order).print_stats(18)
    return 0


def profile_data_thread(profile: cProfile.Profile) -> None:
    """Run the session's data thread under ``profile`` (cProfile sees one thread only)."""
    from vtpm_cuse.cuse.session import CuseSession

    serve_thread = CuseSession._data_thread

    def profiled(session: CuseSession) -> None:
        profile.enable()
        try:
            serve_thread(session)
        finally:
            profile.disable()

    CuseSession._data_thread = profiled  # type: ignore[method-assign]


if __name__ == "__main__":
    sys.exit(main())
