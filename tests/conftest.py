"""Test collection rules shared by every test module.

tests/vm/ holds tests that need a kernel with CUSE (/dev/cuse): they run inside
the QEMU guest that tests/test_vm_*.py boot.  On a host without CUSE they are
not collected directly — the launcher tests run them in the guest instead, so a
plain ``pytest`` still exercises them and fails if the guest cannot be had.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

collect_ignore_glob = [] if os.path.exists("/dev/cuse") else ["vm/*"]


@pytest.fixture
def daemon(tmp_path: Path):
    """A ``vtpm-cuse socket`` process on free loopback ports with a fresh state
    directory (modules that need another setup define their own ``daemon``)."""
    from tests.support.daemon import Daemon

    d = Daemon(tmp_path / "state").start()
    try:
        yield d
    finally:
        d.stop()
