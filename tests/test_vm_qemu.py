"""Host side of QEMU's passthrough backend on the CUSE device: boots the cusevm guest
once and runs tests/vm/test_qemu_passthrough.py inside it (a QEMU in the guest on
/dev/vtpm-<uuid>, by path and by fd as libvirt passes it, over qtest; CRB refused as
for any 4096-byte TPM; EBUSY for a second QEMU; cancel through ``--cancel-fifo``;
Debian's libvirtd starting a passthrough domain on the device).

Slow (QEMU in TCG in TCG, and libvirtd's start-up: 3-5 minutes on this 2-core machine
under load) and marked ``vm``; fails rather than skips when the VM cannot be had, like
tests/test_vm_vtpm.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cusevm_launch import run_in_vm

pytestmark = pytest.mark.vm

INNER = "tests/vm/test_qemu_passthrough.py"
VM_TIMEOUT = 1500
PATHS = (
    "qemu-passthrough tpm-tis by path",
    "qemu-passthrough tpm-crb refused for 4096",
    "qemu-passthrough tpm-tis by fd (libvirt command line)",
    "qemu-passthrough second opener",
    "qemu-passthrough cancel",
    "libvirt passthrough",
    "qemu-passthrough tpm-crb by path",
)


def test_qemu_passthrough_on_the_cuse_device(tmp_path: Path) -> None:
    run = run_in_vm(tmp_path, INNER, VM_TIMEOUT, "-s")
    vmlog = [line for line in run.output.splitlines() if "VMLOG " in line]
    print("\n".join(vmlog))
    counts = run.counts
    assert counts["tests"] == len(PATHS) and counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts
    seen = {m.group(1) for line in vmlog if (m := re.search(r"VMLOG (.+?): ", line))}
    assert seen >= set(PATHS), f"paths without a VMLOG line: {set(PATHS) - seen}"
