"""Where fuzz targets keep their state directories.

In the directory the runner names in ``VTPM_FUZZ_SCRATCH`` (one per worker run, which
scripts/fuzz.py removes however the run ended: a libFuzzer exit after a finding, a
timeout or an interrupt skips the targets' atexit handlers), else in /dev/shm (state
writes fsync, and on tmpfs that costs nothing), else in the default temporary directory.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

SCRATCH_ENV = "VTPM_FUZZ_SCRATCH"


def scratch_base() -> str | None:
    return os.environ.get(SCRATCH_ENV) or ("/dev/shm" if os.path.isdir("/dev/shm") else None)


def scratch_dir(prefix: str) -> Path:
    """A fresh directory, removed when the process exits normally."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=scratch_base()))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
