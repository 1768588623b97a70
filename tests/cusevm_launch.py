"""Shared by the host-side VM launchers (tests/test_vm_*.py): boot the cusevm guest once
and run one pytest selection of tests/vm/ inside it, junit results to the share."""

from __future__ import annotations

import os
import shlex
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
RUN_SH = PROJECT / "scripts" / "cusevm" / "run.sh"


@dataclass
class VmRun:
    output: str
    share: Path
    counts: dict[str, int]


def run_in_vm(tmp_path: Path, inner: str, timeout: int, *pytest_args: str) -> VmRun:
    """Run ``pytest inner`` in the guest; fails (never skips) when the VM cannot be had."""
    if Path("/dev/cuse").exists() and os.environ.get("CUSEVM"):
        pytest.fail("already inside the cusevm guest: run tests/vm/ directly, not this launcher")
    python = PROJECT / ".venv" / "bin" / "python"
    share = tmp_path / "share"
    script = tmp_path / "inner.sh"
    script.write_text(
        "#!/bin/bash\n"
        "ip link set lo up 2>/dev/null || true\n"
        f"export PATH={shlex.quote(str(python.parent))}:$PATH\n"
        f"cd {shlex.quote(str(PROJECT))}\n"
        f"exec {shlex.quote(str(python))} -m pytest -p no:cacheprovider -v -rA "
        + "".join(f"{shlex.quote(a)} " for a in pytest_args)
        + f"--junitxml=/share/junit.xml {inner}\n"
    )
    env = dict(os.environ, CUSEVM_TIMEOUT=str(timeout))
    proc = subprocess.run(
        [str(RUN_SH), str(script), str(share)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout + 300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"VM run failed with status {proc.returncode}:\n{output[-8000:]}"
    suite = ET.parse(share / "junit.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite is not None, output[-3000:]
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    return VmRun(output, share, counts)
