"""Host side of the real-kernel vTPM check: boots the cusevm guest once and runs
tests/vm/test_cuse_vtpm.py inside it (the daemon, swtpm_ioctl, vtpm-ioctl,
tpm2-tools and a selftest-style Python client against /dev/vtpm-<uuid>), then
tests/vm/test_vtpm_proxy.py (``chardev --vtpm-proxy``: tpm2-tools on /dev/tpmrmN), then
tests/vm/test_cuse_hostile.py (garbage, close/reopen, signals, tiny and O_NONBLOCK reads).

Slow (about two and a half minutes under TCG) and marked ``vm``; fails rather than
skips when the VM cannot be had, like tests/test_vm_echo.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cusevm_launch import run_in_vm

pytestmark = pytest.mark.vm

INNER = "tests/vm/test_cuse_vtpm.py tests/vm/test_vtpm_proxy.py tests/vm/test_cuse_hostile.py"
VM_TIMEOUT = 1200
CLIENTS = ("vtpm-cuse", "swtpm_ioctl", "vtpm-ioctl", "tpm2-tools", "python", "vtpm-proxy", "cuse-hostile")


def test_vtpm_device_on_the_real_kernel(tmp_path: Path) -> None:
    run = run_in_vm(tmp_path, INNER, VM_TIMEOUT, "-s")
    vmlog = [line for line in run.output.splitlines() if "VMLOG " in line]
    print("\n".join(vmlog))
    counts = run.counts
    assert counts["tests"] >= 8 and counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts
    seen = {m.group(1) for line in vmlog if (m := re.search(r"VMLOG (\S+):", line))}
    assert seen >= set(CLIENTS), f"clients without a VMLOG line: {set(CLIENTS) - seen}"
