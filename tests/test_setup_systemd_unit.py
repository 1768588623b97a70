"""The systemd unit template and udev rule, as `vtpm-cuse-install-units` installs them.

``systemd-analyze verify`` loads an instance of the installed template (it fails on an
ExecStart that is not executable and warns on unknown keys: both fail the test); the
unit's two command lines are then run for real as far as this host allows: the
ExecStartPre manufactures a state, the ExecStart's options are accepted by ``vtpm-cuse
cuse`` (the device itself needs /dev/cuse: tests/test_vm_vtpm.py covers that mode).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from support.daemon import REPO, env_with_repo
from support.setup_tool import SetupConfig, run_setup

UUID = "6b1c8f0e-3f7a-4cde-9a51-2f0d9c1f7e11"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("units")
    result = subprocess.run(
        [sys.executable, "-m", "vtpm_cuse.units", "--unit-dir", str(root / "system"), "--udev-dir", str(root / "udev")],
        cwd=REPO,
        env=env_with_repo(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return root


def unit_value(unit: str, key: str) -> str:
    return re.search(rf"^{key}=(.*)$", unit, flags=re.M).group(1)


def instance_command(unit: str, key: str) -> list[str]:
    return shlex.split(unit_value(unit, key).replace("%i", UUID))


def test_systemd_analyze_verify_accepts_an_instance(installed):
    result = subprocess.run(
        ["systemd-analyze", "verify", str(installed / "system" / f"vtpm-cuse@{UUID}.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # unknown keys and bad paths are only warnings


def test_unit_is_a_hardened_notify_service(installed):
    unit = (installed / "system" / "vtpm-cuse@.service").read_text()
    assert unit_value(unit, "Type") == "notify"
    for key, value in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("DevicePolicy", "closed"),
        ("DeviceAllow", "/dev/cuse rw"),
        ("ReadWritePaths", "/var/lib/vtpm-cuse"),
    ]:
        assert unit_value(unit, key) == value
    for key in ("ExecStartPre", "ExecStart"):
        program = Path(instance_command(unit, key)[0])
        assert program.is_absolute() and program.is_file(), program
    assert "-n vtpm-%i" in unit_value(unit, "ExecStart")


def test_exec_start_pre_manufactures_the_instance_state(installed, tmp_path):
    unit = (installed / "system" / "vtpm-cuse@.service").read_text()
    argv = instance_command(unit, "ExecStartPre")
    state = tmp_path / UUID
    args = [str(state) if a == f"/var/lib/vtpm-cuse/{UUID}" else a for a in argv[1:]]
    result = run_setup(*args, config=SetupConfig(tmp_path / "config").write())
    assert result.returncode == 0, result.stderr
    assert (state / "tpm2-00.permall").stat().st_mode & 0o777 == 0o600
    assert "Successfully created RSA 2048 EK" in result.stdout


def test_exec_start_options_are_accepted_by_the_cuse_daemon(installed):
    unit = (installed / "system" / "vtpm-cuse@.service").read_text()
    argv = instance_command(unit, "ExecStart")
    result = subprocess.run(
        [sys.executable, "-m", "vtpm_cuse.cli.daemon", *argv[1:], "--print-capabilities"],
        cwd=REPO,
        env=env_with_repo(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"type": "swtpm"' in result.stdout


def test_udev_rule_gives_the_device_to_a_group(installed):
    rule = (installed / "udev" / "60-vtpm-cuse.rules").read_text()
    lines = [line for line in rule.splitlines() if line and not line.startswith("#")]
    assert lines == ['SUBSYSTEM=="cuse", KERNEL=="vtpm-*", MODE="0660", GROUP="tss"']
