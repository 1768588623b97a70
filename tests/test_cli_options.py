"""Parsing of the daemon's swtpm-style option values (no sockets involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vtpm_cuse.cli.options import (
    CliOptionError,
    ConnectedFd,
    ListeningFd,
    TcpEndpoint,
    UnixEndpoint,
    parse_ctrl_option,
    parse_flags_option,
    parse_log_option,
    parse_pid_option,
    parse_port_option,
    parse_server_option,
)
from vtpm_cuse.flags import StartupMode


def test_server_variants() -> None:
    assert parse_server_option("type=tcp,port=2321,bindaddr=::1,disconnect").endpoint == TcpEndpoint(2321, "::1")
    assert parse_server_option("port=5", environ={}).disconnect is False
    assert parse_server_option("type=tcp", environ={"TPM_PORT": "7000"}).endpoint == TcpEndpoint(7000)
    unix = parse_server_option("type=unixio,path=/run/x.sock,mode=0600")
    assert unix.endpoint == UnixEndpoint(Path("/run/x.sock"), 0o600)
    assert parse_server_option("fd=7").endpoint == ListeningFd(7)
    assert parse_port_option("2321").disconnect is True


def test_ctrl_variants() -> None:
    assert parse_ctrl_option("type=tcp,port=2322,terminate").terminate is True
    assert parse_ctrl_option("type=unixio,clientfd=9").endpoint == ConnectedFd(9)
    assert parse_ctrl_option("fd=9").endpoint == ListeningFd(9)


@pytest.mark.parametrize(
    ("parser", "value", "needle"),
    [
        (parse_server_option, "type=tcp,port=0", "port=0"),
        (parse_server_option, "type=unixio", "path"),
        (parse_server_option, "type=unixio,path=/x,port=3", "port="),
        (parse_server_option, "fd=2", "fd=2"),
        (parse_ctrl_option, "type=tcp,path=/x,port=1", "path="),
        (parse_ctrl_option, "fd=5,clientfd=6", "mutually exclusive"),
        (parse_flags_option, "startup-deactivated", "startup-deactivated"),
        (parse_pid_option, "file=/a,fd=4", "exactly one"),
        (parse_log_option, "level=x,file=/a", "level"),
    ],
)
def test_errors_name_the_value(parser, value: str, needle: str) -> None:
    with pytest.raises(CliOptionError, match=needle):
        parser(value)


def test_flags_and_log() -> None:
    flags = parse_flags_option("not-need-init,startup-state,disable-auto-shutdown")
    assert flags.startup is StartupMode.STATE and flags.disable_auto_shutdown and flags.start_immediately
    assert parse_log_option("file=-").disabled
    assert parse_log_option("fd=2,level=5").fd == 2
