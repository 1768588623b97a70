"""Exit statuses of the command-line programs, named once.

swtpm and swtpm_ioctl exit 0 on success and 1 on every failure; scripts and
test harnesses check exactly that, so every CLI here (``vtpm-cuse``,
``vtpm-ioctl``, the ``-d`` parent) answers with the same two values.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode"]


class ExitCode(IntEnum):
    """What a program returns to its caller; an ``int``, so ``sys.exit`` takes it as is."""

    OK = 0
    FAILURE = 1
