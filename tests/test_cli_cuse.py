"""``vtpm-cuse cuse`` and ``vtpm-ioctl``'s device form, as far as they work without
/dev/cuse: option handling, start-up refusals, the command-line reorder, sd_notify.
(The real device: tests/vm/test_cuse_vtpm.py.)"""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
from pathlib import Path

import pytest

from vtpm_cuse import __version__
from vtpm_cuse.cli import daemon, ioctl_tool
from vtpm_cuse.cli.process import RunAs, notify_systemd
from vtpm_cuse.cli.proctitle import reorder_name_last


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = daemon.run(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_print_capabilities_is_the_cuse_variant(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "cuse", "--print-capabilities")
    features = json.loads(out)["features"]
    assert rc == 0 and "tpm-2.0" in features
    assert "tpm-send-command-header" not in features and "ctrl-opt-terminate" not in features


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "cuse", "-v")
    assert rc == 0 and "CUSE interface" in out


def test_every_program_prints_the_one_version(capsys: pytest.CaptureFixture[str]) -> None:
    """The strings swtpm-style scripts parse, all built from ``vtpm_cuse.__version__``."""
    # pyproject.toml takes the package's version from vtpm_cuse.__version__ (dynamic).
    assert __version__ == importlib.metadata.version("vtpm-cuse")
    assert run(capsys, "cuse", "-v")[1] == f"TPM emulator CUSE interface (vtpm-cuse) version {__version__}\n"
    assert run(capsys, "--version")[1] == (
        f"vtpm-cuse version {__version__} (TPM 2.0 emulator with swtpm-compatible interfaces)\n"
    )
    assert json.loads(run(capsys, "socket", "--print-capabilities")[1])["version"] == __version__
    assert ioctl_tool.run(["--version"]) == 0
    assert capsys.readouterr().out == f"TPM emulator control tool (vtpm-ioctl) version {__version__}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("cuse", "--tpm2"), "device name missing"),
        (("cuse", "-n", "a/b"), "must be 1-200 characters"),
        (("cuse", "-n", "x", "-M", "70000"), "outside 0..65535"),
        (("cuse", "-n", "x", "--runas", "no-such-user-here"), "does not exist"),
        (("cuse", "-n", "null", "--tpmstate", "dir=/tmp"), "A device '/dev/null' already exists."),
        (("cuse", "-n", "x", "--flags", "bogus"), "bogus"),
    ],
)
def test_bad_command_lines_are_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    rc, _, err = run(capsys, *argv)
    assert rc == 1 and message in err and err.count("\n") == 1, err


def test_no_state_directory(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TPM_PATH", raising=False)
    rc, _, err = run(capsys, "cuse", "-n", "vtpm-x")
    assert rc == 1 and "TPM_PATH" in err


@pytest.mark.skipif(os.path.exists("/dev/cuse"), reason="this kernel has CUSE")
def test_a_kernel_without_cuse_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _, err = run(capsys, "cuse", "-n", "vtpm-nocuse", "--tpmstate", f"dir={tmp_path}")
    assert rc == 1 and "/dev/cuse does not exist" in err


def test_the_name_is_moved_to_the_end_of_the_command_line() -> None:
    assert reorder_name_last(["cuse", "-n", "vtpm-1", "--tpm2"]) == ["cuse", "--tpm2", "-n", "vtpm-1"]
    assert reorder_name_last(["cuse", "--name=vtpm-1", "--tpm2"]) == ["cuse", "--tpm2", "-n", "vtpm-1"]
    assert reorder_name_last(["cuse", "-nvtpm-1", "--tpm2"]) == ["cuse", "--tpm2", "-n", "vtpm-1"]
    assert reorder_name_last(["cuse", "--tpm2", "-n", "vtpm-1"]) is None  # already last
    assert reorder_name_last(["socket", "-n", "x", "--tpm2"]) is None
    assert reorder_name_last(["cuse", "--tpm2"]) is None


def test_notify_systemd_sends_ready_on_the_datagram_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        assert notify_systemd("READY=1", {"NOTIFY_SOCKET": path})
        assert server.recv(100) == b"READY=1"
    assert not notify_systemd("READY=1", {})
    assert not notify_systemd("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})


def test_runas_lookup() -> None:
    assert RunAs.lookup("0").name == "root"
    with pytest.raises(ValueError, match="does not exist"):
        RunAs.lookup("no-such-user-here")


def test_vtpm_ioctl_device_forms() -> None:
    assert ioctl_tool.parse_arguments(["-c", "/dev/vtpm-x"]).device == "/dev/vtpm-x"
    assert ioctl_tool.parse_arguments(["--tpm-device", "/dev/vtpm-y", "-e"]).device == "/dev/vtpm-y"
    assert ioctl_tool.buffersize_from_env({"SWTPM_IOCTL_BUFFERSIZE": "100"}) == 100
    assert ioctl_tool.buffersize_from_env({"SWTPM_IOCTL_BUFFERSIZE": "0"}) is None
    assert ioctl_tool.buffersize_from_env({"SWTPM_IOCTL_BUFFERSIZE": "x"}) is None
    assert ioctl_tool.buffersize_from_env({}) is None


def test_vtpm_ioctl_on_something_that_is_not_the_device(capsys: pytest.CaptureFixture[str]) -> None:
    assert ioctl_tool.run(["-c", "/dev/null"]) == 1
    assert ioctl_tool.run(["-c", "/nonexistent/vtpm"]) == 1
    err = capsys.readouterr().err
    assert "Could not execute PTM_GET_CAPABILITY" in err and "Unable to open device" in err
