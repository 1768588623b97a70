"""Debian's libvirt runs vtpm-cuse as its TPM emulator (``<backend type='emulator'>``).

vtpm-cuse's programs are installed under the names libvirt looks up (``swtpm``,
``swtpm_setup``, ``swtpm_ioctl``, first on the daemon's $PATH).  A TCG domain with a
tpm-crb emulator TPM is defined and started by a private session libvirtd
(tests/support/libvirt_host.py): libvirt runs vtpm-setup to manufacture the state, starts
``vtpm-cuse socket`` on a Unix control socket, QEMU connects (CMD_SET_DATAFD) and its
SeaBIOS talks to the TPM; ``virsh destroy`` stops it through ``swtpm_ioctl -s``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support.daemon import REPO, Daemon, env_with_repo
from support.libvirt_host import LibvirtHost
from support.setup_tool import LIBVIRT_OPTIONS, SetupConfig, run_setup
from support.tpm2_tools import tpm2_runner

VENV_BIN = REPO / ".venv" / "bin"
TOOLS = {
    "swtpm": VENV_BIN / "vtpm-swtpm",  # the daemon, under the name libvirt looks for
    "swtpm_setup": VENV_BIN / "vtpm-setup",
    "swtpm_ioctl": VENV_BIN / "vtpm-ioctl",
}
NAME = "vtpmtest"
UUID = "6b1c8f0e-3f7a-4cde-9a51-2f0d9c1f7e11"
DOMAIN = f"""<domain type='qemu'>
  <name>{NAME}</name>
  <uuid>{UUID}</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>
  </devices>
</domain>
"""
#: libvirt 9.0 gives the TPM daemon a fixed 1 s to create its control socket
#: (qemuTPMEmulatorStart); vtpm-cuse needs ~0.5 s of CPU for it, which a loaded 2-core CI
#: machine can stretch past 1 s.  A start that failed for exactly that reason is retried.
START_ATTEMPTS = 5
SOCKET_TIMEOUT_ERROR = "swtpm socket did not show up"
#: <acpi/>: without ACPI tables SeaBIOS leaves the TPM alone (libvirt passes -no-acpi).
#: The TPM CRB's command/response buffer (TPM_CRB_DATA_BUFFER at 0xFED40080): all zero
#: until the guest's firmware (SeaBIOS) has sent a command and QEMU put the TPM's answer there.
CRB_BUFFER = 0xFED40080
#: SeaBIOS (TCG, on a busy host) reaches its TPM code within this; then it sends
#: TPM2_Startup, extends PCRs ... for a little longer.
FIRMWARE_TIMEOUT = 60
FIRMWARE_SETTLE = 3
EXIT_TIMEOUT = 15


@pytest.fixture(scope="module")
def host():
    with LibvirtHost(tools=TOOLS) as h:
        h.virsh("define", str(h.write_file("domain.xml", DOMAIN)))
        yield h


def start_domain(host: LibvirtHost) -> int:
    """``virsh start``; returns how many attempts it took."""
    for attempt in range(1, START_ATTEMPTS + 1):
        result = host.virsh("start", NAME, check=False)
        if result.returncode == 0:
            return attempt
        if SOCKET_TIMEOUT_ERROR not in result.stderr or attempt == START_ATTEMPTS:
            raise AssertionError(f"virsh start {NAME} failed: {result.stderr}")
    raise AssertionError("unreachable")


def manufactured(host: LibvirtHost) -> int:
    return (host.log_dir / f"{NAME}-swtpm.log").read_text().count("Starting vTPM manufacturing as")


def tpm_daemon_pid(host: LibvirtHost) -> int:
    (pid_file,) = host.swtpm_run_dir.glob(f"*-{NAME}-swtpm.pid")
    return int(pid_file.read_text())


def wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + EXIT_TIMEOUT
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def wait_firmware_used_tpm(host: LibvirtHost) -> bool:
    deadline = time.monotonic() + FIRMWARE_TIMEOUT
    while time.monotonic() < deadline:
        out = host.virsh("qemu-monitor-command", NAME, "--hmp", f"xp /4wx 0x{CRB_BUFFER:x}").stdout
        if re.search(r"0x0*[1-9a-f][0-9a-f]*\b", out.split(":", 1)[-1]):
            time.sleep(FIRMWARE_SETTLE)
            return True
        time.sleep(0.5)
    return False


def clock_counts(state: Path) -> tuple[int, int]:
    """(resetCount, restartCount) after one more TPM2_Startup(CLEAR), via tpm2_readclock."""
    d = Daemon(state, extra=["--flags", "not-need-init,startup-clear"]).start()
    try:
        out = tpm2_runner(d.data_port)("readclock").stdout.decode()
    finally:
        d.stop()
    return tuple(int(re.search(rf"{name}: (\d+)", out).group(1)) for name in ("reset_count", "restart_count"))


@pytest.fixture(scope="module")
def booted(host):
    """One boot: start, inspect while running, destroy."""
    start_domain(host)
    pid = tpm_daemon_pid(host)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    sockets = list(host.swtpm_run_dir.glob("*.sock"))
    socket_mode = sockets[0].stat().st_mode & 0o777 if sockets else None
    query = json.loads(host.virsh("qemu-monitor-command", NAME, '{"execute":"query-tpm"}').stdout)
    info = host.virsh("qemu-monitor-command", NAME, "--hmp", "info tpm").stdout
    firmware = wait_firmware_used_tpm(host)
    host.virsh("destroy", NAME)
    exited = wait_gone(pid)
    return {
        "pid": pid,
        "cmdline": cmdline,
        "sockets": sockets,
        "socket_mode": socket_mode,
        "query": query,
        "info": info,
        "exited": exited,
        "firmware": firmware,
    }


def test_libvirt_starts_our_daemon_with_swtpms_command_line(host, booted):
    argv = [a.decode() for a in booted["cmdline"] if a]
    # vtpm-swtpm is the daemon itself: it creates libvirt's socket before its heavy imports.
    assert Path(argv[1]).resolve() == (VENV_BIN / "vtpm-swtpm").resolve() and argv[2] == "socket"
    assert argv[argv.index("--ctrl") + 1].startswith("type=unixio,path=")
    assert "--terminate" in argv and "--tpm2" in argv
    assert argv[argv.index("--tpmstate") + 1] == f"dir={host.swtpm_state(UUID)},mode=0600"
    (sock,) = booted["sockets"]
    assert sock.name.endswith(f"-{NAME}-swtpm.sock")
    assert booted["socket_mode"] == 0o600


def test_qemu_attached_the_emulator_tpm(booted):
    assert booted["query"]["return"] == [
        {"model": "tpm-crb", "options": {"type": "emulator", "data": {"chardev": "chrtpm"}}, "id": "tpm-tpm0"}
    ]
    assert "tpm-tpm0: type=emulator" in booted["info"]


def test_destroy_ends_the_daemon(booted):
    assert booted["exited"]


def test_libvirt_ran_vtpm_setup_and_the_guest_used_the_tpm(host, booted, tmp_path):
    log = (host.log_dir / f"{NAME}-swtpm.log").read_text()
    assert "Successfully created NVRAM area 0x1c00002 for RSA 2048 EK certificate." in log
    assert "data channel now on the descriptor passed with CMD_SET_DATAFD" in log
    # SeaBIOS's TPM2_Startup(CLEAR) through QEMU is one more TPM Reset (or, after the
    # TPM2_Shutdown(STATE) of the stop, a Restart) than a freshly manufactured state shows.
    assert booted["firmware"], "the guest firmware never got a TPM response"
    fresh = tmp_path / "fresh"
    config = SetupConfig(tmp_path / "config").write()
    assert run_setup("--tpm2", "--tpm-state", str(fresh), *LIBVIRT_OPTIONS, config=config).returncode == 0
    used = shutil.copytree(host.swtpm_state(UUID), tmp_path / "used")  # the VM's own stays untouched
    assert clock_counts(used) != clock_counts(fresh)


def test_second_start_reuses_the_state(host, booted):
    state = host.swtpm_state(UUID) / "tpm2-00.permall"
    before = manufactured(host)
    start_domain(host)
    pid = tpm_daemon_pid(host)
    host.virsh("destroy", NAME)
    assert wait_gone(pid)
    assert manufactured(host) == before  # --not-overwrite: libvirt keeps the VM's TPM
    assert state.is_file()


def test_launcher_passes_other_command_lines_through():
    env = env_with_repo()
    ours = subprocess.run(
        [str(VENV_BIN / "vtpm-swtpm"), "socket", "--print-capabilities"], env=env, capture_output=True
    )
    daemon = subprocess.run(
        [str(VENV_BIN / "vtpm-cuse"), "socket", "--print-capabilities"], env=env, capture_output=True
    )
    assert ours.returncode == daemon.returncode == 0
    assert ours.stdout == daemon.stdout


def test_launcher_reports_a_socket_it_cannot_create(tmp_path):
    ctrl = f"type=unixio,path={tmp_path}/missing/dir/s,mode=0600"
    result = subprocess.run(
        [str(VENV_BIN / "vtpm-swtpm"), "socket", "--tpm2", "--tpmstate", f"dir={tmp_path}", "--ctrl", ctrl],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("vtpm-cuse: cannot listen on UnixIO socket ")
    assert len(result.stderr.splitlines()) == 1
