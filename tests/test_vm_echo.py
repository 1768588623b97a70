"""Host side of the real-kernel CUSE check: boots the cusevm guest (Debian kernel with
cuse.ko under QEMU) and runs tests/vm/test_cuse_kernel_echo.py inside it.

Slow (about two minutes under TCG) and marked ``vm``. It fails rather than skips when
QEMU or the kernel cannot be had (scripts/cusevm/run.sh installs and downloads what
is missing; it exits 125 when it cannot): a skipped real-kernel check would read as
green while proving nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

PROJECT = Path(__file__).resolve().parents[1]
RUN_SH = PROJECT / "scripts" / "cusevm" / "run.sh"
INNER = "tests/vm/test_cuse_kernel_echo.py"
VM_TIMEOUT = 900


def test_echo_device_on_the_real_kernel(tmp_path: Path) -> None:
    if Path("/dev/cuse").exists() and os.environ.get("CUSEVM"):
        pytest.fail("already inside the cusevm guest: run tests/vm/ directly, not this launcher")
    python = PROJECT / ".venv" / "bin" / "python"
    share = tmp_path / "share"
    script = tmp_path / "inner.sh"
    script.write_text(
        "#!/bin/bash\n"
        "ip link set lo up 2>/dev/null || true\n"
        f"cd {shlex.quote(str(PROJECT))}\n"
        f"exec {shlex.quote(str(python))} -m pytest -p no:cacheprovider -v -rA "
        f"--junitxml=/share/junit.xml {INNER}\n"
    )
    env = dict(os.environ, CUSEVM_TIMEOUT=str(VM_TIMEOUT))
    proc = subprocess.run(
        [str(RUN_SH), str(script), str(share)],
        capture_output=True, text=True, env=env, timeout=VM_TIMEOUT + 300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"VM run failed with status {proc.returncode}:\n{output[-6000:]}"

    suite = ET.parse(share / "junit.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite is not None, output[-3000:]
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] >= 12 and counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts

    rtt = json.loads((share / "echo-rtt.json").read_text())
    print("echo round trips in the guest (ms):", json.dumps(rtt, indent=1))
    assert rtt["echo_32B"]["median_ms"] > 0
