#!/usr/bin/env python3
"""Start-up time of the daemon, vs swtpm: exec -> listening / device node, exec -> first answer.

Rows, each the median of ``--starts`` launches, the targets interleaved launch by
launch (so a busy machine slows all of them alike):

* ``socket``: exec -> the TCP control socket accepts a connection (``listen``), and
  exec -> the answer of a TPM2_GetRandom on the data socket (``first``), with
  ``--flags not-need-init,startup-clear`` as in scripts/bench_sockets.py;
* ``cuse`` (needs /dev/cuse and root, i.e. the cusevm guest): exec -> /dev/NAME exists
  (``listen``), and exec -> the answer of the first command written to it, a
  TPM2_Startup(CLEAR) after ``--flags not-need-init`` (``first``).

For ``socket`` the daemon's own CPU time (user + system, ``/proc/PID/stat``) at both
moments is printed too: unlike the wall clock, it hardly depends on what else the
machine runs.

Targets: ``vtpm-cuse`` (this tree), ``before`` (``--baseline DIR``, another source tree),
``swtpm`` (Debian's).  ``--bytecode cached`` gives the Python targets a bytecode cache
(a private PYTHONPYCACHEPREFIX, filled by one uncounted start), as an installed
package has; ``none`` compiles every module on every start (PYTHONDONTWRITEBYTECODE=1,
how the development tree runs); ``both`` measures both.

``--vm`` runs the same measurement inside the cusevm guest (scripts/cusevm/run.sh:
a real CUSE kernel under QEMU TCG) and prints its output.

Usage: python scripts/bench_startup.py [--starts N] [--modes socket,cuse] [--baseline DIR] [--vm]
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import shutil
import signal
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
RUN_SH = REPO / "scripts" / "cusevm" / "run.sh"
GET_RANDOM_16 = bytes.fromhex("80010000000c0000017b0010")
STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
CMD_SHUTDOWN = (0x03).to_bytes(4, "big")
START_TIMEOUT = 300.0
"""Generous: in the TCG guest an interpreter start alone takes seconds."""
POLL_SECONDS = 0.0005
MODES = ("socket", "cuse")
BYTECODE = ("cached", "none")


@dataclass
class Target:
    """One program to start: its argv prefix (before the mode), environment and cwd."""

    name: str
    base: list[str]
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = REPO
    python: bool = True


def _python_env(base: dict[str, str], bytecode: str, cache: Path) -> dict[str, str]:
    env = dict(base)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    if bytecode == "cached":
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def targets(baseline: Path | None, bytecode: str, tmp: Path) -> list[Target]:
    entry = [sys.executable, "-m", "vtpm_cuse.cli.entry"]
    env = _python_env(dict(os.environ, PYTHONPATH=str(REPO)), bytecode, tmp / "pyc-ours")
    found = [Target("vtpm-cuse", entry, env)]
    if baseline is not None:
        root = baseline.resolve()
        env = _python_env(dict(os.environ, PYTHONPATH=str(root)), bytecode, tmp / "pyc-before")
        found.append(Target("before", [sys.executable, "-m", "vtpm_cuse.cli.daemon"], env, cwd=root))
    found.append(Target("swtpm", ["swtpm"], python=False))
    return found


def _wait(condition: Callable[[], bool], proc: subprocess.Popen[bytes] | None, what: str) -> None:
    """Poll ``condition``; ``proc`` (None: a detached daemon) must not exit meanwhile."""
    deadline = time.monotonic() + START_TIMEOUT
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: exited {proc.returncode}: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {START_TIMEOUT} s")
        time.sleep(POLL_SECONDS)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (``/proc/PID/stat`` utime + stime): what a
    start costs, whatever else runs on the machine (resolution: one clock tick)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def start_socket(target: Target, state: Path) -> tuple[float, float, float, float]:
    """(exec -> ctrl socket connectable, exec -> first GetRandom answered) in seconds, wall
    clock, then the daemon's CPU seconds at the same two moments."""
    data_port, ctrl_port = free_port(), free_port()
    argv = [
        *target.base, "socket", "--tpm2", "--tpmstate", f"dir={state}",
        "--server", f"type=tcp,port={data_port},bindaddr=127.0.0.1",
        "--ctrl", f"type=tcp,port={ctrl_port},bindaddr=127.0.0.1",
        "--flags", "not-need-init,startup-clear",
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=target.cwd, env=target.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait(lambda: is_listening(ctrl_port), proc, target.name)
        listening = time.perf_counter() - start
        listening_cpu = cpu_seconds(proc.pid)

        def answered() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", data_port), timeout=START_TIMEOUT) as s:
                    return tpm_roundtrip(s, GET_RANDOM_16)[6:10] == bytes(4)
            except OSError:
                return False

        _wait(answered, proc, target.name)
        first = time.perf_counter() - start
        first_cpu = cpu_seconds(proc.pid)
        with socket.create_connection(("127.0.0.1", ctrl_port), timeout=START_TIMEOUT) as c:
            c.sendall(CMD_SHUTDOWN)
            recv_exact(c, 4)
        proc.wait(START_TIMEOUT)
        return listening, first, listening_cpu, first_cpu
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]


_NOT_YET = (errno.ENXIO, errno.ENODEV)
"""What opening a CUSE node answers in the moment between its creation (device_add)
and the kernel registering the character device behind it."""


def _open_node(node: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return os.open(node, os.O_RDWR)
        except OSError as exc:
            if exc.errno not in _NOT_YET or time.monotonic() > deadline:
                raise
        time.sleep(POLL_SECONDS)


_cuse_counter = 0


def start_cuse(target: Target, state: Path) -> tuple[float, ...]:
    """(exec -> /dev/NAME exists, exec -> first command written to it answered) in seconds
    (no CPU figures: the serving process is the detached child)."""
    global _cuse_counter
    _cuse_counter += 1
    name = f"vtpm-bench-{os.getpid()}-{_cuse_counter}"
    node = Path("/dev") / name
    pid_file = state / "daemon.pid"
    pid_file.unlink(missing_ok=True)
    argv = [
        *target.base,
        "cuse",
        "--tpm2",
        "--tpmstate",
        f"dir={state}",
        "--flags",
        "not-need-init",
        "--pid",
        f"file={pid_file}",
        "-n",
        name,
    ]  # fmt: skip  (the name last: vtpm-cuse re-executes itself otherwise, see cli/proctitle.py)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=target.cwd, env=target.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait(node.exists, proc, target.name)
        listening = time.perf_counter() - start
        fd = _open_node(node)
        try:
            os.write(fd, STARTUP_CLEAR)
            response = os.read(fd, 4096)
        finally:
            os.close(fd)
        first = time.perf_counter() - start
        if response[6:10] != bytes(4):
            raise RuntimeError(f"{target.name}: TPM2_Startup answered {response.hex()}")
        proc.wait(START_TIMEOUT)  # the command returns once the node exists; the daemon detached
        _wait(pid_file.exists, None, f"{target.name} pid file")
        os.kill(int(pid_file.read_text()), signal.SIGTERM)  # the daemon this start created
        _wait(lambda: not node.exists(), None, f"{target.name} stop")
        return listening, first
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]


STARTERS: dict[str, Callable[[Target, Path], tuple[float, ...]]] = {"socket": start_socket, "cuse": start_cuse}


def has_mode(target: Target, mode: str) -> bool:
    """Whether ``target`` has ``mode`` at all (Debian's swtpm is built without ``cuse``)."""
    probe = subprocess.run([*target.base, mode, "--help"], cwd=target.cwd, env=target.env, capture_output=True)
    return probe.returncode == 0


def measure(mode: str, found: list[Target], starts: int, tmp: Path) -> dict[str, list[tuple[float, ...]]]:
    starter = STARTERS[mode]
    for target in [t for t in found if not has_mode(t, mode)]:
        print(f"  ({target.name} has no {mode} mode: left out)")
        found = [t for t in found if t is not target]
    samples: dict[str, list[tuple[float, ...]]] = {t.name: [] for t in found}
    for target in found:
        state = tmp / f"{mode}-{target.name}"
        state.mkdir(parents=True, exist_ok=True)
        if target.python:
            starter(target, state)  # uncounted: fills the bytecode cache, manufactures the state
    for _ in range(starts):
        for target in found:
            samples[target.name].append(starter(target, tmp / f"{mode}-{target.name}"))
    return samples


def run_here(args: argparse.Namespace) -> int:
    if shutil.which("swtpm") is None:
        print("swtpm is not installed (apt-get install swtpm)", file=sys.stderr)
        return 1
    modes = args.modes.split(",")
    if "cuse" in modes and not Path("/dev/cuse").exists():
        print("cuse: /dev/cuse does not exist (run with --vm for the cusevm guest)", file=sys.stderr)
        return 1
    bytecodes = BYTECODE if args.bytecode == "both" else (args.bytecode,)
    load = os.getloadavg()
    where = "cusevm guest (TCG)" if os.environ.get("CUSEVM") else "host"
    print(f"start-up on the {where}, {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for bytecode in bytecodes:
        with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp_name:
            tmp = Path(tmp_name)
            found = targets(args.baseline, bytecode, tmp)
            for mode in modes:
                samples = measure(mode, found, args.starts, tmp)
                node = "/dev/NAME exists" if mode == "cuse" else "ctrl socket connectable"
                first = "TPM2_Startup" if mode == "cuse" else "TPM2_GetRandom"
                print(f"{mode}, bytecode {bytecode}: median of {args.starts} (exec -> {node} / -> first {first})")
                for name, values in samples.items():
                    listen = statistics.median(v[0] for v in values) * 1e3
                    answer = statistics.median(v[1] for v in values) * 1e3
                    cpu = ""
                    if len(values[0]) == 4:
                        cpu_listen = statistics.median(v[2] for v in values) * 1e3
                        cpu_first = statistics.median(v[3] for v in values) * 1e3
                        cpu = f"   (daemon CPU {cpu_listen:6.0f} / {cpu_first:6.0f} ms)"
                    print(f"  {name:<10} listen {listen:8.1f} ms   first {answer:8.1f} ms{cpu}")
    return 0


def run_in_vm(args: argparse.Namespace) -> int:
    """This script, with the same options, inside the cusevm guest; prints what it printed."""
    python = REPO / ".venv" / "bin" / "python"
    inner = [str(python), str(Path(__file__).resolve()), "--starts", str(args.starts), "--modes", args.modes]
    inner += ["--bytecode", args.bytecode]
    if args.baseline is not None:
        inner += ["--baseline", str(args.baseline.resolve())]
    with tempfile.TemporaryDirectory(prefix="bench-startup-vm-") as tmp_name:
        script = Path(tmp_name) / "inner.sh"
        script.write_text(
            "#!/bin/bash\nip link set lo up 2>/dev/null || true\n"
            f"export PATH={shlex.quote(str(python.parent))}:$PATH\ncd {shlex.quote(str(REPO))}\n"
            f"exec {shlex.join(inner)}\n"
        )
        script.chmod(0o755)
        return subprocess.run([str(RUN_SH), str(script), str(Path(tmp_name) / "share")]).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10, help="counted launches per target and mode")
    parser.add_argument("--modes", default="socket", help="comma-separated: socket, cuse (cuse needs /dev/cuse)")
    parser.add_argument("--bytecode", choices=(*BYTECODE, "both"), default="both")
    parser.add_argument("--baseline", type=Path, help="also start the daemon from this source tree ('before')")
    parser.add_argument("--vm", action="store_true", help="measure inside the cusevm guest (QEMU TCG)")
    args = parser.parse_args()
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        parser.error(f"--modes: unknown {', '.join(sorted(unknown))} (known: {', '.join(MODES)})")
    return run_in_vm(args) if args.vm else run_here(args)


if __name__ == "__main__":
    sys.exit(main())
