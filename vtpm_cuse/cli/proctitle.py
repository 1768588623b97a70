"""Make ``vtpm-cuse cuse``'s command line end with the device name.

Why: swtpm's CUSE daemon is found by tools and test harnesses through its
command line (``ps``, ``pgrep -f vtpm-<uuid>``); several vTPMs run side by side
and the device name is what tells them apart.  Python cannot rewrite its
argv memory portably, so the entry point re-executes itself once, *before*
the heavy imports, with the name option moved to the end.  The re-exec is
skipped when the name already comes last, and guarded by an environment
variable against loops.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["REEXEC_ENV", "reorder_name_last", "reexec_with_name_last"]

REEXEC_ENV = "VTPM_CUSE_REEXECED"
_MODE = "cuse"


def reorder_name_last(argv: Sequence[str]) -> list[str] | None:
    """``argv`` (without the program) with ``-n NAME`` moved last, or None when
    nothing needs to change (another mode, no name, or the name is already last)."""
    args = list(argv)
    if not args or args[0] != _MODE:
        return None
    name: str | None = None
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest.extend(args[index:])
            break
        if arg in ("-n", "--name") and index + 1 < len(args):
            name = args[index + 1]
            index += 2
            continue
        if arg.startswith("--name="):
            name = arg[len("--name=") :]
        elif arg.startswith("-n") and len(arg) > 2 and not arg.startswith("--"):
            name = arg[2:]
        else:
            rest.append(arg)
        index += 1
    if not name or args[-1] == name:
        return None
    return [*rest, "-n", name]


def reexec_with_name_last(argv: Sequence[str]) -> None:
    """Re-execute this program with the device name last; returns if not needed."""
    if os.environ.get(REEXEC_ENV):
        return
    new = reorder_name_last(argv)
    if new is None:
        return
    os.environ[REEXEC_ENV] = "1"
    program = sys.argv[0]
    try:
        if os.path.isfile(program) and os.access(program, os.X_OK) and not program.endswith(".py"):
            os.execv(program, [program, *new])
        os.execv(sys.executable, [sys.executable, "-m", "vtpm_cuse.cli.entry", *new])
    except OSError:
        return  # the daemon works all the same; only ps shows another order
