"""Host side of the real-kernel CUSE check: boots the cusevm guest (Debian kernel with
cuse.ko under QEMU) and runs tests/vm/test_cuse_kernel_echo.py inside it.

Slow (about two minutes under TCG) and marked ``vm``. It fails rather than skips when
QEMU or the kernel cannot be had (scripts/cusevm/run.sh installs and downloads what
is missing; it exits 125 when it cannot): a skipped real-kernel check would read as
green while proving nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cusevm_launch import run_in_vm

pytestmark = pytest.mark.vm

INNER = "tests/vm/test_cuse_kernel_echo.py"
VM_TIMEOUT = 900


def test_echo_device_on_the_real_kernel(tmp_path: Path) -> None:
    run = run_in_vm(tmp_path, INNER, VM_TIMEOUT)
    counts = run.counts
    assert counts["tests"] >= 12 and counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts

    rtt = json.loads((run.share / "echo-rtt.json").read_text())
    print("echo round trips in the guest (ms):", json.dumps(rtt, indent=1))
    assert rtt["echo_32B"]["median_ms"] > 0
