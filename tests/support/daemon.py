"""Start ``vtpm-cuse socket`` as a real process for end-to-end tests.

The daemon runs as ``sys.executable -m vtpm_cuse.cli.daemon`` so the code
under test is the working tree's, whatever is installed as ``vtpm-cuse``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .net import free_port, free_port_pair, is_listening, recv_exact, tpm_roundtrip  # noqa: F401 (re-exported)

REPO = Path(__file__).resolve().parents[2]
DAEMON = [sys.executable, "-m", "vtpm_cuse.cli.daemon"]
IOCTL = [sys.executable, "-m", "vtpm_cuse.cli.ioctl_tool"]
START_TIMEOUT = 15.0


def ctrl_roundtrip(sock: socket.socket, message: bytes, reply: int) -> bytes:
    sock.sendall(message)
    return recv_exact(sock, reply)


def env_with_repo() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass
class Daemon:
    """A running ``vtpm-cuse socket``; ``extra`` options are appended to the command line."""

    state_dir: Path
    data_port: int = 0
    ctrl_port: int = 0
    extra: list[str] = field(default_factory=list)
    server: str | None = None
    """``--server`` value; None for TCP on ``data_port``, "" for no data server (CMD_SET_DATAFD only)."""
    ctrl: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.data_port:
            self.data_port, self.ctrl_port = free_port_pair()

    @property
    def argv(self) -> list[str]:
        server = self.server or f"type=tcp,port={self.data_port},bindaddr=127.0.0.1"
        ctrl = self.ctrl or f"type=tcp,port={self.ctrl_port},bindaddr=127.0.0.1"
        server_args = [] if self.server == "" else ["--server", server]
        return [
            *DAEMON,
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={self.state_dir}",
            *server_args,
            "--ctrl",
            ctrl,
            *self.extra,
        ]

    def start(self) -> Daemon:
        self.proc = subprocess.Popen(
            self.argv, cwd=REPO, env=env_with_repo(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.wait_listening()
        return self

    def wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        target = self._probe_target()
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"vtpm-cuse exited with {self.proc.returncode}: {self.proc.stderr.read()!r}")
            if self._listening(target):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("vtpm-cuse did not start listening")
            time.sleep(0.05)

    @staticmethod
    def _listening(target: int | str) -> bool:
        if isinstance(target, int):
            return is_listening(target)
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(target)
        except OSError:
            return False
        return True

    def _probe_target(self) -> int | str:
        # Probe the control channel: a probing data connection would count as
        # a data client (and end the daemon under --terminate).
        if self.ctrl and "unixio" in self.ctrl:
            return self.ctrl.split("path=", 1)[1].split(",", 1)[0]
        return self.ctrl_port

    def connect_data(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.data_port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def connect_ctrl(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=10)

    def wait_exit(self, timeout: float = 10) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
