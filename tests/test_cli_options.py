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


def test_ifname_scopes_a_link_local_bind_address_and_uid_gid_own_a_unix_socket() -> None:
    from vtpm_cuse.cli.options import SocketOwner

    assert parse_server_option("port=2321,bindaddr=fe80::1,ifname=eth0").endpoint == TcpEndpoint(2321, "fe80::1%eth0")
    assert parse_ctrl_option("type=unixio,path=/c,uid=107").owner == SocketOwner(uid=107, gid=-1)
    assert parse_server_option("type=unixio,path=/d,gid=5").owner == SocketOwner(uid=-1, gid=5)
    with pytest.raises(CliOptionError, match="uid='x'"):
        parse_ctrl_option("type=unixio,path=/c,uid=x")


def test_migration_profile_pcap_and_print_info_values() -> None:
    from vtpm_cuse.cli.options import (
        RemoveDisabled,
        parse_migration_option,
        parse_pcap_option,
        parse_print_info_option,
        parse_profile_option,
    )

    migration = parse_migration_option("incoming,release-lock-outgoing")
    assert migration.incoming and migration.release_lock_outgoing
    assert parse_profile_option('{"Name":"a,b"}').json_text == '{"Name":"a,b"}'  # commas stay in the JSON
    assert parse_profile_option("file=/p,remove-disabled=check").remove_disabled is RemoveDisabled.CHECK
    pcap = parse_pcap_option("fd=9,checksums")
    assert (pcap.fd, pcap.checksums, pcap.truncate, pcap.mode) == (9, True, False, 0o640)
    assert parse_print_info_option("0x21") == 0x21 == parse_print_info_option("33")
    for bad, needle in (("0", "outside"), ("nine", "not a number")):
        with pytest.raises(CliOptionError, match=needle):
            parse_print_info_option(bad)


def test_a_logged_traceback_stays_one_line() -> None:
    import logging

    from vtpm_cuse.cli.process import OneLineFormatter

    try:
        raise ValueError("first\nsecond")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, __import__("sys").exc_info())
    text = OneLineFormatter("[p] %(message)s").format(record)
    assert "\n" not in text and text.startswith("[p] failed | Traceback") and "ValueError: first | second" in text
