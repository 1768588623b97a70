"""``--seccomp``: accepted (and checked) like swtpm 0.10's, so harness command lines
start the daemon unchanged.  No filter is applied yet; these tests pin the parsing
and that the option does not get in the way of serving."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.daemon import DAEMON, REPO, START_TIMEOUT, env_with_repo, tpm_roundtrip
from tests.support.net import free_port_pair
from tests.support.tpm_client import Response, command, u16
from vtpm_cuse.cli import daemon
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


def test_help_says_no_filter_is_applied(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        daemon.build_parser().parse_args(["socket", "--help"])
    assert "no seccomp filter is applied yet" in " ".join(capsys.readouterr().out.split())


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


def test_the_tpm2_tools_harness_command_line_serves(tmp_path: Path) -> None:
    """The exact line tpm2-tools' test harness starts swtpm with."""
    data_port, ctrl_port = free_port_pair()
    argv = [
        *DAEMON,
        "socket",
        "--tpm2",
        "--server",
        f"port={data_port}",
        "--ctrl",
        f"type=tcp,port={ctrl_port}",
        "--seccomp",
        "action=none",
        "--flags",
        "not-need-init",
        "--tpmstate",
        f"dir={tmp_path}",
    ]
    proc = subprocess.Popen(argv, cwd=REPO, env=env_with_repo(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_until_both_listen(proc, (data_port, ctrl_port))
        with socket.create_connection(("127.0.0.1", data_port), timeout=10) as s:
            startup = Response(tpm_roundtrip(s, command(TPM_CC.Startup, u16(TPM_SU.CLEAR))))
            assert startup.rc == 0
            random = Response(tpm_roundtrip(s, command(TPM_CC.GetRandom, u16(RANDOM_BYTES))))
        assert random.rc == 0
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
