"""A real guest on ``vtpm-cuse socket`` through QEMU's emulator backend.

Boots the cusevm guest (Debian kernel + busybox initramfs, the host root shared
read-only; scripts/cusevm/run.sh) under TCG with Debian's SeaBIOS as firmware and
``-tpmdev emulator`` + ``-device tpm-tis`` on our socket daemon.  SeaBIOS sends
TPM2_Startup, measures into PCRs 0-7 and writes its event log (the kernel is
loaded with ``-kernel``: SeaBIOS boots it through QEMU's linuxboot option ROM,
which it measures like any option ROM).  In the guest the kernel's tpm_tis driver
(built into Debian's kernel) probes the TPM; Debian's tpm2-tools then read PCRs
0-7 and random bytes through /dev/tpmrm0 and replay the event log
(``tpm2_eventlog``).  Checked here: /dev/tpm0 and /dev/tpmrm0 exist, the replayed
PCRs equal the TPM's, the kernel log has no TPM error or timeout.

Slow (one guest boot, about a minute) and marked ``vm``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from support.qtest_tpm import SocketTpm, emulator_args

pytestmark = pytest.mark.vm

PROJECT = Path(__file__).resolve().parents[1]
RUN_SH = PROJECT / "scripts" / "cusevm" / "run.sh"
SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
FIRMWARE = {"seabios": SEABIOS}
"""Debian's OVMF (ovmf 2022.11, OVMF_CODE_4M.fd) was tried the same way, on pc and q35:
it boots the kernel and the TPM works, but it measures nothing (PCRs 0-7 stay zero, no
event log), so it is not a firmware that measures with TPM 2.0 here."""
VM_TIMEOUT = 600
PCRS = range(8)
TPM_TROUBLE = re.compile(r"tpm.*(error|timeout|timed out|fail)|(error|timeout|fail).*tpm", re.IGNORECASE)

GUEST_SCRIPT = """#!/bin/bash
# Runs in the guest (chroot of the host root): what a distribution's boot would see.
out=/share/tpm
mkdir -p $out
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
ls -l /dev/tpm0 /dev/tpmrm0 > $out/devices.txt 2>&1 || exit 10
export TPM2TOOLS_TCTI=device:/dev/tpmrm0
tpm2_pcrread sha256:0,1,2,3,4,5,6,7 -o $out/pcrs.bin > $out/pcrread.txt 2>&1 || exit 11
tpm2_getrandom --hex 16 > $out/random.txt 2>&1 || exit 12
cp /sys/kernel/security/tpm0/binary_bios_measurements $out/eventlog.bin || exit 13
tpm2_eventlog $out/eventlog.bin > $out/eventlog.yaml 2>&1 || exit 14
dmesg > $out/dmesg.txt
exit 0
"""


def replayed_pcrs(eventlog_yaml: str) -> dict[int, bytes]:
    """The ``pcrs: sha256:`` section tpm2_eventlog prints after replaying the log."""
    section = eventlog_yaml.split("pcrs:", 1)[1].split("sha256:", 1)[1]
    values = {}
    for line in section.splitlines()[1:]:
        match = re.match(r"\s+(\d+)\s*:\s*0x([0-9A-Fa-f]{64})\s*$", line)
        if not match:
            break
        values[int(match.group(1))] = bytes.fromhex(match.group(2))
    return values


def firmware_args(firmware: str) -> list[str]:
    """QEMU options that select the guest firmware (Debian's seabios package)."""
    path = FIRMWARE[firmware]
    assert path.exists(), f"{path} missing (scripts/setup.sh installs {firmware})"
    return ["-bios", str(path)]


@pytest.mark.parametrize("firmware", sorted(FIRMWARE))
def test_firmware_and_linux_measure_and_use_the_tpm(firmware: str, tmp_path: Path) -> None:
    daemon = SocketTpm(tmp_path / "tpm").start()
    try:
        script = tmp_path / "guest.sh"
        script.write_text(GUEST_SCRIPT)
        tpm_args = [*firmware_args(firmware), *emulator_args(daemon.ctrl, "tpm-tis")]
        env = dict(os.environ, CUSEVM_TIMEOUT=str(VM_TIMEOUT), CUSEVM_MEM="512", CUSEVM_QEMU_ARGS=" ".join(tpm_args))
        share = tmp_path / "share"
        proc = subprocess.run(
            [str(RUN_SH), str(script), str(share)], capture_output=True, text=True, env=env, timeout=VM_TIMEOUT + 120
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"guest script failed ({proc.returncode}):\n{output[-4000:]}"
        # QEMU's exit finalizes the backend: CMD_SHUTDOWN ends the daemon cleanly.
        assert daemon.wait(60) == 0
    finally:
        daemon.stop()
    out = share / "tpm"
    devices = (out / "devices.txt").read_text()
    assert "/dev/tpm0" in devices and "/dev/tpmrm0" in devices, devices
    pcr_bytes = (out / "pcrs.bin").read_bytes()
    assert len(pcr_bytes) == 32 * len(PCRS), len(pcr_bytes)
    tpm_pcrs = {pcr: pcr_bytes[32 * pcr : 32 * pcr + 32] for pcr in PCRS}
    assert all(tpm_pcrs[pcr] != bytes(32) for pcr in PCRS), f"{firmware} measures into every PCR 0-7"
    replayed = replayed_pcrs((out / "eventlog.yaml").read_text())
    assert {pcr: replayed.get(pcr) for pcr in PCRS} == tpm_pcrs, (out / "eventlog.yaml").read_text()[-3000:]
    assert len(bytes.fromhex((out / "random.txt").read_text().strip())) == 16
    dmesg = (out / "dmesg.txt").read_text()
    probe = [line for line in dmesg.splitlines() if "tpm" in line.lower()]
    assert any("2.0 TPM" in line for line in probe), "\n".join(probe)
    trouble = [line for line in probe if TPM_TROUBLE.search(line)]
    assert not trouble, "\n".join(trouble)
    events = (out / "eventlog.yaml").read_text().count("EventNum:")
    print(f"QEMULOG {firmware}+kernel: {events} events, PCR 0-7 replay == TPM, /dev/tpmrm0 tools ok")
    print("\n".join(f"QEMULOG guest dmesg: {line}" for line in probe))
