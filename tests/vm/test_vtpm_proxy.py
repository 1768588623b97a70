"""``vtpm-cuse chardev --vtpm-proxy`` on the real kernel: /dev/tpmN + /dev/tpmrmN for containers.

Runs INSIDE the cusevm guest (tests/test_vm_vtpm.py boots it once for this module and
tests/vm/test_cuse_vtpm.py; the guest loads tpm_vtpm_proxy, scripts/cusevm/modules.list).
The daemon asks /dev/vtpmx for a TPM 2 chip and serves its anonymous descriptor; the
kernel registers the chip with its own start-up commands, and tpm2-tools then talk to
the kernel's resource manager device as to any TPM.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

VTPM_CUSE = Path(sys.executable).parent / "vtpm-cuse"
START_TIMEOUT = 180.0
TOOL_TIMEOUT = 120.0
RANDOM_BYTES = 16


def vmlog(client: str, what: str) -> None:
    print(f"VMLOG {client}: {what} ok", flush=True)


@dataclass
class Proxy:
    pid: int
    tpm_num: int

    @property
    def resource_manager(self) -> str:
        return f"/dev/tpmrm{self.tpm_num}"

    @property
    def device(self) -> str:
        return f"/dev/tpm{self.tpm_num}"


def _wait_for(predicate, what: str, timeout: float = START_TIMEOUT) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    if not Path("/dev/vtpmx").exists() or os.geteuid() != 0:
        pytest.fail("needs /dev/vtpmx (tpm_vtpm_proxy) and root: run inside the VM (tests/test_vm_vtpm.py)")
    work = tmp_path_factory.mktemp("proxy")
    log, pidfile = work / "proxy.log", work / "proxy.pid"
    started = time.monotonic()
    result = subprocess.run(
        [
            str(VTPM_CUSE), "chardev", "--vtpm-proxy", "--tpm2", "--tpmstate", f"dir={work / 'state'}",
            "--pid", f"file={pidfile}", "--log", f"file={log},level=1", "--daemon",
        ],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, f"vtpm-cuse chardev --vtpm-proxy failed ({result.returncode}): {result.stderr}"
    match = re.search(r"serving chardev vTPM proxy /dev/tpm(\d+) ", log.read_text())
    assert match, log.read_text()
    daemon = Proxy(int(pidfile.read_text()), int(match.group(1)))
    # The kernel registers the chip (its own commands through us) before the nodes appear.
    _wait_for(lambda: os.path.exists(daemon.resource_manager), daemon.resource_manager)
    print(f"proxy up in {time.monotonic() - started:.1f}s: {daemon.device}", flush=True)
    yield daemon
    with contextlib.suppress(ProcessLookupError):
        os.kill(daemon.pid, signal.SIGTERM)
    _wait_for(lambda: not os.path.exists(f"/proc/{daemon.pid}"), "the daemon to exit", 60)


def tpm2(proxy: Proxy, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, TPM2TOOLS_TCTI=f"device:{proxy.resource_manager}")
    result = subprocess.run(["tpm2_" + args[0], *args[1:]], env=env, capture_output=True, timeout=TOOL_TIMEOUT)
    assert result.returncode == 0, f"tpm2_{' '.join(args)}: {result.stderr.decode()}"
    return result


def test_the_kernel_created_both_nodes(proxy: Proxy) -> None:
    for node in (proxy.device, proxy.resource_manager):
        assert stat.S_ISCHR(os.stat(node).st_mode), node
    assert Path(f"/sys/class/tpm/tpm{proxy.tpm_num}/tpm_version_major").read_text().strip() == "2"
    vmlog("vtpm-proxy", f"{proxy.device} and {proxy.resource_manager} exist")


def test_getrandom_through_the_resource_manager(proxy: Proxy) -> None:
    first = tpm2(proxy, "getrandom", "--hex", str(RANDOM_BYTES)).stdout
    second = tpm2(proxy, "getrandom", "--hex", str(RANDOM_BYTES)).stdout
    assert re.fullmatch(rb"[0-9a-f]{%d}" % (2 * RANDOM_BYTES), first) and first != second
    vmlog("vtpm-proxy", "tpm2_getrandom on /dev/tpmrmN")


def test_pcrread_through_the_resource_manager(proxy: Proxy) -> None:
    out = tpm2(proxy, "pcrread", "sha256:0,1").stdout.decode()
    # Fresh TPM after TPM2_Startup(CLEAR): PCRs 0 and 1 are all zeros.
    assert re.search(r"0 ?: 0x0{64}", out) and re.search(r"1 ?: 0x0{64}", out), out
    vmlog("vtpm-proxy", "tpm2_pcrread on /dev/tpmrmN")


def test_stopping_the_daemon_removes_the_chip(proxy: Proxy) -> None:
    """Last, on purpose: the fixture's daemon goes away and the kernel unregisters the chip."""
    os.kill(proxy.pid, signal.SIGTERM)
    _wait_for(lambda: not os.path.exists(proxy.resource_manager), f"{proxy.resource_manager} to disappear", 60)
    vmlog("vtpm-proxy", "chip removed when the daemon exits")
