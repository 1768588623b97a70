"""swtpm's option lists, taken literally from its man page (swtpm.8 of swtpm 0.10/0.11),
run against our parser: every option of the socket, chardev and cuse modes is
accepted -- parsed into values by the same functions the daemon uses -- or refused
with a one-line message naming it (exit 1, nothing started), as the README's
"swtpm options" table documents.  Also: the ``--print-*`` documents and the
``--help`` order."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vtpm_cuse.cli import daemon
from vtpm_cuse.cli.arguments import OPTIONS, ORDER, swtpm_option_names
from vtpm_cuse.cli.exit_codes import ExitCode
from vtpm_cuse.cli.info import Mode
from vtpm_cuse.cli.options import parse_ctrl_option, parse_data_fd_option, parse_server_option
from vtpm_cuse.cli.startup import parse_common
from vtpm_cuse.state import parse_key_option, resolve_tpmstate

# -- the man page's synopsis lines, per section -----------------------------------

SOCKET_ONLY = (
    "-p|--port <port>",
    "-t|--terminate",
    "--server [type=tcp][,port=<port>[,bindaddr=<address> [,ifname=<ifname>]]][,fd=<fd>][,disconnect]",
    "--server type=unixio[,path=<path>][,fd=<fd>] [,mode=<0...>][,uid=<uid>][,gid=<gid>]",
)
CHARDEV_ONLY = (
    "-c|--chardev <device path>",
    "--vtpm-proxy",
)
CUSE_ONLY = (
    "-n|--name <NAME>",
    "-M|--maj <MAJOR>",
    "-m|--min <MINOR>",
)
SOCKET_AND_CHARDEV = (
    "-f|--fd <fd>",
    "-d|--daemon",
    "--ctrl type=[unixio|tcp][,path=<path>] [,port=<port>[,bindaddr=<address>[,ifname=<ifname>]]] "
    "[,fd=<filedescriptor>|clientfd=<filedescriptor>] [,mode=<0...>][,uid=<uid>][,gid=<gid>][,terminate]",
)
ALL_INTERFACES = (
    "--tpmstate dir=<dir>|backend-uri=<uri>[,mode=<0...>][,lock][,backup][,fsync]",
    "--tpm2",
    "--log [fd=<fd>|file=<path>][,level=<n>] [,prefix=<prefix>][,truncate]",
    "--locality reject-locality-4[,allow-set-locality]",
    "--key file=<keyfile>|fd=<fd> [,format=<hex|binary>][,mode=aes-cbc|aes-256-cbc], [remove[=true|false]]",
    "--key pwdfile=<passphrase file>|pwdfd=<fd> [,mode=aes-cbc|aes-256-cbc][remove[=true|false]][,kdf=sha512|pbkdf2]",
    "--migration-key file=<keyfile>|fd=<fd> [,format=<hex|binary>][,mode=aes-cbc|aes-256-cbc] [,remove[=true|false]]",
    "--migration-key pwdfile=<passphrase file>|pwdfd=<fd> "
    "[,mode=aes-cbc|aes-256-cbc][,remove[=true|false]][,pdf=sha512|pbkdf2]",
    "--pid file=<pidfile>|fd=<filedescriptor>",
    "-r|--runas <owner>",
    "-R|--chroot <path>",
    "--seccomp action=none|log|kill",
    "--flags [not-need-init][,startup-clear|startup-state|startup-deactivated|startup-none][,disable-auto-shutdown]",
    "--print-capabilities",
    "--print-states",
    "--migration [incoming][,release-lock-outgoing]",
    "--profile name=<profile-name>|profile=<json-profile>|file=<filename>|fd=<fd>[,remove-disabled=check|fips-host]",
    "--print-profiles",
    "--print-info",
    "--pcap file=<path>|fd=<file descriptor>[,truncate][,mode=<0...>][,checksums]",
    "-h|--help",
)  # fmt: skip

MODES = {
    Mode.SOCKET: SOCKET_ONLY + SOCKET_AND_CHARDEV + ALL_INTERFACES,
    Mode.CHARDEV: CHARDEV_ONLY + SOCKET_AND_CHARDEV + ALL_INTERFACES,
    Mode.CUSE: CUSE_ONLY + ALL_INTERFACES,
}
"""Which synopsis lines apply to which mode (the man page's section headings)."""

# -- concrete command lines for every synopsis line, and what must happen -----------

ACCEPTED = "accepted"
PRINTS = "prints"

CASES: dict[str, list[tuple[tuple[str, ...], str]]] = {
    "-p|--port <port>": [(("-p", "2321"), ACCEPTED), (("--port", "2321"), ACCEPTED), (("-p", "0"), "port=0")],
    "-t|--terminate": [(("-t",), ACCEPTED), (("--terminate",), ACCEPTED)],
    "--server [type=tcp]": [
        (("--server", "type=tcp,port=2321,bindaddr=127.0.0.1,disconnect"), ACCEPTED),
        (("--server", "port=2321,bindaddr=fe80::1,ifname=lo"), ACCEPTED),
        (("--server", "type=tcp,fd=5"), ACCEPTED),
        (("--server", "port=2321,ifname=lo"), "ifname=lo"),
        (("--server", "type=udp"), "type='udp'"),
    ],
    "--server type=unixio[": [
        (("--server", "type=unixio,path=/run/x.sock,mode=0660,uid=0,gid=0"), ACCEPTED),
        (("--server", "type=unixio,fd=5"), ACCEPTED),
        (("--server", "type=tcp,port=2321,uid=0"), "uid="),
    ],
    "-c|--chardev <device path>": [(("-c", "/dev/null"), ACCEPTED), (("--chardev", "/dev/null"), ACCEPTED)],
    "--vtpm-proxy": [(("--vtpm-proxy",), ACCEPTED)],
    "-n|--name <NAME>": [(("-n", "vtpm0"), ACCEPTED), (("--name", "vtpm0"), ACCEPTED)],
    "-M|--maj <MAJOR>": [(("-M", "240"), ACCEPTED), (("--maj", "70000"), "outside 0..65535")],
    "-m|--min <MINOR>": [(("-m", "3"), ACCEPTED), (("--min", "x"), "'x' is not a number")],
    "-f|--fd <fd>": [(("-f", "5"), ACCEPTED), (("--fd", "1"), "fd=1")],
    "-d|--daemon": [(("-d",), ACCEPTED), (("--daemon",), ACCEPTED)],
    "--ctrl": [
        (("--ctrl", "type=unixio,path=/run/c.sock,mode=0600,uid=0,gid=0,terminate"), ACCEPTED),
        (("--ctrl", "type=tcp,port=2322,bindaddr=::1,terminate"), ACCEPTED),
        (("--ctrl", "type=tcp,port=2322,bindaddr=fe80::1,ifname=lo"), ACCEPTED),
        (("--ctrl", "type=unixio,fd=6"), ACCEPTED),
        (("--ctrl", "type=unixio,clientfd=7"), ACCEPTED),
        (("--ctrl", "type=tcp"), "needs port="),
    ],
    "--tpmstate": [
        (("--tpmstate", "dir=/var/lib/tpm,mode=0640,lock,backup,fsync"), ACCEPTED),
        (("--tpmstate", "backend-uri=dir:///var/lib/tpm"), ACCEPTED),
        (("--tpmstate", "backend-uri=file:///var/lib/tpm.img,lock"), ACCEPTED),
        (("--tpmstate", "backend-uri=file:///var/lib/tpm.img,backup"), "only supported by the directory backend"),
        (("--tpmstate", "backend-uri=nbd://x"), "unknown scheme"),
    ],
    "--tpm2": [(("--tpm2",), ACCEPTED)],
    "--log": [
        (("--log", "fd=2,level=20,prefix=swtpm:,truncate"), ACCEPTED),
        (("--log", "file=/tmp/swtpm.log,level=5"), ACCEPTED),
        (("--log", "file=-"), ACCEPTED),
        (("--log", "level=x,file=/tmp/l"), "level='x'"),
    ],
    "--locality": [(("--locality", "reject-locality-4,allow-set-locality"), ACCEPTED)],
    "--key file=": [
        (("--key", "file=/k,format=hex,mode=aes-cbc,remove=false"), ACCEPTED),
        (("--key", "fd=5,format=binary,mode=aes-256-cbc,remove"), ACCEPTED),
        (("--key", "file=/k,mode=aes-512-cbc"), "aes-512-cbc"),
    ],
    "--key pwdfile=": [
        (("--key", "pwdfile=/p,mode=aes-256-cbc,remove=true,kdf=sha512"), ACCEPTED),
        (("--key", "pwdfd=5,kdf=pbkdf2"), ACCEPTED),
    ],
    "--migration-key file=": [(("--migration-key", "file=/k,format=binary,mode=aes-256-cbc,remove"), ACCEPTED)],
    "--migration-key pwdfile=": [(("--migration-key", "pwdfile=/p,mode=aes-cbc,remove=false,kdf=sha512"), ACCEPTED)],
    "--pid": [(("--pid", "file=/run/swtpm.pid"), ACCEPTED), (("--pid", "fd=5"), ACCEPTED)],
    "-r|--runas <owner>": [
        (("-r", "nobody"), ACCEPTED),
        (("--runas", "0"), ACCEPTED),
        (("--runas", "no-such-user-here"), "does not exist"),
    ],
    "-R|--chroot <path>": [(("-R", "/var/empty"), ACCEPTED), (("--chroot", "/var/empty"), ACCEPTED)],
    "--seccomp": [
        (("--seccomp", "action=none"), ACCEPTED),
        (("--seccomp", "action=log"), ACCEPTED),
        (("--seccomp", "action=kill"), ACCEPTED),
        (("--seccomp", "action=trap"), "action='trap'"),
    ],
    "--flags": [
        (("--flags", "not-need-init,startup-clear,disable-auto-shutdown"), ACCEPTED),
        (("--flags", "startup-state"), ACCEPTED),
        (("--flags", "startup-none"), ACCEPTED),
        (("--flags", "startup-deactivated"), "only valid for a TPM 1.2"),
    ],
    "--print-capabilities": [(("--print-capabilities",), PRINTS)],
    "--print-states": [(("--print-states",), PRINTS)],
    "--migration [": [
        (("--migration", "incoming,release-lock-outgoing"), ACCEPTED),
        (("--migration", "incoming"), ACCEPTED),
        (("--migration", "outgoing"), "'outgoing'"),
    ],
    "--profile": [
        (("--profile", "name=default-v1"), ACCEPTED),
        (("--profile", 'profile={"Name":"default-v1","Description":"x"}'), ACCEPTED),
        (("--profile", "name=custom"), "unknown profile 'custom'"),
        (("--profile", '{"Name":"custom:test","Algorithms":"rsa"}'), "Algorithms"),
        (("--profile", "name=default-v1,remove-disabled=fips-host"), "remove-disabled=fips-host"),
        (("--profile", "name=default-v1,remove-disabled=all"), "remove-disabled='all'"),
    ],
    "--print-profiles": [(("--print-profiles",), PRINTS)],
    "--print-info": [(("--print-info", "0xff"), PRINTS), (("--print-info", "0x100"), "outside")],
    "--pcap": [
        (("--pcap", "file=/tmp/t.pcap,truncate,mode=0600,checksums"), ACCEPTED),
        (("--pcap", "fd=5"), ACCEPTED),
        (("--pcap", "file=/tmp/t.pcap,mode=0999"), "mode='0999'"),
        (("--pcap", "mode=0600"), "exactly one of file= or fd="),
    ],
    "-h|--help": [(("-h",), PRINTS), (("--help",), PRINTS)],
}
"""Keyed by the start of a synopsis line; every value of every option appears at least once."""

_CHARDEV_SOURCES = ("-c", "--chardev", "-f", "--fd", "--vtpm-proxy")


def _required_args(mode: Mode, argv: tuple[str, ...]) -> tuple[str, ...]:
    """What the mode needs besides the option under test: a device name, a command source
    (one that would fail loudly if it were ever opened)."""
    if mode is Mode.CUSE:
        return ("-n", "vtpm-options-test")
    if mode is Mode.CHARDEV and not set(argv) & set(_CHARDEV_SOURCES):
        return ("--chardev", "/nonexistent/chardev")
    return ()


def _cases_for(synopsis: str) -> list[tuple[tuple[str, ...], str]]:
    keys = [
        key
        for key in CASES
        if synopsis.startswith(key) and (key[-1] in "=[]" or synopsis[len(key) : len(key) + 1] in ("", " "))
    ]
    assert len(keys) == 1, f"no single case list for {synopsis!r}: {keys}"
    return CASES[keys[0]]


def _parse_like_the_daemon(mode: Mode, argv: list[str]) -> None:
    """What the daemon does with a command line before it opens anything."""
    args = daemon.build_parser().parse_args([mode.value, *argv])
    parse_common(args, mode)
    if getattr(args, "server", None) is not None:
        parse_server_option(args.server)
    if getattr(args, "ctrl", None) is not None:
        parse_ctrl_option(args.ctrl)
    if mode is Mode.SOCKET and args.fd is not None:
        parse_data_fd_option(args.fd)
    if args.tpmstate is not None:
        resolve_tpmstate(args.tpmstate)
    for option in ("key", "migration_key"):
        if getattr(args, option) is not None:
            parse_key_option(getattr(args, option), "--" + option.replace("_", "-"))


ALL_CASES = [
    pytest.param(mode, argv, expected, id=f"{mode.value}:{' '.join(argv)}")
    for mode, synopses in MODES.items()
    for synopsis in synopses
    for argv, expected in _cases_for(synopsis)
    if not (mode is Mode.CUSE and argv[0] in ("-n", "--name"))
]


@pytest.mark.parametrize(("mode", "argv", "expected"), ALL_CASES)
def test_every_swtpm_option(
    mode: Mode, argv: tuple[str, ...], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    if expected == ACCEPTED:
        _parse_like_the_daemon(mode, list(argv))
        return
    extra = ["--tpmstate", f"dir={tmp_path}"] if "--print-states" in argv else []
    if expected == PRINTS:
        if argv[0] in ("-h", "--help"):
            with pytest.raises(SystemExit) as exit_info:
                daemon.run([mode.value, *argv])
            assert exit_info.value.code == 0 and capsys.readouterr().out.startswith(f"usage: vtpm-cuse {mode.value}")
            return
        assert daemon.run([mode.value, *argv, *extra]) == ExitCode.OK
        assert isinstance(json.loads(capsys.readouterr().out), dict)
        return
    before = set(os.listdir(tmp_path))
    rc = daemon.run([mode.value, *_required_args(mode, argv), "--tpmstate", f"dir={tmp_path}", *argv])
    out, err = capsys.readouterr()
    assert rc == ExitCode.FAILURE and out == "", (out, err)
    assert err.count("\n") == 1 and expected in err, err
    assert set(os.listdir(tmp_path)) == before, "a refused command line touched the state directory"


def test_every_case_is_a_swtpm_option() -> None:
    """The lists above cover every option our parser declares for swtpm, and nothing else."""
    for mode, synopses in MODES.items():
        spelled = {name for synopsis in synopses for name in synopsis.split(" ")[0].split("|")}
        assert spelled == set(swtpm_option_names(mode)) - {"-v", "--version"}, mode


@pytest.mark.parametrize("mode", list(Mode))
def test_help_lists_swtpms_options_in_swtpms_order(mode: Mode, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        daemon.run([mode.value, "--help"])
    out = capsys.readouterr().out
    listed = [line.split()[0].rstrip(",") for line in out.splitlines() if line.startswith("  -")]
    swtpm_order = [OPTIONS[key].names[0] for key in ORDER[mode]]
    assert [name for name in listed if name in swtpm_order] == swtpm_order
    assert listed[: len(swtpm_order)] == swtpm_order, "our own options come after swtpm's"


def test_print_states_lists_what_is_stored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tpm2-00.permall").write_bytes(b"x" * 17)
    assert daemon.run(["socket", "--tpm2", "--tpmstate", f"dir={tmp_path}", "--print-states"]) == 0
    assert json.loads(capsys.readouterr().out) == {"type": "swtpm", "states": [{"name": "permall", "size": 17}]}


def test_print_info_flags_select_the_parts(capsys: pytest.CaptureFixture[str]) -> None:
    assert daemon.run(["socket", "--tpm2", "--print-info", "0x1"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == ["TPMSpecification"]
    assert daemon.run(["chardev", "--tpm2", "--print-info", "0x60"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)) == ["ActiveProfile", "AvailableProfiles"]


@pytest.mark.parametrize(
    ("mode", "header", "terminate"),
    [(Mode.SOCKET, True, True), (Mode.CHARDEV, False, True), (Mode.CUSE, False, False)],
)
def test_capabilities_name_the_implemented_features(
    mode: Mode, header: bool, terminate: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    from vtpm_cuse import __version__

    assert daemon.run([mode.value, "--print-capabilities"]) == 0
    document = json.loads(capsys.readouterr().out)
    features = set(document["features"])
    assert document["type"] == "swtpm" and document["version"] == __version__
    for implemented in (
        "tpm-2.0", "cmdarg-seccomp", "cmdarg-key-fd", "cmdarg-pwd-fd", "cmdarg-print-states", "cmdarg-chroot",
        "cmdarg-migration", "nvram-backend-dir", "nvram-backend-file", "flags-opt-startup",
        "flags-opt-disable-auto-shutdown", "rsa-keysize-1024", "rsa-keysize-2048", "rsa-keysize-3072",
        "cmdarg-profile", "cmdarg-print-profiles", "cmdarg-print-info", "tpmstate-opt-lock", "cmdarg-pcap",
    ):  # fmt: skip
        assert implemented in features, implemented
    assert ("tpm-send-command-header" in features) is header
    assert ("ctrl-opt-terminate" in features) is terminate
    for missing in ("tpm-1.2", "profile-opt-remove-disabled"):
        assert missing not in features, missing


def _help_options(text: str) -> list[str]:
    """The option column of a swtpm-style help screen (``-c   : ...`` lines)."""
    return [line.split()[0] for line in text.splitlines() if line.startswith("-") and ":" in line]


def test_vtpm_ioctl_help_lists_swtpm_ioctls_options_in_its_order(capsys: pytest.CaptureFixture[str]) -> None:
    """Against Debian's swtpm_ioctl (0.7): every option it lists, in the same order."""
    import subprocess

    from vtpm_cuse.cli import ioctl_tool

    reference = subprocess.run(["swtpm_ioctl", "--help"], capture_output=True, text=True, timeout=30)
    theirs = _help_options(reference.stdout + reference.stderr)
    assert ioctl_tool.run(["--help"]) == 0
    ours = _help_options(capsys.readouterr().out)
    assert len(theirs) > 15 and [name for name in ours if name in theirs] == theirs, (theirs, ours)
