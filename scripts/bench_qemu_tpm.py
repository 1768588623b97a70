#!/usr/bin/env python3
"""TPM commands through QEMU's TIS, driven over qtest (tests/support/qtest_tpm.py).

Two pairs, each measured in one run so the reference shares the machine's state:

* ``emulator`` (host): QEMU ``-tpmdev emulator`` on ``vtpm-cuse socket`` vs on
  Debian's ``swtpm socket`` (libtpms), both with a Unix control socket;
* ``passthrough`` (in the cusevm guest, which has CUSE): QEMU ``-tpmdev passthrough``
  on our /dev/vtpm-bench vs on Debian's ``swtpm chardev --vtpm-proxy`` (the kernel's
  /dev/tpmN).  Absolute guest times are 10-30x slower than native (TCG): compare ratios.

One round = TPM2_GetRandom(16) (and separately PCR_Extend) written through the TIS
FIFO, executed by the backend, read back from the FIFO.  The qtest register traffic
is the same for both sides of a pair, so the ratio is the TPMs' and transports'.

    .venv/bin/python scripts/bench_qemu_tpm.py [--rounds N] [--only emulator|passthrough]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests"))

from support.daemon import DAEMON, REPO, env_with_repo  # noqa: E402
from support.qemu_tpm_checks import expect_ok, get_random, pcr_extend, startup  # noqa: E402
from support.qtest_tpm import Qemu, SocketTpm, Tis, emulator_args, passthrough_args  # noqa: E402

RUN_SH = PROJECT / "scripts" / "cusevm" / "run.sh"
VENV_PYTHON = PROJECT / ".venv" / "bin" / "python"
WARMUP = 10
START_TIMEOUT = 180.0
COMMANDS: dict[str, Callable[[], bytes]] = {"GetRandom(16)": lambda: get_random(16), "PCR_Extend": pcr_extend}


@dataclass(frozen=True)
class Figure:
    median_ms: float
    mean_ms: float
    p90_ms: float
    rounds: int


def measure(tis: Tis, command: bytes, rounds: int) -> Figure:
    for _ in range(WARMUP):
        expect_ok(tis.transfer(command), "warm-up")
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        response = tis.transfer(command)
        times.append((time.perf_counter() - start) * 1e3)
        expect_ok(response, "benchmark command")
    times.sort()
    return Figure(statistics.median(times), statistics.fmean(times), times[int(len(times) * 0.9)], rounds)


def measure_all(qemu_args: list[str], rounds: int, send_startup: bool) -> dict[str, Figure]:
    with Qemu(qemu_args) as qemu:
        tis = Tis(qemu)
        if send_startup:
            expect_ok(tis.transfer(startup()), "Startup")
        return {name: measure(tis, build(), rounds) for name, build in COMMANDS.items()}


@contextmanager
def swtpm_socket(work: Path) -> Iterator[Path]:
    (work / "state").mkdir(parents=True)
    ctrl = work / "ctrl.sock"
    proc = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={work / 'state'}", "--ctrl", f"type=unixio,path={ctrl}"]
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ctrl.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"swtpm socket did not start (exit {proc.poll()})")
            time.sleep(0.02)
        yield ctrl
    finally:
        proc.terminate()
        proc.wait(30)


def bench_emulator(rounds: int) -> dict[str, dict[str, Figure]]:
    work = Path(tempfile.mkdtemp(prefix="bench-qemu-emu-"))
    ours = SocketTpm(work / "vtpm").start()
    try:
        figures = {"vtpm-cuse socket": measure_all(emulator_args(ours.ctrl, "tpm-tis"), rounds, True)}
    finally:
        ours.stop()
    with swtpm_socket(work / "swtpm") as ctrl:
        figures["swtpm socket"] = measure_all(emulator_args(ctrl, "tpm-tis"), rounds, True)
    return figures


def start_cuse(name: str, work: Path) -> subprocess.Popen[bytes] | None:
    (work / "state").mkdir(parents=True)
    argv = [*DAEMON, "cuse", "-n", name, "--tpm2", "--tpmstate", f"dir={work / 'state'}"]
    argv += ["--flags", "not-need-init,startup-clear", "--pid", f"file={work / 'pid'}"]
    subprocess.run(argv, cwd=REPO, env=env_with_repo(), check=True, timeout=START_TIMEOUT)
    return None


def start_proxy(work: Path) -> tuple[subprocess.Popen[str], str]:
    (work / "state").mkdir(parents=True)
    proxy = subprocess.Popen(
        ["swtpm", "chardev", "--vtpm-proxy", "--tpm2", "--tpmstate", f"dir={work / 'state'}"]
        + ["--flags", "not-need-init,startup-clear"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proxy.stdout is not None
    line = proxy.stdout.readline()
    match = re.search(r"(/dev/tpm\d+)", line)
    if not match:
        raise RuntimeError(f"swtpm chardev --vtpm-proxy said: {line!r}")
    deadline = time.monotonic() + START_TIMEOUT
    while not os.path.exists(match.group(1)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{match.group(1)} never appeared")
        time.sleep(0.05)
    return proxy, match.group(1)


def bench_passthrough(rounds: int) -> dict[str, dict[str, Figure]]:
    work = Path(tempfile.mkdtemp(prefix="bench-qemu-pt-"))
    name = "vtpm-bench-qemu"
    start_cuse(name, work / "vtpm")
    try:
        figures = {
            "vtpm-cuse CUSE": measure_all(passthrough_args(f"/dev/{name}", "/dev/null", "tpm-tis"), rounds, False)
        }
    finally:
        subprocess.run(["kill", (work / "vtpm" / "pid").read_text().strip()], check=False)
    proxy, node = start_proxy(work / "swtpm")
    try:
        figures["swtpm vtpm-proxy"] = measure_all(passthrough_args(node, "/dev/null", "tpm-tis"), rounds, False)
    finally:
        proxy.terminate()
        proxy.wait(30)
    return figures


def run_in_vm(rounds: int) -> dict[str, dict[str, Figure]]:
    """No CUSE here: run the passthrough half in the cusevm guest, figures back via the share."""
    share = Path(tempfile.mkdtemp(prefix="bench-qemu-share-"))
    script = share / "bench.sh"
    python = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
    script.write_text(
        "#!/bin/bash\n"
        f"cd {shlex.quote(str(PROJECT))}\n"
        f"exec {shlex.quote(str(python))} scripts/bench_qemu_tpm.py --only passthrough --rounds {rounds} "
        "--json /share/bench.json\n"
    )
    print("passthrough: no /dev/cuse here, running that half in the cusevm guest (QEMU TCG)...", flush=True)
    env = dict(os.environ, CUSEVM_QUIET="1")  # the figures come back as JSON, reported once below
    subprocess.run([str(RUN_SH), str(script), str(share / "out")], check=True, env=env)
    raw = json.loads((share / "out" / "bench.json").read_text())
    return {side: {cmd: Figure(**f) for cmd, f in cmds.items()} for side, cmds in raw["passthrough"].items()}


def report(results: dict[str, dict[str, dict[str, Figure]]]) -> None:
    for pair, sides in results.items():
        (ours, ours_figures), (ref, ref_figures) = sides.items()
        print(f"{pair} backend, QEMU tpm-tis over qtest, {next(iter(ours_figures.values())).rounds} rounds:")
        for command in COMMANDS:
            for side, figures in sides.items():
                f = figures[command]
                print(
                    f"  {command:14s} {side:18s} median {f.median_ms:8.3f} ms  mean {f.mean_ms:8.3f} ms  "
                    f"p90 {f.p90_ms:8.3f} ms"
                )
            ratio = ours_figures[command].median_ms / ref_figures[command].median_ms
            print(f"  {command:14s} ratio {ours}/{ref}: {ratio:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--only", choices=("emulator", "passthrough"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.rounds < 10:
        parser.error("--rounds must be at least 10")
    results: dict[str, dict[str, dict[str, Figure]]] = {}
    if args.only in (None, "emulator"):
        results["emulator"] = bench_emulator(args.rounds)
    if args.only in (None, "passthrough"):
        in_guest = os.path.exists("/dev/cuse") and os.geteuid() == 0
        results["passthrough"] = bench_passthrough(args.rounds) if in_guest else run_in_vm(args.rounds)
    report(results)
    if args.json:
        plain = {
            pair: {side: {c: asdict(f) for c, f in figs.items()} for side, figs in sides.items()}
            for pair, sides in results.items()
        }
        args.json.write_text(json.dumps(plain, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
