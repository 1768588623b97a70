"""Wire-level behaviour of ``vtpm-cuse socket``: QEMU's control sequence with
CMD_SET_DATAFD, malformed control messages, data-channel framings and
connection models, and the command line."""

from __future__ import annotations

import array
import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.daemon import DAEMON, REPO, Daemon, ctrl_roundtrip, env_with_repo, recv_exact, tpm_roundtrip

READ_CLOCK = bytes.fromhex("80010000000a00000181")
FATAL_ERROR = bytes.fromhex("80010000000a00000101")
STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
GET_RANDOM_8 = bytes.fromhex("80010000000c0000017b0008")


def cmd(code: int, body: bytes = b"") -> bytes:
    return code.to_bytes(4, "big") + body


def send_fd(sock: socket.socket, message: bytes, fd: int) -> None:
    sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


@pytest.fixture
def unix_daemon(tmp_path: Path):
    """Like QEMU's setup: a UnixIO control socket and no data server."""
    path = tmp_path / "ctrl.sock"
    d = Daemon(tmp_path / "state", ctrl=f"type=unixio,path={path}", server="").start()
    try:
        yield d
    finally:
        d.stop()


def test_qemu_sequence_with_set_datafd(unix_daemon: Daemon) -> None:
    ctrl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctrl.settimeout(10)
    ctrl.connect(str(unix_daemon.state_dir.parent / "ctrl.sock"))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.settimeout(10)
    with ctrl, ours:
        send_fd(ctrl, cmd(0x10), theirs.fileno())
        theirs.close()
        assert recv_exact(ctrl, 4) == bytes(4)
        # Version probe before INIT: a stopped TPM answers with the TPM 2 fatal error.
        ours.sendall(READ_CLOCK)
        assert ours.recv(1024) == FATAL_ERROR
        assert ctrl_roundtrip(ctrl, cmd(0x01), 8) == bytes.fromhex("000000000001ffff")
        assert ctrl_roundtrip(ctrl, cmd(0x0E), 4) == bytes(4)  # STOP
        assert ctrl_roundtrip(ctrl, cmd(0x11, bytes(4)), 16)[:4] == bytes(4)  # SET_BUFFERSIZE(0)
        assert ctrl_roundtrip(ctrl, cmd(0x11, (4096).to_bytes(4, "big")), 16)[:8] == bytes.fromhex("0000000000001000")
        assert ctrl_roundtrip(ctrl, cmd(0x02, bytes(4)), 4) == bytes(4)  # INIT
        assert ctrl_roundtrip(ctrl, cmd(0x05, bytes([0, 0, 0, 0])), 4) == bytes(4)  # SET_LOCALITY, QEMU-padded
        assert tpm_roundtrip(ours, STARTUP_CLEAR) == bytes.fromhex("80010000000a00000000")
        response = tpm_roundtrip(ours, GET_RANDOM_8)
        assert response[6:10] == bytes(4) and len(response) == 10 + 2 + 8
        assert ctrl_roundtrip(ctrl, cmd(0x04), 8) == bytes(8)  # GET_TPMESTABLISHED
        # A second SET_DATAFD while the first data connection is in use: TPM_IOERROR.
        a, b = socket.socketpair()
        with a, b:
            send_fd(ctrl, cmd(0x10), b.fileno())
            assert recv_exact(ctrl, 4) == (0x1F).to_bytes(4, "big")
        assert ctrl_roundtrip(ctrl, cmd(0x03), 4) == bytes(4)  # SHUTDOWN
    assert unix_daemon.wait_exit() == 0
    assert not (unix_daemon.state_dir.parent / "ctrl.sock").exists()


@pytest.mark.parametrize(
    ("message", "reply"),
    [
        (cmd(0xFFFF), "0000000a"),  # unknown command
        (cmd(0x02), "00000003"),  # INIT without its body (after the bounded wait)
        (cmd(0x0F, b"x"), "00000003"),  # GET_CONFIG with a body (trailing bytes: test_sockets_hostile)
        (cmd(0x0E, b"x"), "00000003"),  # STOP with a body
        (b"\x00\x00", "00000003"),  # not even a command code
        (cmd(0x10), "0000001f"),  # SET_DATAFD without a descriptor (TCP)
        (cmd(0x0C, bytes(12)), "0000000a"),  # GET_STATEBLOB before INIT
        (cmd(0x12, (1).to_bytes(8, "big") + (100000).to_bytes(4, "big") + bytes(4)), "00000003"),  # GET_INFO offset
    ],
    ids=[
        "unknown",
        "init-short",
        "getconfig-body",
        "stop-body",
        "short-code",
        "datafd-tcp",
        "getstate-stopped",
        "getinfo-offset",
    ],
)
def test_malformed_control_messages(daemon: Daemon, message: bytes, reply: str) -> None:
    with daemon.connect_ctrl() as s:
        started = time.monotonic()
        assert ctrl_roundtrip(s, message, 4).hex() == reply
        # Answered, not left hanging: a bound far above BODY_TIMEOUT (0.5 s) and the
        # engine's import, which the first GET_INFO of a stopped TPM may wait for.
        assert time.monotonic() - started < 10
        # The channel still works afterwards.
        assert ctrl_roundtrip(s, cmd(0x01), 8) == bytes.fromhex("000000000001ffff")


def test_oversized_set_stateblob_is_refused_and_connection_closed(daemon: Daemon) -> None:
    with daemon.connect_ctrl() as s:
        s.sendall(cmd(0x0D, bytes(8) + (1 << 30).to_bytes(4, "big")))
        assert recv_exact(s, 4) == (0x09).to_bytes(4, "big")
        assert s.recv(10) == b""


def test_data_channel_persistent_and_per_command_connections(daemon: Daemon) -> None:
    with daemon.connect_ctrl() as c:
        assert ctrl_roundtrip(c, cmd(0x02, bytes(4)), 4) == bytes(4)
    with daemon.connect_data() as s:
        assert tpm_roundtrip(s, STARTUP_CLEAR)[6:10] == bytes(4)
        for _ in range(5):
            assert tpm_roundtrip(s, GET_RANDOM_8)[6:10] == bytes(4)
    for _ in range(5):
        with daemon.connect_data() as s:
            assert tpm_roundtrip(s, GET_RANDOM_8)[6:10] == bytes(4)


def test_send_command_header_framing(daemon: Daemon) -> None:
    with daemon.connect_ctrl() as c:
        assert ctrl_roundtrip(c, cmd(0x02, bytes(4)), 4) == bytes(4)
    with daemon.connect_data() as s:
        assert tpm_roundtrip(s, STARTUP_CLEAR)[6:10] == bytes(4)
        framed = (8).to_bytes(4, "big") + bytes([0]) + len(GET_RANDOM_8).to_bytes(4, "big") + GET_RANDOM_8
        s.sendall(framed)
        size = int.from_bytes(recv_exact(s, 4), "big")
        response = recv_exact(s, size)
        assert response[6:10] == bytes(4) and size == 20
        assert recv_exact(s, 4) == bytes(4)  # the ack
        # A command split across two writes is still executed as one.
        s.sendall(GET_RANDOM_8[:5])
        time.sleep(0.05)
        s.sendall(GET_RANDOM_8[5:])
        assert recv_exact(s, 10)[6:10] == bytes(4)


def test_disconnect_closes_after_each_response(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "state", extra=["--flags", "not-need-init"])
    d.server = f"type=tcp,port={d.data_port},disconnect"
    d.start()
    try:
        with d.connect_data() as s:
            assert tpm_roundtrip(s, STARTUP_CLEAR)[6:10] == bytes(4)
            assert s.recv(10) == b""
    finally:
        d.stop()


def test_terminate_when_the_data_client_goes_away(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "state", extra=["--flags", "startup-clear", "-t"]).start()
    try:
        with d.connect_data() as s:
            assert tpm_roundtrip(s, GET_RANDOM_8)[6:10] == bytes(4)
        assert d.wait_exit() == 0
    finally:
        d.stop()


def _daemon_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DAEMON, *args], capture_output=True, text=True, timeout=60, cwd=REPO, env=env_with_repo())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["socket", "--server", "type=udp,port=1"], "type='udp'"),
        (["socket", "--server", "type=tcp,port=99999"], "99999"),
        (["socket", "--ctrl", "type=tcp"], "port"),
        (["socket", "--flags", "startup-clear,startup-state"], "startup-clear"),
        (["socket", "--locality", "bogus"], "bogus"),
        (["socket", "--bogus"], "--bogus"),
        (["socket", "--tpmstate", "dir=/tmp", "-p", "1", "--server", "port=2"], "mutually exclusive"),
        (["cuse"], "cuse"),
        ([], "mode"),
    ],
)
def test_bad_options_give_one_line(args: list[str], needle: str) -> None:
    result = _daemon_cli(*args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert needle in result.stderr


def test_print_capabilities_and_version() -> None:
    caps = json.loads(_daemon_cli("socket", "--print-capabilities").stdout)
    assert caps["type"] == "swtpm"
    assert "tpm-2.0" in caps["features"] and "tpm-send-command-header" in caps["features"]
    assert "tpm-1.2" not in caps["features"]
    assert "version" in _daemon_cli("--version").stdout


def test_address_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = _daemon_cli("socket", "--tpmstate", f"dir={tmp_path}", "--server", f"type=tcp,port={port}")
    assert result.returncode == 1
    assert str(port) in result.stderr and result.stderr.count("\n") == 1
