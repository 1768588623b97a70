"""``vtpm-cuse chardev``: TPM commands from an inherited descriptor (``--fd``), a device
(``--chardev``) or the kernel's vTPM proxy (``--vtpm-proxy``; the real device is tested in
the VM, tests/vm/test_vtpm_proxy.py), with the control channel beside it."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import DAEMON, REPO, START_TIMEOUT, env_with_repo
from tests.support.net import free_port
from tests.support.tpm_client import Response, command, u16
from vtpm_cuse.cli import daemon
from vtpm_cuse.tpm.constants import TPM_CC

RANDOM_BYTES = 12


@pytest.fixture(scope="module")
def chardev(tmp_path_factory: pytest.TempPathFactory):
    """A daemon serving one end of a SOCK_SEQPACKET pair (message boundaries, like a chardev)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ctrl_port = free_port()
    state = tmp_path_factory.mktemp("state")
    argv = [
        *DAEMON, "chardev", "--tpm2", "--fd", str(theirs.fileno()), "--tpmstate", f"dir={state}",
        "--flags", "not-need-init,startup-clear", "--ctrl", f"type=tcp,port={ctrl_port}",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, env=env_with_repo(), pass_fds=(theirs.fileno(),), stderr=subprocess.PIPE)
    theirs.close()
    ours.settimeout(START_TIMEOUT)
    try:
        yield proc, ours, ctrl_port, state
    finally:
        ours.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_commands_on_the_descriptor(chardev) -> None:
    _, fd, _, _ = chardev
    fd.send(command(TPM_CC.GetRandom, u16(RANDOM_BYTES)))
    response = Response(fd.recv(4096))
    assert response.rc == 0  # startup-clear was sent by the daemon itself
    assert response.params()[:2] == u16(RANDOM_BYTES) and len(response.params()) == 2 + RANDOM_BYTES


def test_a_short_command_gets_a_tpm_error_not_a_crash(chardev) -> None:
    _, fd, _, _ = chardev
    fd.send(b"\x80\x01\x00")
    assert Response(fd.recv(4096)).rc != 0
    fd.send(command(TPM_CC.GetRandom, u16(1)))
    assert Response(fd.recv(4096)).rc == 0


def test_the_control_channel_runs_beside_it(chardev) -> None:
    """swtpm_ioctl (Debian's, the reference client) reads the capabilities and stops the TPM."""
    proc, fd, ctrl_port, state = chardev
    caps = subprocess.run(["swtpm_ioctl", "--tcp", f"127.0.0.1:{ctrl_port}", "-c"], capture_output=True, timeout=30)
    assert caps.returncode == 0 and caps.stdout.startswith(b"ptm capability is 0x"), caps
    shutdown = subprocess.run(["swtpm_ioctl", "--tcp", f"127.0.0.1:{ctrl_port}", "-s"], capture_output=True, timeout=30)
    assert shutdown.returncode == 0, shutdown
    assert proc.wait(START_TIMEOUT) == 0
    assert (state / "tpm2-00.permall").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "give exactly one of --chardev, --fd or --vtpm-proxy"),
        (("--chardev", "/dev/null", "--vtpm-proxy"), "not --chardev, --vtpm-proxy"),
        (("--chardev", "/nonexistent/tpm"), "--chardev /nonexistent/tpm: No such file or directory"),
        (("--fd", "987"), "--fd 987: Bad file descriptor"),
        (("--vtpm-proxy",), "cannot open /dev/vtpmx"),
    ],
)
def test_bad_sources_are_one_line(
    argv: tuple[str, ...], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if argv == ("--vtpm-proxy",) and Path("/dev/vtpmx").exists():
        pytest.fail("this host has /dev/vtpmx: the proxy is exercised by tests/vm/test_vtpm_proxy.py instead")
    rc = daemon.run(["chardev", "--tpm2", "--tpmstate", f"dir={tmp_path}", "--seccomp", "action=none", *argv])
    _, err = capsys.readouterr()
    assert rc == 1 and err.count("\n") == 1 and message in err, err


def test_a_character_device_is_served_until_end_of_file(tmp_path: Path) -> None:
    """``--chardev /dev/null``: the first read() is end of file, so the daemon stops cleanly."""
    log = tmp_path / "chardev.log"
    argv = [
        *DAEMON, "chardev", "--tpm2", "--chardev", "/dev/null", "--tpmstate", f"dir={tmp_path / 'state'}",
        "--flags", "not-need-init", "--log", f"file={log},level=1",
    ]  # fmt: skip
    result = subprocess.run(argv, cwd=REPO, env=env_with_repo(), capture_output=True, timeout=START_TIMEOUT * 4)
    assert result.returncode == 0, result.stderr
    text = log.read_text()
    assert "serving chardev /dev/null" in text and "end of file" in text, text
