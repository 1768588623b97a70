#!/usr/bin/env python3
"""Crash consistency of the state directory: kill -9 ``vtpm-cuse socket`` at random
moments during a loop of NV_Write / NV_Increment / EvictControl / HierarchyChangeAuth,
restart it on the same state, and check that every acknowledged change is there
and none is half applied (tests/support/crash_harness.py has the model).

Usage: python scripts/crash_consistency.py [--kills N] [--seed S] [--max-delay SECONDS]
Prints runs, kills, acknowledged commands, checks made and changes lost (must be 0);
exits 1 when anything was lost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.crash_harness import CrashLoop  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=0.3, help="longest run before a kill, in seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vtpm-crash-") as tmp:
        started = time.monotonic()
        figures = CrashLoop(Path(tmp) / "state", seed=args.seed).run(args.kills, args.max_delay)
        elapsed = time.monotonic() - started
    print(
        f"runs {figures.runs}  kills {figures.kills}  acknowledged {figures.acknowledged}  "
        f"checked {figures.checked}  lost {figures.lost}  ({elapsed:.0f} s)"
    )
    for problem in figures.problems:
        print("  " + problem)
    return 1 if figures.lost or figures.problems else 0


if __name__ == "__main__":
    sys.exit(main())
