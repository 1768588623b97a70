#!/usr/bin/env python3
"""Coverage-guided fuzzing of the tests/fuzz/target_*.py targets with atheris (libFuzzer).

    scripts/fuzz.py --target engine --seconds 60
    scripts/fuzz.py --target all --seconds 1800 --jobs 2 --corpus-out /var/tmp/fuzz
    scripts/fuzz.py --target engine --replay path/to/crash-1234

Each target runs in its own atheris subprocess (``python -m tests.fuzz.harness``)
on a working corpus seeded from the committed corpus and the target's ``seeds()``;
libFuzzer stops it after ``--seconds`` (or ``--runs`` executions), kills an input
running longer than the target's TIMEOUT_SECONDS and the process above
``--rss-limit-mb``, and writes what it found under ``<corpus-out>/<name>/artifacts/``.
A target that crashes before its time is up is restarted on its grown corpus (at most
``--restarts`` times), so an unattended long run keeps fuzzing after a first finding.
``--jobs J`` runs J processes: up to J targets side by side and, when there are fewer
targets than J, J // targets workers per target sharing its corpus.
SIGINT or SIGTERM ends the run early: the workers are interrupted (libFuzzer's "run
interrupted", not a finding), nothing is restarted, and the figures so far are printed.
Each worker run gets its own scratch directory for the targets' state (``VTPM_FUZZ_SCRATCH``,
:mod:`tests.fuzz.scratch`), removed when the run ends however it ended.
Printed per target: executions, exec/s, libFuzzer's cov/ft, corpus size, and every
crash/timeout/oom artifact.  Exit status 1 when anything was found, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fuzz import harness  # noqa: E402
from tests.fuzz.scratch import SCRATCH_ENV  # noqa: E402

_STATS = re.compile(r"^#(\d+)\s+\S+\s+cov: (\d+) ft: (\d+)(?: corp: (\d+)/\S+)?.*?(?:exec/s: (\d+))?")
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second")
_ARTIFACT = re.compile(r"(?:Test unit written to|artifact_prefix='[^']*'; Test unit written to) (\S+)")
_KINDS = ("crash", "timeout", "oom", "leak", "slow-unit")
_INTERRUPTED = "libFuzzer: run interrupted"
"""What libFuzzer prints when a signal stops it (it then exits 72)."""


class _Stop:
    """The run's end on SIGINT/SIGTERM: no more restarts, and the live workers interrupted."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen[str]] = set()

    def track(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._live.add(proc)
            if self.requested.is_set():
                proc.send_signal(signal.SIGINT)

    def untrack(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._live.discard(proc)

    def __call__(self, signum: int, _frame: object) -> None:
        self.requested.set()
        with self._lock:
            for proc in self._live:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)


STOP = _Stop()


@dataclasses.dataclass
class Result:
    """What one target's runs (a first run and its restarts) found."""

    name: str
    executions: int = 0
    seconds: float = 0.0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    artifacts: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    interrupted: bool = False

    @property
    def found(self) -> list[str]:
        return [a for a in self.artifacts if not Path(a).name.startswith("slow-unit")]

    def line(self) -> str:
        rate = self.executions / self.seconds if self.seconds else 0.0
        head = (
            f"{self.name}: {self.executions} executions in {self.seconds:.0f} s ({rate:.0f}/s), "
            f"cov {self.cov} ft {self.ft}, corpus {self.corpus}"
        )
        found = "".join(f"\n  {kind_of(a)}: {a}" for a in self.artifacts)
        errors = "".join(f"\n  error: {e}" for e in self.errors)
        return head + (found or ", nothing found") + (" (interrupted)" if self.interrupted else "") + errors


def kind_of(artifact: str) -> str:
    name = Path(artifact).name
    return next((k for k in _KINDS if name.startswith(k)), "artifact")


def _libfuzzer_flags(info: harness.TargetInfo, seconds: float, runs: int | None, rss_mb: int, artifacts: Path) -> list:
    flags = [
        f"-max_total_time={max(1, int(seconds))}",
        f"-rss_limit_mb={rss_mb}",
        f"-timeout={info.timeout_seconds}",
        f"-max_len={info.max_len}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
    ]
    if runs is not None:
        flags.append(f"-runs={runs}")
    return flags


def _run_once(name: str, workdir: Path, flags: list[str], log, result: Result) -> int:
    """One atheris subprocess; parse its output into ``result`` as it streams."""
    cmd = [sys.executable, "-m", "tests.fuzz.harness", "--target", name, "--corpus", str(workdir / "corpus"), "--"]
    scratch = tempfile.mkdtemp(prefix=f"vtpm-fuzz-{name}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), **{SCRATCH_ENV: scratch})
    try:
        return _watch(cmd + flags, env, log, result)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _watch(argv: list[str], env: dict[str, str], log, result: Result) -> int:
    started = time.monotonic()
    # (atheris prints a failing input's traceback on stdout, libFuzzer its reports on stderr)
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    STOP.track(proc)
    found_before = len(result.artifacts)
    base = result.executions
    assert proc.stdout is not None
    tail: list[str] = []
    fuzzing_seconds: float | None = None
    for line in proc.stdout:
        log.write(line)
        tail = (tail + [line])[-40:]
        if m := _STATS.match(line):
            result.executions = base + int(m.group(1))
            result.cov, result.ft = max(result.cov, int(m.group(2))), max(result.ft, int(m.group(3)))
            if m.group(4):
                result.corpus = int(m.group(4))
        elif m := _DONE.match(line):
            result.executions = base + int(m.group(1))
            fuzzing_seconds = float(m.group(2))
        elif m := _ARTIFACT.search(line):
            result.artifacts.append(m.group(1))
        elif _INTERRUPTED in line:
            result.interrupted = True
    rc = proc.wait()
    STOP.untrack(proc)
    if STOP.requested.is_set() and len(result.artifacts) == found_before:
        result.interrupted = True  # libFuzzer's "run interrupted" (72) or atheris' KeyboardInterrupt (130)
    # libFuzzer's own time (start-up and instrumentation excluded) when it reported one.
    result.seconds += fuzzing_seconds if fuzzing_seconds is not None else time.monotonic() - started
    if rc != 0 and not result.artifacts and not result.interrupted:
        result.errors.append(f"worker exited {rc} without an artifact; last output:\n" + "".join(tail[-15:]))
    return rc


def _worker(name: str, args: argparse.Namespace, workdir: Path, index: int) -> Result:
    """One worker's runs on the shared working corpus: a first run and its restarts after findings."""
    info = harness.target_info(name)
    artifacts = workdir / "artifacts"
    result = Result(name)
    deadline = time.monotonic() + args.seconds
    with open(workdir / ("fuzz.log" if index == 0 else f"fuzz-{index}.log"), "a") as log:
        for attempt in range(args.restarts + 1):
            remaining = deadline - time.monotonic()
            if STOP.requested.is_set() or (
                attempt and (remaining < 2 or (args.runs is not None and result.executions >= args.runs))
            ):
                break
            runs = None if args.runs is None else args.runs - result.executions
            flags = _libfuzzer_flags(info, remaining, runs, args.rss_limit_mb, artifacts)
            if _run_once(name, workdir, flags, log, result) == 0 or result.errors:
                break
    return result


def fuzz_target(name: str, args: argparse.Namespace, out: Path, workers: int = 1) -> Result:
    """Fuzz one target for its time budget with ``workers`` processes on one corpus (libFuzzer
    reloads the corpus directory every second, so they share what each finds)."""
    workdir = out / name
    (workdir / "artifacts").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(lambda i: _worker(name, args, workdir, i), range(workers)))
    result = Result(
        name,
        executions=sum(p.executions for p in parts),
        seconds=max(p.seconds for p in parts),
        cov=max(p.cov for p in parts),
        ft=max(p.ft for p in parts),
        artifacts=[a for p in parts for a in p.artifacts],
        errors=[e for p in parts for e in p.errors],
        interrupted=any(p.interrupted for p in parts),
    )
    corpus = workdir / "corpus"
    result.corpus = sum(1 for _ in corpus.iterdir()) if corpus.is_dir() else 0
    return result


def replay(name: str, path: Path) -> int:
    """Run one input through the target in this process (no atheris), traceback on failure."""
    module = harness.load_target(name)
    data = path.read_bytes()
    try:
        module.fuzz_one(data)
    except BaseException:
        traceback.print_exc()
        print(f"fuzz: {name}: {path} ({len(data)} bytes) FAILS", file=sys.stderr)
        return 1
    print(f"fuzz: {name}: {path} ({len(data)} bytes) passes")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="a target name or 'all' (%(default)s)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget per target (default %(default)s)")
    parser.add_argument("--runs", type=int, default=None, help="stop each target after this many executions")
    parser.add_argument(
        "--jobs", type=int, default=1, help="fuzzing processes: targets at once, or workers per target (%(default)s)"
    )
    parser.add_argument("--corpus-out", type=Path, default=None, help="keep working corpora and artifacts here")
    parser.add_argument(
        "--rss-limit-mb", type=int, default=2048, help="libFuzzer's -rss_limit_mb (default %(default)s)"
    )
    parser.add_argument("--restarts", type=int, default=5, help="restarts after a finding (default %(default)s)")
    parser.add_argument("--replay", type=Path, default=None, help="run this one input through fuzz_one and exit")
    args = parser.parse_args(argv)
    known = harness.discover_targets()
    if args.target != "all" and args.target not in known:
        parser.error(f"unknown target {args.target!r} (known: {', '.join(known)})")
    if args.replay is not None and args.target == "all":
        parser.error("--replay needs one --target")
    if args.jobs < 1 or args.seconds <= 0 or (args.runs is not None and args.runs < 1):
        parser.error("--jobs, --seconds and --runs must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replay is not None:
        return replay(args.target, args.replay)
    names = harness.discover_targets() if args.target == "all" else [args.target]
    signal.signal(signal.SIGINT, STOP)
    signal.signal(signal.SIGTERM, STOP)
    # --jobs processes in all: targets side by side, and the jobs left over as more workers per target.
    workers = max(1, args.jobs // len(names))
    with tempfile.TemporaryDirectory(prefix="vtpm-fuzz-") as scratch:
        out = args.corpus_out or Path(scratch)
        lock = threading.Lock()

        def one(name: str) -> Result:
            result = fuzz_target(name, args, out, workers)
            with lock:
                print(result.line(), flush=True)
            return result

        with ThreadPoolExecutor(max_workers=min(args.jobs, len(names))) as pool:
            results = list(
                pool.map(lambda name: Result(name, interrupted=True) if STOP.requested.is_set() else one(name), names)
            )
        if args.corpus_out is None and any(r.found or r.errors for r in results):
            print("fuzz: artifacts are lost with the scratch directory; pass --corpus-out to keep them")
    total = sum(r.executions for r in results)
    bad = [r.name for r in results if r.found or r.errors]
    print(f"fuzz: {len(results)} targets, {total} executions, " + (f"FOUND in {', '.join(bad)}" if bad else "clean"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
