"""The CI short run of every coverage-guided fuzz target (tests/fuzz/target_*.py).

For each target found: every committed corpus file (the regression inputs of fixed
crashes among them) and every ``seeds()`` input pass ``fuzz_one`` in this process,
running its seeds over and over does not grow the process, and a short atheris run
through ``scripts/fuzz.py`` (a few thousand executions, all targets at once) finds no
crash, timeout or OOM.  The long runs are ``scripts/fuzz.py --target all --seconds N``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fuzz import harness

TARGETS = harness.discover_targets()
SCRIPT = harness.REPO / "scripts" / "fuzz.py"
#: The short run: executions per target and the time cap (whichever comes first).
SHORT_RUNS = 1000
SHORT_SECONDS = 5
#: Executions of the memory bound check, after a warm-up.
RSS_EXECUTIONS = 60


@pytest.fixture(scope="module", params=TARGETS)
def target(request):
    return request.param, harness.load_target(request.param)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> tuple[str, Path]:
    """One ``scripts/fuzz.py --target all`` run, two targets at a time."""
    out = tmp_path_factory.mktemp("fuzz")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--target", "all", "--jobs", "2", "--restarts", "0"]
        + ["--runs", str(SHORT_RUNS), "--seconds", str(SHORT_SECONDS), "--corpus-out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=harness.REPO,
    )
    return proc.stdout + proc.stderr, out


def test_every_target_is_complete():
    assert {"engine", "state_blob"} <= set(TARGETS)
    for name in TARGETS:
        module = harness.load_target(name)
        assert callable(module.fuzz_one) and callable(module.seeds), name
        assert harness.target_info(name).max_len > 0


def test_committed_corpus_passes(target):
    name, module = target
    for path in harness.committed_corpus(name):
        try:
            module.fuzz_one(path.read_bytes())
        except BaseException as exc:
            raise AssertionError(f"{name}: committed input {path.name} fails: {exc!r}") from exc


def test_seeds_pass(target):
    name, module = target
    seeds = list(module.seeds())
    assert seeds, f"{name} has no seeds"
    for i, seed in enumerate(seeds):
        try:
            module.fuzz_one(seed)
        except BaseException as exc:
            raise AssertionError(f"{name}: seed {i} ({seed[:32].hex()}...) fails: {exc!r}") from exc


def test_memory_stays_bounded(target):
    name, module = target
    harness.RssBound(limit_mb=64).check(module.fuzz_one, list(module.seeds()), RSS_EXECUTIONS, warmup=20)


def test_short_atheris_run_finds_nothing(target, short_run):
    name, _ = target
    output, out = short_run
    line = re.search(rf"^{re.escape(name)}: (\d+) executions.*$", output, re.M)
    assert line, f"no result line for {name} in:\n{output[-3000:]}"
    assert int(line.group(1)) > 0, line.group(0)
    block = output[line.start() : line.end() + 2000].split("\n\n")[0]
    found = [p for p in (out / name / "artifacts").iterdir() if not p.name.startswith("slow-unit")]
    log = (out / name / "fuzz.log").read_text()
    assert not found and "nothing found" in line.group(0), (
        f"{name}: {block}\n" + "".join(f"{p.name}: {p.read_bytes()[:200].hex()}\n" for p in found) + log[-4000:]
    )


def test_replay_runs_one_input():
    path = next(iter(harness.committed_corpus("state_blob")))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--target", "state_blob", "--replay", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=harness.REPO,
    )
    assert proc.returncode == 0 and "passes" in proc.stdout, proc.stdout + proc.stderr


def test_sigterm_ends_a_run_cleanly(tmp_path):
    """A long run stopped with SIGTERM: the workers are interrupted, not restarted, the
    interruption is no finding (exit 0), and their scratch directories are gone."""
    log = tmp_path / "out" / "options" / "fuzz.log"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--target", "options", "--seconds", "120", "--corpus-out", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=harness.REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and re.search(r"^#\d+", log.read_text(), re.MULTILINE)):
            assert time.monotonic() < deadline and proc.poll() is None, "the worker never started fuzzing"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert re.search(r"^options: \d+ executions .*nothing found \(interrupted\)$", output, re.MULTILINE), output
    assert "clean" in output.splitlines()[-1], output
    assert not list(Path("/dev/shm").glob("vtpm-fuzz-options-*")), "a worker's scratch directory was left behind"
