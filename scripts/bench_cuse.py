#!/usr/bin/env python3
"""GetRandom round trips through three character devices in the same kernel.

* ``vtpm``  -- our /dev/vtpm-bench (vtpm-cuse cuse: CUSE protocol + device + TPM engine),
* ``echo``  -- the bare echo CUSE device (vtpm_cuse.cuse.echo): the transport floor,
               what any Python CUSE device pays before doing work,
* ``proxy`` -- Debian's swtpm (libtpms, C) behind the kernel's vtpm proxy, /dev/tpmN:
               the in-kernel TPM character device a VM or container would otherwise use,
* ``before`` -- with ``--baseline DIR``: our device run from another source tree (a copy
               taken before a change), so before, after and the reference share one run.

Also: ``tpm2_hash`` of 1 MiB (a HashSequence of 1 KiB updates) through each TPM device,
and start-up (exec of ``vtpm-cuse cuse`` -> device node present -> first GetRandom answered).
Measurements start once the daemons' derive-ahead children have finished (they would
otherwise steal emulated CPU from whatever runs first) and are interleaved over the devices.

One round trip = write() of a TPM2_GetRandom(16) command + read() of the response
(the echo device returns the command bytes instead). Needs root and /dev/cuse; on a
kernel without CUSE it re-runs itself inside the cusevm guest (scripts/cusevm/run.sh),
where absolute times are 10-30x slower than native: compare the ratios.

    .venv/bin/python scripts/bench_cuse.py [--rounds N] [--baseline DIR]
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
HASH_INPUT_SIZE = 1 << 20
HASH_REPEATS = 3


@dataclass(frozen=True)
class Figure:
    name: str
    median_ms: float
    mean_ms: float
    p90_ms: float
    rounds: int


PASSES = 4
"""Round trips and hashes are measured in this many interleaved passes over the devices,
so that a burst of load on the host (the guest is emulated) hits all of them alike."""


def warm_up(trees: list[Path]) -> None:
    """Import everything a daemon imports once per tree, so no start-up below pays for
    reading cold files over 9p and the order of the launches does not matter."""
    for tree in trees:
        subprocess.run(
            [sys.executable, "-c", "import vtpm_cuse.cli.daemon, vtpm_cuse.tpm.engine, vtpm_cuse.cuse_service"],
            cwd=tree,
            env=dict(os.environ, PYTHONPATH=str(tree)),
            check=True,
            timeout=START_TIMEOUT,
        )


def measure_interleaved(devices: dict[str, tuple[str, int | None]], rounds: int) -> dict[str, Figure]:
    samples: dict[str, list[float]] = {name: [] for name in devices}
    for _ in range(PASSES):
        for name, (node, expect) in devices.items():
            samples[name] += measure_samples(node, max(1, rounds // PASSES), expect)
    figures = {}
    for name, values in samples.items():
        values.sort()
        figures[name] = Figure(
            devices[name][0],
            statistics.median(values),
            statistics.fmean(values),
            values[int(len(values) * 0.9) - 1],
            len(values),
        )
    return figures


def measure_samples(node: str, rounds: int, expect: int | None) -> list[float]:
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
    return samples


def wait_for(path: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.05)


def start_vtpm(name: str, state: Path, env: dict[str, str], tree: Path = PROJECT) -> tuple[float, float]:
    """Start ``vtpm-cuse cuse -n NAME``: seconds from exec to the node and to the first answer."""
    node = f"/dev/{name}"
    start = time.perf_counter()
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vtpm_cuse.cli.entry",
            "cuse",
            "-n",
            name,
            "--tpm2",
            "--tpmstate",
            f"dir={state}",
            "--flags",
            "not-need-init,startup-clear",
        ],
        env=env,
        cwd=tree,  # ``-m`` puts the working directory first on sys.path
    )
    deadline = time.monotonic() + START_TIMEOUT
    while not os.path.exists(node):
        if time.monotonic() > deadline or launcher.poll() not in (None, 0):
            raise RuntimeError(f"{node} did not appear")
        time.sleep(0.001)
    appeared = time.perf_counter() - start
    fd = os.open(node, os.O_RDWR)
    try:
        os.write(fd, GET_RANDOM_16)
        response = os.read(fd, 4096)
    finally:
        os.close(fd)
    answered = time.perf_counter() - start
    if struct.unpack_from(">I", response, 6)[0] != 0:
        raise RuntimeError(f"{node}: first GetRandom failed: {response.hex()}")
    launcher.wait(timeout=START_TIMEOUT)
    return appeared, answered


QUIET_TIMEOUT = 300.0


def daemon_processes(names: list[str]) -> int:
    """Processes running ``vtpm-cuse cuse -n NAME`` for any of ``names``: the daemons and
    their forked derive-ahead children (a fork keeps the command line)."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"cuse" in argv and any(name.encode() in argv for name in names):
            count += 1
    return count


def wait_until_quiet(names: list[str]) -> float:
    """Wait until each daemon's derive-ahead child (RSA prime searches, niced, up to
    derive_ahead.JOB_TIMEOUT) is gone: under TCG it would compete for the vCPUs -- and
    for the host's cores -- with whatever is measured first. Returns the seconds waited."""
    start = time.monotonic()
    while daemon_processes(names) > len(names):
        if time.monotonic() - start > QUIET_TIMEOUT:
            raise TimeoutError(f"derive-ahead children of {names} still running after {QUIET_TIMEOUT:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - start


def time_tpm2_hash(devices: dict[str, str], work: Path) -> dict[str, float]:
    """Median seconds of ``tpm2_hash`` of 1 MiB through each node (device TCTI), interleaved."""
    data = work / "hash-input"
    data.write_bytes(os.urandom(HASH_INPUT_SIZE))
    samples: dict[str, list[float]] = {name: [] for name in devices}
    for _ in range(HASH_REPEATS):
        for name, node in devices.items():
            start = time.perf_counter()
            subprocess.run(
                ["tpm2_hash", "-T", f"device:{node}", "-g", "sha256", "-o", os.devnull, str(data)],
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT * 3,
            )
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def bench(rounds: int, baseline: Path | None) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="bench-cuse-"))
    vtpm_name, echo_name, before_name = "vtpm-bench", "vtpm-bench-echo", "vtpm-bench-before"
    processes: list[subprocess.Popen[str]] = []
    startup: dict[str, tuple[float, float]] = {}
    devices = {"vtpm": f"/dev/{vtpm_name}"}
    try:
        warm_up([PROJECT] + ([baseline.resolve()] if baseline is not None else []))
        startup["vtpm"] = start_vtpm(vtpm_name, work / "vtpm", dict(os.environ))
        if baseline is not None:
            env = dict(os.environ, PYTHONPATH=str(baseline.resolve()))
            startup["before"] = start_vtpm(before_name, work / "before", env, baseline.resolve())
            devices["before"] = f"/dev/{before_name}"
        echo = subprocess.Popen(
            [sys.executable, "-m", "vtpm_cuse.cuse.echo", echo_name], cwd=PROJECT, stdout=subprocess.PIPE, text=True
        )
        processes.append(echo)
        (work / "swtpm").mkdir()
        proxy_start = time.perf_counter()
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
        wait_for(tpm_node)
        proxy_node = time.perf_counter() - proxy_start
        startup["proxy"] = (proxy_node, proxy_node)
        devices["proxy"] = tpm_node
        echo.stdout.readline()  # "ready /dev/NAME"
        wait_for(f"/dev/{echo_name}")
        quiet_s = wait_until_quiet([vtpm_name] + ([before_name] if baseline is not None else []))
        loadavg = Path("/proc/loadavg").read_text().split()[0]
        measured: dict[str, tuple[str, int | None]] = {name: (node, None) for name, node in devices.items()}
        measured["echo"] = (f"/dev/{echo_name}", len(GET_RANDOM_16))
        figures = measure_interleaved(measured, rounds)
        hashing = time_tpm2_hash(devices, work)
    finally:
        for name in (vtpm_name, before_name):
            if os.path.exists(f"/dev/{name}"):
                subprocess.run(["swtpm_ioctl", "-s", f"/dev/{name}"], capture_output=True, timeout=60)
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)
    result: dict[str, object] = {name: vars(f) for name, f in figures.items()}
    ratios = {
        "vtpm/echo": figures["vtpm"].median_ms / figures["echo"].median_ms,
        "vtpm/proxy": figures["vtpm"].median_ms / figures["proxy"].median_ms,
        "echo/proxy": figures["echo"].median_ms / figures["proxy"].median_ms,
        "hash vtpm/proxy": hashing["vtpm"] / hashing["proxy"],
    }
    if "before" in figures:
        ratios["before/proxy"] = figures["before"].median_ms / figures["proxy"].median_ms
        ratios["hash before/proxy"] = hashing["before"] / hashing["proxy"]
    result["ratios"] = ratios
    result["tpm2_hash_1MiB_s"] = hashing
    result["startup_s"] = {name: {"node": node, "first_answer": first} for name, (node, first) in startup.items()}
    result["quiet_wait_s"] = quiet_s
    result["loadavg_before"] = float(loadavg)
    return result


def report(result: dict[str, object]) -> None:
    print(f"GetRandom(16) round trip, write()+read(), {result['vtpm']['rounds']} rounds:")  # type: ignore[index]
    labels = {
        "vtpm": "vtpm-cuse CUSE device",
        "before": "vtpm-cuse CUSE device (before)",
        "echo": "echo CUSE device (floor)",
        "proxy": "swtpm + kernel vtpm proxy",
    }
    for key, label in labels.items():
        if key not in result:
            continue
        f = result[key]
        print(
            f"  {label:28s} median {f['median_ms']:7.3f} ms  mean {f['mean_ms']:7.3f} ms  "  # type: ignore[index]
            f"p90 {f['p90_ms']:7.3f} ms"
        )  # type: ignore[index]
    for name, value in result["ratios"].items():  # type: ignore[union-attr]
        print(f"  ratio {name:18s} {value:6.2f}")
    for name, seconds in result["tpm2_hash_1MiB_s"].items():  # type: ignore[union-attr]
        print(f"  tpm2_hash 1 MiB via {name:8s} {seconds * 1e3:9.1f} ms")
    print(
        f"  waited {result['quiet_wait_s']:.1f} s for derive-ahead children; "
        f"1-min load average before measuring {result['loadavg_before']:.2f}"
    )
    for name, times in result["startup_s"].items():  # type: ignore[union-attr]
        print(
            f"  start-up {name:8s} exec->node {times['node'] * 1e3:8.1f} ms  "
            f"exec->first answer {times['first_answer'] * 1e3:8.1f} ms"
        )


def run_in_vm(rounds: int, baseline: Path | None) -> int:
    """No CUSE here: run this script inside the cusevm guest and relay its output."""
    share = Path(tempfile.mkdtemp(prefix="bench-cuse-share-"))
    script = share / "bench.sh"
    python = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
    script.write_text(
        "#!/bin/bash\n"
        f"export PATH={shlex.quote(str(python.parent))}:$PATH\n"
        f"cd {shlex.quote(str(PROJECT))}\n"
        f"exec {shlex.quote(str(python))} scripts/bench_cuse.py --rounds {rounds} --json /share/bench-cuse.json"
        + (f" --baseline {shlex.quote(str(baseline.resolve()))}" if baseline is not None else "")
        + "\n"
    )
    print("no /dev/cuse here: running the benchmark in the cusevm guest (QEMU TCG)...", flush=True)
    return subprocess.run([str(RUN_SH), str(script), str(share / "out")]).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--baseline", type=Path, help="also run our device from this source tree ('before')")
    args = parser.parse_args()
    if args.rounds < 10:
        parser.error("--rounds must be at least 10")
    if not os.path.exists("/dev/cuse"):
        return run_in_vm(args.rounds, args.baseline)
    if os.geteuid() != 0:
        print("bench_cuse: needs root (/dev/cuse and the vtpm proxy are root-only)", file=sys.stderr)
        return 1
    result = bench(args.rounds, args.baseline)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
