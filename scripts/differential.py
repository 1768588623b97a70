"""Differential run: random command sequences on our engine and on Debian's swtpm (libtpms).

Prints how many sequences and commands ran, how many agreed, the disagreements by kind
(code mismatch / byte mismatch / our engine failed), the known differences hit (by entry of
tests/support/differential.py's KNOWN_DIFFERENCES), and every unexplained disagreement as a
minimal reproducer (the sequence shrunk by dropping commands while it still disagrees).
Exit status 1 when there is an unexplained disagreement.

    .venv/bin/python scripts/differential.py [--sequences N] [--length L] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from support.differential import KNOWN_DIFFERENCES, Kind, RunReport, TwoTpms, run_many  # noqa: E402


def print_report(report: RunReport, seconds: float) -> None:
    print(f"sequences       {report.sequences}")
    print(f"commands        {report.commands}")
    print(f"agreements      {report.agreements}")
    for kind in Kind:
        if kind is not Kind.AGREE:
            print(f"{kind.value:<20}{report.by_kind.get(kind, 0)}")
    print("known differences hit:")
    for entry in KNOWN_DIFFERENCES:
        print(f"  {entry.name:<36}{report.known_hits.get(entry.name, 0)}")
    print("succeeded on both / ran, by command:")
    for name, (ok, ran) in sorted(report.successes.items()):
        print(f"  {name:<36}{ok:>6} / {ran}")
    print(f"unexplained     {len(report.unexplained)}")
    print(f"seconds         {seconds:.1f}")
    for seed, steps, verdict in report.unexplained:
        print(f"\n--- unexplained, sequence seed {seed}, reproducer of {len(steps)} command(s):")
        for step in steps[:-1]:
            print(f"  {step}")
        print("  " + verdict.describe().replace("\n", "\n  "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=200, help="how many sequences (default 200)")
    parser.add_argument("--length", type=int, default=20, help="commands per sequence (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first sequence; the others follow")
    parser.add_argument("--no-shrink", action="store_true", help="report whole sequences, unshrunk")
    args = parser.parse_args(argv)
    if args.sequences < 1 or args.length < 1:
        parser.error(f"--sequences {args.sequences} and --length {args.length} must be positive")
    tpms = TwoTpms()
    try:
        start = time.monotonic()
        seeds = range(args.seed, args.seed + args.sequences)
        report = run_many(tpms, seeds, args.length, shrink_failures=not args.no_shrink)
        print_report(report, time.monotonic() - start)
    finally:
        tpms.close()
    return 1 if report.unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
