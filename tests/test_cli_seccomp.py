"""``--seccomp action=none|kill|log``: parsed like swtpm 0.10's, and a real seccomp
filter (vtpm_cuse/cli/seccomp.py) installed for every thread: kill ends the process
on a denied syscall, log lets it run, none installs nothing; the daemon serves
under the filter."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon import DAEMON, REPO, START_TIMEOUT, env_with_repo, tpm_roundtrip
from tests.support.net import free_port_pair
from tests.support.tpm_client import Response, command, u16
from vtpm_cuse.cli import daemon, seccomp
from vtpm_cuse.cli.exit_codes import ExitCode
from vtpm_cuse.cli.options import CliOptionError, SeccompAction, parse_seccomp_option
from vtpm_cuse.tpm.constants import TPM_CC, TPM_SU

RANDOM_BYTES = 8
POLL_INTERVAL = 0.05


@pytest.mark.parametrize(
    ("value", "action"),
    [
        ("action=none", SeccompAction.NONE),
        ("action=kill", SeccompAction.KILL),
        ("action=log", SeccompAction.LOG),
        ("", SeccompAction.KILL),  # swtpm: action= omitted means kill
    ],
)
def test_good_values(value: str, action: SeccompAction) -> None:
    assert parse_seccomp_option(value).action is action


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("action=bogus", "bogus"),
        ("action", "action"),
        ("profile=x", "profile"),
    ],
)
def test_bad_values_name_the_value(value: str, needle: str) -> None:
    with pytest.raises(CliOptionError, match=needle):
        parse_seccomp_option(value)


@pytest.mark.parametrize("mode", [("socket",), ("cuse", "-n", "vtpm-seccomp")])
def test_a_bad_value_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mode: tuple[str, ...]
) -> None:
    rc = daemon.run([*mode, "--tpm2", "--tpmstate", f"dir={tmp_path}", "--seccomp", "action=bogus"])
    out, err = capsys.readouterr()
    assert rc == ExitCode.FAILURE == 1
    assert out == "" and err.count("\n") == 1 and "bogus" in err and "--seccomp" in err, err


def _run_filtered(action: str, then: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter that installs the filter with ``action`` and then runs ``then``."""
    program = (
        "import os, threading\n"
        "from vtpm_cuse.cli.options import SeccompAction\n"
        "from vtpm_cuse.cli.seccomp import install_filter\n"
        "worker = threading.Thread(target=threading.Event().wait, daemon=True); worker.start()\n"
        f"print(install_filter(SeccompAction({action!r})), flush=True)\n"
        "print(open(f'/proc/self/task/{worker.native_id}/status').read().split('Seccomp:')[1].split()[0], flush=True)\n"
        f"{then}\n"
    )
    return subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, env=env_with_repo(), capture_output=True, text=True, timeout=60
    )


def test_kill_kills_the_process_on_a_denied_syscall_in_every_thread() -> None:
    result = _run_filtered("kill", "os.execv('/bin/echo', ['echo', 'exec ran'])")
    # The already running thread got the filter too (TSYNC): mode 2 = filter.
    assert result.stdout.splitlines() == ["True", "2"], result
    assert result.returncode == -signal.SIGSYS, result


def test_log_lets_the_denied_syscall_run() -> None:
    result = _run_filtered("log", "os.execv('/bin/echo', ['echo', 'exec ran'])")
    assert result.stdout.splitlines() == ["True", "2", "exec ran"] and result.returncode == 0, result


def test_none_installs_nothing() -> None:
    result = _run_filtered("none", "os.execv('/bin/echo', ['echo', 'exec ran'])")
    assert result.stdout.splitlines() == ["False", "0", "exec ran"] and result.returncode == 0, result


def test_allowed_syscalls_keep_working_under_kill() -> None:
    then = (
        "import socket, hashlib; a, b = socket.socketpair(); a.send(b'x'); "
        "print(b.recv(1), hashlib.sha256().digest_size)"
    )
    result = _run_filtered("kill", then)
    assert result.stdout.splitlines() == ["True", "2", "b'x' 32"] and result.returncode == 0, result


def test_the_filter_program_denies_exactly_the_table() -> None:
    """Every denied number appears once, and the program ends in ALLOW then the deny return."""
    for machine, arch in seccomp.ARCHITECTURES.items():
        program = seccomp.build_filter(SeccompAction.KILL, machine)
        insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
        compared = [k for code, _, _, k in insns if code == 0x15]
        assert sorted(compared[1:]) == sorted(set(arch.syscalls.values())), machine
        assert insns[-2][3] == 0x7FFF0000 and insns[-1][3] == 0x80000000
    with pytest.raises(seccomp.SeccompError, match="sparc"):
        seccomp.build_filter(SeccompAction.LOG, "sparc")


def _wait_until_both_listen(proc: subprocess.Popen[bytes], ports: tuple[int, int]) -> None:
    """Poll until both ports accept a connection; fail if the daemon dies or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    pending = list(ports)
    while pending:
        assert proc.poll() is None, f"vtpm-cuse exited with {proc.returncode}: {proc.stderr.read()!r}"
        try:
            socket.create_connection(("127.0.0.1", pending[0]), timeout=1).close()
            pending.pop(0)
        except OSError:
            assert time.monotonic() < deadline, f"port {pending[0]} not listening after {START_TIMEOUT}s"
            time.sleep(POLL_INTERVAL)


@pytest.mark.parametrize(("seccomp_args", "mode"), [((), "2"), (("--seccomp", "action=kill"), "2")])
def test_the_daemon_serves_under_the_filter(tmp_path: Path, seccomp_args: tuple[str, ...], mode: str) -> None:
    """swtpm's default is action=kill; the daemon serves TPM commands with the filter on."""
    data_port, ctrl_port = free_port_pair()
    argv = [
        *DAEMON, "socket", "--tpm2", "--server", f"port={data_port}", "--ctrl", f"type=tcp,port={ctrl_port}",
        *seccomp_args, "--flags", "not-need-init", "--tpmstate", f"dir={tmp_path}",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, env=env_with_repo(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_until_both_listen(proc, (data_port, ctrl_port))
        with socket.create_connection(("127.0.0.1", data_port), timeout=10) as s:
            startup = Response(tpm_roundtrip(s, command(TPM_CC.Startup, u16(TPM_SU.CLEAR))))
            assert startup.rc == 0
            random = Response(tpm_roundtrip(s, command(TPM_CC.GetRandom, u16(RANDOM_BYTES))))
        assert random.rc == 0
        # Serving starts after the filter is in place (the sockets exist a little earlier).
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert f"Seccomp:\t{mode}\n" in status
        params = random.params()
        assert params[:2] == u16(RANDOM_BYTES) and len(params) == len(u16(0)) + RANDOM_BYTES
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    # SIGTERM still ends it normally: the shutdown path makes no denied call.
    assert proc.returncode == 0, proc.returncode
