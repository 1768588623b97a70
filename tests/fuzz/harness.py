"""What every fuzz target and the runner share: finding targets, the atheris entry
point, the TPM response oracles and the memory bound.

Nothing here imports ``vtpm_cuse`` at module level: the atheris worker
(``python -m tests.fuzz.harness``) must import the code under test *inside*
``atheris.instrument_imports`` or libFuzzer sees no coverage of it.

Worker usage (what ``scripts/fuzz.py`` runs, one process per target)::

    python -m tests.fuzz.harness --target NAME --corpus DIR [-- libFuzzer flags]

It fills DIR with the committed corpus and the target's ``seeds()`` and then hands
control to libFuzzer, which grows DIR and writes crash/timeout/oom artifacts.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

__all__ = [
    "CORPUS_ROOT",
    "FUZZ_DIR",
    "REPO",
    "RssBound",
    "TargetInfo",
    "check_tpm_response",
    "committed_corpus",
    "discover_targets",
    "ensure_paths",
    "load_target",
    "main",
    "rss_mb",
    "seed_corpus",
    "target_info",
]

FUZZ_DIR = Path(__file__).resolve().parent
REPO = FUZZ_DIR.parents[1]
CORPUS_ROOT = FUZZ_DIR / "corpus"
_PREFIX = "target_"

#: Defaults of the optional target constants (see the package docstring).
DEFAULT_MAX_LEN = 4096
DEFAULT_TIMEOUT_SECONDS = 10
DEFAULT_INSTRUMENT = ("vtpm_cuse", "ioctl_defs")

TPM_RC_FAILURE = 0x101


def ensure_paths() -> None:
    """The repository root (``tests.fuzz.*``) and ``tests/`` (``support.*``) on sys.path."""
    for path in (str(REPO / "tests"), str(REPO)):
        if path not in sys.path:
            sys.path.insert(0, path)


def discover_targets() -> list[str]:
    """The names of every ``tests/fuzz/target_<name>.py``, sorted."""
    return sorted(p.stem[len(_PREFIX) :] for p in FUZZ_DIR.glob(f"{_PREFIX}*.py"))


def load_target(name: str) -> ModuleType:
    """Import ``tests.fuzz.target_<name>``; an unknown name lists the known ones."""
    if name not in discover_targets():
        raise SystemExit(f"fuzz: unknown target {name!r} (known: {', '.join(discover_targets())})")
    ensure_paths()
    return importlib.import_module(f"tests.fuzz.{_PREFIX}{name}")


@dataclass(frozen=True)
class TargetInfo:
    """A target's libFuzzer settings, from its optional module constants."""

    max_len: int
    timeout_seconds: int
    instrument: tuple[str, ...]


def target_info(name: str) -> TargetInfo:
    """Read the constants without importing the target (the parent must not pay its import):
    a simple ``NAME = literal`` / ``NAME: type = literal`` at module level."""
    import ast

    values: dict[str, object] = {}
    tree = ast.parse((FUZZ_DIR / f"{_PREFIX}{name}.py").read_text())
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value = node.target.id, node.value
        if target in ("MAX_LEN", "TIMEOUT_SECONDS", "INSTRUMENT"):
            try:
                values[target] = ast.literal_eval(value)
            except ValueError:
                pass
    return TargetInfo(
        max_len=int(values.get("MAX_LEN", DEFAULT_MAX_LEN)),
        timeout_seconds=int(values.get("TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS)),
        instrument=tuple(values.get("INSTRUMENT", DEFAULT_INSTRUMENT)),
    )


def committed_corpus(name: str) -> list[Path]:
    """The committed corpus files of a target (regression inputs included), sorted."""
    directory = CORPUS_ROOT / name
    return sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []


def seed_corpus(name: str, seeds: Iterable[bytes], into: Path) -> int:
    """Copy the committed corpus and write every seed (named by its hash) into ``into``;
    return how many files it then holds."""
    into.mkdir(parents=True, exist_ok=True)
    for path in committed_corpus(name):
        shutil.copyfile(path, into / path.name)
    for seed in seeds:
        (into / f"seed-{hashlib.sha1(seed).hexdigest()[:16]}").write_bytes(seed)
    return sum(1 for _ in into.iterdir())


# --- oracles -------------------------------------------------------------------------------------


def check_tpm_response(cmd: bytes, resp: bytes, *, failure_mode: bool = False) -> int:
    """Assert ``resp`` is a well-formed answer to ``cmd`` (the rules of
    :func:`support.engine_oracle.well_formed_problem`: size field == length, tag rules,
    10-byte errors) and not TPM_RC_FAILURE unless the TPM is in failure mode on
    purpose; return its response code."""
    ensure_paths()
    from support.engine_oracle import well_formed_problem

    problem = well_formed_problem(bytes(cmd), bytes(resp))
    assert problem is None, f"malformed response {bytes(resp).hex()} to {bytes(cmd).hex()}: {problem}"
    rc = int.from_bytes(resp[6:10], "big")
    assert failure_mode or rc != TPM_RC_FAILURE, f"TPM_RC_FAILURE answering {bytes(cmd).hex()}"
    return rc


def rss_mb() -> float:
    """This process' resident set size in MiB (from /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


@dataclass
class RssBound:
    """Memory bound: after a warm-up, running inputs may grow RSS by at most ``limit_mb``.

    A leak per execution (a cache keyed by input, a list that is never cleared) shows as
    steady growth over many executions; libFuzzer's ``-rss_limit_mb`` only sees it once
    the process is already huge.
    """

    limit_mb: float = 64.0

    def check(self, run: Callable[[bytes], None], inputs: list[bytes], executions: int, warmup: int = 50) -> float:
        """Run ``inputs`` round-robin, ``warmup`` then ``executions`` times; return the growth."""
        for i in range(warmup):
            run(inputs[i % len(inputs)])
        before = rss_mb()
        for i in range(executions):
            run(inputs[i % len(inputs)])
        growth = rss_mb() - before
        assert growth <= self.limit_mb, (
            f"RSS grew by {growth:.1f} MiB over {executions} executions (bound {self.limit_mb} MiB)"
        )
        return growth


# --- the atheris worker --------------------------------------------------------------------------


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" in argv:
        cut = argv.index("--")
        ours, libfuzzer = argv[:cut], argv[cut + 1 :]
    else:
        ours, libfuzzer = argv, []
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.harness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="target name (tests/fuzz/target_<name>.py)")
    parser.add_argument("--corpus", required=True, type=Path, help="working corpus directory (seeded, then grown)")
    return parser.parse_args(ours), libfuzzer


def main(argv: list[str] | None = None) -> None:
    """Import the target under atheris instrumentation, seed the corpus, run libFuzzer."""
    args, libfuzzer = _parse(sys.argv[1:] if argv is None else argv)
    import atheris

    ensure_paths()
    info = target_info(args.target)
    with atheris.instrument_imports(include=list(info.instrument)):
        module = load_target(args.target)
    count = seed_corpus(args.target, module.seeds(), args.corpus)
    print(f"fuzz: {args.target}: working corpus {args.corpus} ({count} inputs)", file=sys.stderr, flush=True)
    atheris.Setup([sys.argv[0], *libfuzzer, str(args.corpus)], module.fuzz_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
