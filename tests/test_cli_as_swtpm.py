"""vtpm-cuse installed as ``swtpm``: tpm2-tools' integration-test harness start line works unchanged.

The harness (tpm2-tools test/integration/helpers.sh) starts
``swtpm socket --tpm2 --server port=P --ctrl type=tcp,port=P+1 --seccomp action=none
--flags not-need-init --tpmstate dir=D``, waits a second, checks that a process
named swtpm listens on both ports and talks to it with ``-T swtpm:port=P``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.daemon import REPO, START_TIMEOUT, env_with_repo
from tests.support.net import free_port_pair
from tests.support.tpm2_tools import TOOL_TIMEOUT

VTPM_CUSE = REPO / ".venv" / "bin" / "vtpm-cuse"
HARNESS_WAIT = 1.0
"""The harness sleeps one second after starting swtpm before it looks for the listener."""
POLL_INTERVAL = 0.1


@pytest.fixture(scope="module")
def swtpm(tmp_path_factory: pytest.TempPathFactory):
    """The harness line, run through a PATH entry named ``swtpm`` that is vtpm-cuse."""
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "swtpm").symlink_to(VTPM_CUSE)
    state = tmp_path_factory.mktemp("state")
    port, ctrl_port = free_port_pair()
    env = env_with_repo()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    argv = [
        "swtpm", "socket", "--tpm2", "--server", f"port={port}", "--ctrl", f"type=tcp,port={ctrl_port}",
        "--seccomp", "action=none", "--flags", "not-need-init", "--tpmstate", f"dir={state}",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(HARNESS_WAIT)
        yield proc, port, ctrl_port, env
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def _listeners(port: int) -> str:
    """``ss -ltnp`` lines of the TCP listeners on ``port`` (they name the owning process)."""
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return out


def test_a_process_named_swtpm_listens_on_both_ports(swtpm) -> None:
    proc, port, ctrl_port, _ = swtpm
    deadline = time.monotonic() + START_TIMEOUT  # on a loaded 2-core machine start-up may exceed the harness' 1 s
    for wanted in (port, ctrl_port):
        while not (lines := _listeners(wanted)):
            assert proc.poll() is None, f"swtpm exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"nothing listens on port {wanted}"
            time.sleep(POLL_INTERVAL)
        assert re.search(rf'\("swtpm",pid={proc.pid},', lines), lines
    assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "swtpm"
    # action=none: no filter, as asked.
    assert re.search(r"^Seccomp:\s+0$", Path(f"/proc/{proc.pid}/status").read_text(), re.M)


def test_tpm2_tools_talk_to_it_through_the_swtpm_tcti(swtpm) -> None:
    _, port, _, env = swtpm

    def tool(*argv: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(argv, env=env, capture_output=True, timeout=TOOL_TIMEOUT)

    startup = tool("tpm2_startup", "-T", f"swtpm:port={port}", "-c")
    assert startup.returncode == 0, startup.stderr
    first = tool("tpm2_getrandom", "-T", f"swtpm:port={port}", "--hex", "16")
    second = tool("tpm2_getrandom", "-T", f"swtpm:port={port}", "--hex", "16")
    assert first.returncode == 0 == second.returncode, first.stderr + second.stderr
    assert re.fullmatch(rb"[0-9a-f]{32}", first.stdout) and first.stdout != second.stdout
