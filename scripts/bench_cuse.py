#!/usr/bin/env python3
"""GetRandom round trips through three character devices in the same kernel.

* ``vtpm``  -- our /dev/vtpm-bench (vtpm-cuse cuse: CUSE protocol + device + TPM engine),
* ``echo``  -- the bare echo CUSE device (vtpm_cuse.cuse.echo): the transport floor,
               what any Python CUSE device pays before doing work,
* ``proxy`` -- Debian's swtpm (libtpms, C) behind the kernel's vtpm proxy, /dev/tpmN:
               the in-kernel TPM character device a VM or container would otherwise use.

One round trip = write() of a TPM2_GetRandom(16) command + read() of the response
(the echo device returns the command bytes instead). Needs root and /dev/cuse; on a
kernel without CUSE it re-runs itself inside the cusevm guest (scripts/cusevm/run.sh),
where absolute times are 10-30x slower than native: compare the ratios.

    .venv/bin/python scripts/bench_cuse.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
VENV_PYTHON = PROJECT / ".venv" / "bin" / "python"
RUN_SH = PROJECT / "scripts" / "cusevm" / "run.sh"
GET_RANDOM_16 = struct.pack(">HIIH", 0x8001, 12, 0x17B, 16)
START_TIMEOUT = 180.0
WARMUP = 20


@dataclass(frozen=True)
class Figure:
    name: str
    median_ms: float
    mean_ms: float
    p90_ms: float
    rounds: int


def measure(node: str, rounds: int, expect: int | None) -> Figure:
    fd = os.open(node, os.O_RDWR)
    try:
        samples: list[float] = []
        for i in range(WARMUP + rounds):
            start = time.perf_counter()
            os.write(fd, GET_RANDOM_16)
            response = os.read(fd, 4096)
            elapsed = time.perf_counter() - start
            if expect is not None and len(response) != expect:
                raise RuntimeError(f"{node}: {len(response)}-byte response, expected {expect}")
            if expect is None and struct.unpack_from(">I", response, 6)[0] != 0:
                raise RuntimeError(f"{node}: GetRandom failed: {response.hex()}")
            if i >= WARMUP:
                samples.append(elapsed * 1000)
    finally:
        os.close(fd)
    samples.sort()
    return Figure(
        node, statistics.median(samples), statistics.fmean(samples), samples[int(len(samples) * 0.9) - 1], rounds
    )


def wait_for(path: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.05)


def bench(rounds: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="bench-cuse-"))
    vtpm_name, echo_name = "vtpm-bench", "vtpm-bench-echo"
    bin_dir = Path(sys.executable).parent
    processes: list[subprocess.Popen[str]] = []
    try:
        subprocess.run(
            [
                str(bin_dir / "vtpm-cuse"),
                "cuse",
                "-n",
                vtpm_name,
                "--tpm2",
                "--tpmstate",
                f"dir={work / 'vtpm'}",
                "--flags",
                "not-need-init,startup-clear",
            ],
            check=True,
            timeout=START_TIMEOUT,
        )
        echo = subprocess.Popen(
            [sys.executable, "-m", "vtpm_cuse.cuse.echo", echo_name], cwd=PROJECT, stdout=subprocess.PIPE, text=True
        )
        processes.append(echo)
        (work / "swtpm").mkdir()
        proxy = subprocess.Popen(
            [
                "swtpm",
                "chardev",
                "--vtpm-proxy",
                "--tpm2",
                "--tpmstate",
                f"dir={work / 'swtpm'}",
                "--flags",
                "not-need-init,startup-clear",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(proxy)
        assert proxy.stdout is not None and echo.stdout is not None
        line = proxy.stdout.readline()
        match = re.search(r"(/dev/tpm\d+)", line)
        if not match:
            raise RuntimeError(f"swtpm chardev --vtpm-proxy said: {line!r}")
        tpm_node = match.group(1)
        echo.stdout.readline()  # "ready /dev/NAME"
        for node in (f"/dev/{vtpm_name}", f"/dev/{echo_name}", tpm_node):
            wait_for(node)
        figures = {
            "vtpm": measure(f"/dev/{vtpm_name}", rounds, None),
            "echo": measure(f"/dev/{echo_name}", rounds, len(GET_RANDOM_16)),
            "proxy": measure(tpm_node, rounds, None),
        }
    finally:
        subprocess.run(["swtpm_ioctl", "-s", f"/dev/{vtpm_name}"], capture_output=True, timeout=60)
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)
    result: dict[str, object] = {name: vars(f) for name, f in figures.items()}
    result["ratios"] = {
        "vtpm/echo": figures["vtpm"].median_ms / figures["echo"].median_ms,
        "vtpm/proxy": figures["vtpm"].median_ms / figures["proxy"].median_ms,
        "echo/proxy": figures["echo"].median_ms / figures["proxy"].median_ms,
    }
    return result


def report(result: dict[str, object]) -> None:
    print(f"GetRandom(16) round trip, write()+read(), {result['vtpm']['rounds']} rounds:")  # type: ignore[index]
    labels = {"vtpm": "vtpm-cuse CUSE device", "echo": "echo CUSE device (floor)", "proxy": "swtpm + kernel vtpm proxy"}
    for key, label in labels.items():
        f = result[key]
        print(
            f"  {label:28s} median {f['median_ms']:7.3f} ms  mean {f['mean_ms']:7.3f} ms  "  # type: ignore[index]
            f"p90 {f['p90_ms']:7.3f} ms"
        )  # type: ignore[index]
    for name, value in result["ratios"].items():  # type: ignore[union-attr]
        print(f"  ratio {name:10s} {value:6.2f}")


def run_in_vm(rounds: int) -> int:
    """No CUSE here: run this script inside the cusevm guest and relay its output."""
    share = Path(tempfile.mkdtemp(prefix="bench-cuse-share-"))
    script = share / "bench.sh"
    python = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
    script.write_text(
        "#!/bin/bash\n"
        f"export PATH={shlex.quote(str(python.parent))}:$PATH\n"
        f"cd {shlex.quote(str(PROJECT))}\n"
        f"exec {shlex.quote(str(python))} scripts/bench_cuse.py --rounds {rounds} --json /share/bench-cuse.json\n"
    )
    print("no /dev/cuse here: running the benchmark in the cusevm guest (QEMU TCG)...", flush=True)
    return subprocess.run([str(RUN_SH), str(script), str(share / "out")]).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.rounds < 10:
        parser.error("--rounds must be at least 10")
    if not os.path.exists("/dev/cuse"):
        return run_in_vm(args.rounds)
    if os.geteuid() != 0:
        print("bench_cuse: needs root (/dev/cuse and the vtpm proxy are root-only)", file=sys.stderr)
        return 1
    result = bench(args.rounds)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
