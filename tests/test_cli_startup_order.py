"""The daemon listens before it imports what serves: ordering shown without timing.

A real ``vtpm-cuse socket`` process runs with an import hook (a meta path finder
installed before the entry point runs) that stops the first import of trio,
``cryptography`` or gmpy2 until the test opens a gate file, after writing the
modules loaded so far.  While the daemon is held there, its UnixIO data and
control sockets must already accept connections, and a command sent on such a
queued connection must be answered once the gate opens.  A failure after binding
(an unusable ``--pcap`` file) must still remove the socket files and exit 1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.daemon import REPO, env_with_repo
from tests.support.net import recv_exact, tpm_roundtrip

HEAVY = ("trio", "cryptography", "gmpy2")
"""Packages the daemon must not need before its endpoints are open."""

NOT_BEFORE_LISTENING = (
    "vtpm_cuse.tpm.engine",
    "vtpm_cuse.vtpm",
    "vtpm_cuse.state.crypto",
    "ioctl_defs.structs",
    "vtpm_cuse.tpm.constants",  # Part 2's enums: the command line needs only .tpm.limits
    "vtpm_cuse.cli.vtpm_proxy",  # only chardev --vtpm-proxy
    "vtpm_cuse.cli.info",  # only the --print-* documents
    "ctypes",  # only when the seccomp filter is installed
    "platform",
    "shutil",  # argparse's formatter would import it for the terminal width
)
"""Our own heavy modules, and standard ones start-up does without, which must not be loaded yet either."""

GATED_LAUNCHER = """
import os, runpy, sys, time
heavy, gate, report = set(sys.argv[1].split(",")), sys.argv[2], sys.argv[3]
class Gate:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in heavy and not os.path.exists(gate):
            with open(report + ".tmp", "w") as f:
                f.write(name + "\\n" + "\\n".join(sorted(sys.modules)))
            os.rename(report + ".tmp", report)
            while not os.path.exists(gate):
                time.sleep(0.01)
        return None
sys.meta_path.insert(0, Gate())
sys.argv = ["vtpm-cuse", *sys.argv[4:]]
runpy.run_module("vtpm_cuse.cli.entry", run_name="__main__")
"""

GET_RANDOM_16 = bytes.fromhex("80010000000c0000017b0010")
CMD_SHUTDOWN = (0x03).to_bytes(4, "big")
WAIT_SECONDS = 60.0


@dataclass
class Gated:
    proc: subprocess.Popen[bytes]
    gate: Path
    report: Path
    data: Path
    ctrl: Path

    def wait_held(self) -> tuple[str, set[str]]:
        """Wait until the daemon is held at its first heavy import: (that import, modules loaded)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not self.report.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited {self.proc.returncode}: {self.proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("daemon never reached a heavy import")
            time.sleep(0.01)
        first, *loaded = self.report.read_text().splitlines()
        return first, set(loaded)

    def release(self) -> None:
        self.gate.touch()


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT_SECONDS)
    sock.connect(os.fspath(path))
    return sock


def _start(tmp_path: Path, *extra: str) -> Gated:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    gated = Gated(
        proc=None,  # type: ignore[arg-type]
        gate=tmp_path / "gate",
        report=tmp_path / "report",
        data=tmp_path / "data.sock",
        ctrl=tmp_path / "ctrl.sock",
    )
    argv = [
        sys.executable,
        "-c",
        GATED_LAUNCHER,
        ",".join(HEAVY),
        str(gated.gate),
        str(gated.report),
        "socket",
        "--tpm2",
        "--tpmstate",
        f"dir={state}",
        "--server",
        f"type=unixio,path={gated.data}",
        "--ctrl",
        f"type=unixio,path={gated.ctrl}",
        "--flags",
        "not-need-init,startup-clear",
        "--seccomp",
        "action=none",
        *extra,
    ]
    gated.proc = subprocess.Popen(argv, cwd=REPO, env=env_with_repo(), stderr=subprocess.PIPE)
    return gated


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Gated]:
    gated = _start(tmp_path)
    try:
        yield gated
    finally:
        gated.release()
        if gated.proc.poll() is None:
            gated.proc.kill()
        gated.proc.wait(WAIT_SECONDS)
        gated.proc.stderr.close()


def test_endpoints_listen_before_heavy_imports(held: Gated) -> None:
    first, loaded = held.wait_held()
    assert first.partition(".")[0] in HEAVY
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert not loaded & set(NOT_BEFORE_LISTENING), sorted(loaded & set(NOT_BEFORE_LISTENING))
    # Held at that import, the daemon accepts nothing itself: the kernel queues us.
    with _connect(held.data) as data, _connect(held.ctrl) as ctrl:
        data.sendall(GET_RANDOM_16)
        held.release()
        header = recv_exact(data, 10)  # the command sent while held is answered
        response = header + recv_exact(data, int.from_bytes(header[2:6], "big") - 10)
        assert len(tpm_roundtrip(data, GET_RANDOM_16)) == len(response)
        ctrl.sendall(CMD_SHUTDOWN)
        assert recv_exact(ctrl, 4) == bytes(4)
    assert response[6:10] == bytes(4), response.hex()
    assert held.proc.wait(WAIT_SECONDS) == 0


def test_failure_after_binding_removes_the_sockets(tmp_path: Path) -> None:
    gated = _start(tmp_path, "--pcap", f"file={tmp_path / 'missing-dir' / 'capture.pcapng'}")
    try:
        gated.wait_held()
        assert gated.data.exists() and gated.ctrl.exists()
        gated.release()
        assert gated.proc.wait(WAIT_SECONDS) == 1
        message = gated.proc.stderr.read().decode()
    finally:
        if gated.proc.poll() is None:
            gated.proc.kill()
            gated.proc.wait()
        gated.proc.stderr.close()
    assert message.count("\n") == 1 and "--pcap" in message, message
    assert not gated.data.exists() and not gated.ctrl.exists()
