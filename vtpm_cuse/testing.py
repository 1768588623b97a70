"""Throw-away vTPMs for other projects' tests.

:func:`running_vtpm` starts a ``vtpm-cuse socket`` on a temporary state directory and
yields a :class:`RunningVtpm` with the ports and a tpm2-tss TCTI string; on exit the
daemon is stopped and the state removed (unless you passed your own ``state_dir``).

Ports are never guessed: the listening sockets are bound here, on port 0, and handed to
the daemon as inherited descriptors (``--server fd=N --ctrl type=tcp,fd=M``), and start-up
is awaited through the daemon's own systemd readiness message (``READY=1`` on a private
``NOTIFY_SOCKET``), so there is neither a port race nor polling.

The pytest plugin (registered as the ``vtpm_cuse`` ``pytest11`` entry point) offers the
``vtpm`` fixture (one TPM per test) and ``vtpm_module`` (one per module)::

    def test_random(vtpm):
        subprocess.run(["tpm2_getrandom", "8"], env={**os.environ, "TPM2TOOLS_TCTI": vtpm.tcti}, check=True)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunningVtpm", "VtpmStartError", "running_vtpm"]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
MAX_PORT_TRIES = 100


class VtpmStartError(RuntimeError):
    """The daemon exited or did not report readiness in time."""


@dataclass(frozen=True)
class RunningVtpm:
    state_dir: Path
    data_port: int
    ctrl_port: int
    pid: int
    host: str = "127.0.0.1"

    @property
    def tcti(self) -> str:
        """For ``TPM2TOOLS_TCTI`` / ``TSS2_TCTI`` / ``tpm2_pytss.TCTILdr(*tcti.split(":", 1))``:
        tpm2-tss' swtpm TCTI, which finds the control channel at data port + 1."""
        return f"swtpm:host={self.host},port={self.data_port}"


def _listener(host: str, port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(8)
    sock.set_inheritable(True)
    return sock


def _listener_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """Listening sockets on ports N and N + 1 (the swtpm TCTI's layout), both held open
    from here on, so no other process can take them before the daemon serves them."""
    for _ in range(MAX_PORT_TRIES):
        data = _listener(host)
        try:
            return data, _listener(host, data.getsockname()[1] + 1)
        except OSError:
            data.close()
    raise VtpmStartError(f"no two consecutive free TCP ports on {host}")


def _await_ready(notify: socket.socket, proc: subprocess.Popen[bytes], timeout: float) -> None:
    notify.settimeout(0.2)
    waited = 0.0
    while waited < timeout:
        try:
            if b"READY=1" in notify.recv(4096).split(b"\n"):
                return
        except TimeoutError:
            waited += 0.2
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            raise VtpmStartError(f"vtpm-cuse exited with {proc.returncode}: {err}")
    raise VtpmStartError(f"vtpm-cuse did not become ready within {timeout} s")


@contextmanager
def running_vtpm(
    state_dir: str | os.PathLike[str] | None = None,
    *,
    startup: bool = True,
    extra_args: Sequence[str] = (),
    host: str = "127.0.0.1",
    timeout: float = START_TIMEOUT,
) -> Iterator[RunningVtpm]:
    """A ``vtpm-cuse socket`` for the duration of the block.

    ``startup``: the TPM is initialised and TPM2_Startup(CLEAR) has run (a client can send
    commands at once); False leaves both to the client, like a freshly powered platform.
    ``extra_args`` are appended to the daemon's command line (e.g. ``["--object-slots", "3"]``).
    """
    with ExitStack() as stack:
        scratch = Path(tempfile.mkdtemp(prefix="vtpm-cuse-"))
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        state = Path(state_dir) if state_dir is not None else scratch / "state"
        state.mkdir(parents=True, exist_ok=True)
        data, ctrl = _listener_pair(host)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for sock in (data, ctrl, notify):
            stack.callback(sock.close)
        notify_path = scratch / "notify"
        notify.bind(str(notify_path))
        flags = ["--flags", "not-need-init,startup-clear"] if startup else []
        argv = [sys.executable, "-m", "vtpm_cuse.cli.daemon", "socket", "--tpm2", "--tpmstate", f"dir={state}"]
        argv += ["--server", f"fd={data.fileno()}", "--ctrl", f"type=tcp,fd={ctrl.fileno()}", *flags, *extra_args]
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
        proc = subprocess.Popen(
            argv,
            pass_fds=(data.fileno(), ctrl.fileno()),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        stack.callback(_stop, proc)
        _await_ready(notify, proc, timeout)
        yield RunningVtpm(state, data.getsockname()[1], ctrl.getsockname()[1], proc.pid, host)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr:
        proc.stderr.close()
