#!/usr/bin/env python3
"""Crash consistency of the state directory: kill -9 ``vtpm-cuse socket`` at random
moments during a loop of state-changing commands (NV_Write, NV_Increment,
EvictControl, HierarchyChangeAuth, ClockSet, DA failures, Shutdown(STATE) +
CMD_STORE_VOLATILE, CMD_SET_STATEBLOB), restart it on the same state, and check
that every acknowledged change is there and none is half applied
(tests/support/crash_harness.py has the model).

Usage: python scripts/crash_consistency.py [--kills N] [--seed S] [--max-delay SECONDS] [--every N]
                                          [--max-seconds SECONDS]
Prints runs, kills, acknowledged commands, checks made and changes lost (must
be 0) every N kills and at the end, per command kind; exits 1 when anything
was lost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.crash_harness import CrashLoop, Figures  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=0.5, help="longest run before a kill, in seconds")
    parser.add_argument("--every", type=int, default=25, help="print progress figures every N kills")
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="stop (with the figures so far) after this many seconds"
    )
    args = parser.parse_args()
    started = time.monotonic()

    def report(figures: Figures, final: bool = False) -> None:
        label = "final" if final else "progress"
        print(f"[{label}] {figures.summary()}  ({time.monotonic() - started:.0f} s)", flush=True)
        if final:
            print(figures.table(), flush=True)
            for problem in figures.problems:
                print("  " + problem, flush=True)

    def out_of_time() -> bool:
        return args.max_seconds is not None and time.monotonic() - started > args.max_seconds

    with tempfile.TemporaryDirectory(prefix="vtpm-crash-") as tmp:
        loop = CrashLoop(Path(tmp) / "state", seed=args.seed)
        try:
            figures = loop.run(args.kills, args.max_delay, progress=report, every=args.every, should_stop=out_of_time)
        except KeyboardInterrupt:
            figures = loop.figures
            print("interrupted", flush=True)
    report(figures, final=True)
    return 1 if figures.lost or figures.problems else 0


if __name__ == "__main__":
    sys.exit(main())
