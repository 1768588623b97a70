"""Fuzz target: the option parsers of ``vtpm-cuse``, ``vtpm-ioctl`` and ``vtpm-setup``.

Input format: the first byte picks a parser from :data:`PARSERS` (modulo their
number); the rest is its input, decoded as the OS decodes a command line
(``os.fsdecode``: UTF-8 with surrogate escapes).  Value parsers (``--server``,
``--ctrl``, ``--key``, ``--tpmstate`` ...) take the text whole; command-line parsers
split it at NUL bytes into an argv, as execve passes it.

Oracle: a parser returns a value or raises its one usage error -- the exception
family each CLI's ``run`` turns into a one-line message and exit status 1
(:data:`USAGE_ERRORS`), with a non-empty message without line breaks of its own;
any other exception is a crash (argparse's ``--help`` exits 0, which is allowed).  Only parsing runs: no
socket, file or daemon is opened (``--profile file=/fd=`` is parsed but not read).
``tests/test_cli_bad_argv.py`` runs :data:`BAD_ARGVS` through the real programs.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from vtpm_cuse.cli import daemon, info, ioctl_tool
from vtpm_cuse.cli import options as cli_options
from vtpm_cuse.cli.info import Mode
from vtpm_cuse.cli.startup import parse_common
from vtpm_cuse.setup import cli as setup_cli
from vtpm_cuse.state.errors import OptionError
from vtpm_cuse.state.keyoption import parse_key_option
from vtpm_cuse.state.tpmstate import parse_tpmstate_option

__all__ = ["BAD_ARGVS", "PARSERS", "USAGE_ERRORS", "fuzz_one", "seeds"]

USAGE_ERRORS: Final = (OptionError, daemon.UsageError, ioctl_tool.UsageError, setup_cli.UsageError)
"""What each program's ``run`` reports as one line + exit 1 (OptionError covers
CliOptionError, KeyOptionError and TpmStateOptionError)."""

_PROFILE_READS: Final = ("file=", "fd=")


def _daemon_argv(argv: list[str]) -> None:
    """``vtpm-cuse MODE ...`` up to the point where the daemon would open anything."""
    args = daemon.build_parser().parse_args(argv)
    if args.mode is None:
        return
    if getattr(args, "profile", None) is not None and any(s in args.profile for s in _PROFILE_READS):
        cli_options.parse_profile_option(args.profile)  # would read a file/fd: parse only
        args.profile = None
    mode = {"socket": Mode.SOCKET, "chardev": Mode.CHARDEV, "cuse": Mode.CUSE}[args.mode]
    if mode is Mode.SOCKET:
        daemon._parse_socket_settings(args)
    parse_common(args, mode, vtpm_proxy=bool(getattr(args, "vtpm_proxy", False)))


def _ioctl_argv(argv: list[str]) -> None:
    """``vtpm-ioctl ...`` up to connecting."""
    invocation = ioctl_tool.parse_arguments(argv)
    if invocation.command is not None:
        ioctl_tool._validate_arguments(invocation)


def _setup_argv(argv: list[str]) -> None:
    """``vtpm-setup ...``: the options it checks before touching the state."""
    args = setup_cli.build_parser().parse_args(argv)
    setup_cli._rsa_keysize(args, 2048)
    if args.tpm_state is not None:
        setup_cli._state_dir(args.tpm_state)


def _profile(value: str) -> object:
    profile = cli_options.parse_profile_option(value)
    if profile.path is None and profile.fd is None:
        return info.check_profile(profile, info.profile_names())
    return profile


@dataclass(frozen=True)
class Parser:
    name: str
    parse: Callable[[str], object] | Callable[[list[str]], object]
    argv: bool = False
    """True: the input is split at NUL bytes into an argv."""

    def run(self, text: str) -> object:
        return self.parse(text.split("\0") if self.argv else text)  # type: ignore[arg-type]


PARSERS: Final[tuple[Parser, ...]] = (
    Parser("vtpm-cuse", _daemon_argv, argv=True),
    Parser("vtpm-ioctl", _ioctl_argv, argv=True),
    Parser("vtpm-setup", _setup_argv, argv=True),
    Parser("--server", cli_options.parse_server_option),
    Parser("--port", cli_options.parse_port_option),
    Parser("--fd", cli_options.parse_data_fd_option),
    Parser("--ctrl", cli_options.parse_ctrl_option),
    Parser("--flags", cli_options.parse_flags_option),
    Parser("--locality", cli_options.parse_locality_option),
    Parser("--pid", cli_options.parse_pid_option),
    Parser("--log", cli_options.parse_log_option),
    Parser("--object-slots", cli_options.parse_object_slots_option),
    Parser("--seccomp", cli_options.parse_seccomp_option),
    Parser("--migration", cli_options.parse_migration_option),
    Parser("--profile", _profile),
    Parser("--pcap", cli_options.parse_pcap_option),
    Parser("--print-info", cli_options.parse_print_info_option),
    Parser("--chroot", cli_options.parse_chroot_option),
    Parser("--key", parse_key_option),
    Parser("--tpmstate", parse_tpmstate_option),
    Parser("vtpm-ioctl --tcp", ioctl_tool.parse_tcp_address),
)
_BY_NAME: Final = {p.name: i for i, p in enumerate(PARSERS)}


def fuzz_one(data: bytes) -> None:
    """Parse one input; an exception outside :data:`USAGE_ERRORS` is a bug found."""
    if not data:
        return
    parser = PARSERS[data[0] % len(PARSERS)]
    text = os.fsdecode(data[1:])
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            parser.run(text)
    except SystemExit as exc:  # argparse's -h/--help: the help text, exit status 0
        assert exc.code == 0, f"{parser.name}: exits with {exc.code!r} instead of raising its usage error"
    except USAGE_ERRORS as exc:
        message = str(exc)
        assert message, f"{parser.name}: usage error without a message"
        # One line of its own (a value with a line break in it is echoed as given).
        assert "\n" not in message or "\n" in text, f"{parser.name}: usage error is not one line: {message!r}"


# --- seeds ------------------------------------------------------------------------------------


def sample(parser: str, *values: str) -> bytes:
    """The input that makes ``parser`` parse ``values`` (one value, or an argv)."""
    return bytes([_BY_NAME[parser]]) + os.fsencode("\0".join(values))


_COMMON: Final = (
    ("--tpmstate", "dir=/tmp/vtpm,mode=0600,lock"),
    ("--tpm2",),
    ("--key", "file=/k,mode=aes-256-cbc,format=hex,remove"),
    ("--migration-key", "pwdfile=/p,kdf=pbkdf2"),
    ("--log", "file=/tmp/log,level=20,truncate"),
    ("--locality", "reject-locality-4,allow-set-locality"),
    ("--flags", "not-need-init,startup-clear,disable-auto-shutdown"),
    ("--pid", "file=/run/vtpm.pid"),
    ("--seccomp", "action=log"),
    ("--migration", "incoming,release-lock-outgoing"),
    ("--profile", "name=default-v1"),
    ("--pcap", "file=/tmp/c.pcap,truncate,mode=0600,checksums"),
    ("--print-capabilities",),
    ("--print-states",),
    ("--print-profiles",),
    ("--print-info", "0x3f"),
    ("-r", "tss"),
    ("-R", "/srv/root"),
    ("--object-slots", "8"),
    ("--physical-presence",),
)
"""Every option swtpm socket, chardev and cuse share (swtpm.8), with a typical value."""

BAD_ARGVS: Final[tuple[tuple[str, ...], ...]] = (
    ("vtpm-cuse", "socket", "--server", "type=udp"),
    ("vtpm-cuse", "socket", "--ctrl", "type=unixio,port=5"),
    ("vtpm-cuse", "socket", "--flags", "startup-deactivated"),
    ("vtpm-cuse", "cuse", "-n", "x", "--key", "mode=rot13"),
    ("vtpm-cuse", "chardev", "--tpmstate", "backend-uri=ftp://x"),
    ("vtpm-cuse", "socket", "--no-such-option"),
    ("vtpm-ioctl", "--tcp", "localhost:99999", "-i"),
    ("vtpm-ioctl", "-l", "x", "/dev/vtpm0"),
    ("vtpm-setup", "--tpm2", "--tpm-state", "/nonexistent/x", "--rsa-keysize", "1024"),
    ("vtpm-setup", "--keyfile-fd", "three"),
)
"""Bad command lines: each program must print one line and exit non-zero."""


def seeds() -> Iterable[bytes]:
    """Every documented option of swtpm socket/cuse/chardev, swtpm_setup and
    swtpm_ioctl in a valid command line, each value parser's documented forms,
    and :data:`BAD_ARGVS`."""
    common = [arg for option in _COMMON for arg in option]
    yield sample(
        "vtpm-cuse",
        "socket",
        "--server",
        "type=tcp,port=2321,bindaddr=127.0.0.1,disconnect",
        "--ctrl",
        "type=unixio,path=/tmp/ctrl,mode=0600,terminate",
        "-d",
        "--terminate",
        "--version",
        *common,
    )
    yield sample("vtpm-cuse", "socket", "--port", "2321", "--ctrl", "type=tcp,port=2322", "--tpm2")
    yield sample("vtpm-cuse", "socket", "--fd", "5", "--ctrl", "type=unixio,clientfd=6")
    yield sample(
        "vtpm-cuse", "cuse", "-n", "vtpm-vm1", "-M", "10", "-m", "20", "--foreground", "--cancel-fifo", "/tmp/f"
    )
    yield sample("vtpm-cuse", "cuse", "--name", "vtpm0", *common)
    yield sample("vtpm-cuse", "chardev", "-c", "/dev/vtpmx", "--ctrl", "type=unixio,path=/c", *common)
    yield sample("vtpm-cuse", "chardev", "--vtpm-proxy", "--tpmstate", "backend-uri=file:///tmp/state.bin")
    yield sample("vtpm-cuse", "chardev", "-f", "4", "--profile", "file=/etc/profile.json")
    for argv in (
        ("-c", "/dev/vtpm0"),
        ("-i", "--tcp", "127.0.0.1:2322"),
        ("-s", "--unix", "/tmp/ctrl"),
        ("-e", "/dev/vtpm0"),
        ("-r", "3", "/dev/vtpm0"),
        ("-l", "4", "/dev/vtpm0"),
        ("-h", "data", "/dev/vtpm0"),
        ("-C", "/dev/vtpm0"),
        ("-v", "/dev/vtpm0"),
        ("--save", "permanent", "/tmp/p.blob", "/dev/vtpm0"),
        ("--load", "volatile", "/tmp/v.blob", "/dev/vtpm0"),
        ("-g", "/dev/vtpm0"),
        ("-b", "4096", "/dev/vtpm0"),
        ("--info", "7", "/dev/vtpm0"),
        ("--lock-storage", "300", "--tcp=:2322"),
        ("--stop", "/dev/vtpm0"),
        ("--version",),
        ("--help",),
    ):
        yield sample("vtpm-ioctl", *argv)
    yield sample(
        "vtpm-setup",
        "--tpm2",
        "--tpm-state",
        "dir:///tmp/vm1",
        "--vmid",
        "vm1",
        "--createek",
        "--create-ek-cert",
        "--create-platform-cert",
        "--lock-nvram",
        "--overwrite",
        "--pcr-banks",
        "sha256,sha384",
        "--rsa-keysize",
        "3072",
        "--allow-signing",
        "--decryption",
        "--create-spk",
        "--ecc",
        "--keyfile",
        "/k",
        "--cipher",
        "aes-256-cbc",
        "--write-ek-cert-files",
        "/tmp/certs",
        "--logfile",
        "/tmp/log",
        "--config",
        "/etc/swtpm_setup.conf",
        "--display",
    )
    yield sample("vtpm-setup", "--tpm2", "--tpmstate", "/tmp/x", "--not-overwrite", "--pwdfile-fd", "3")
    yield sample("vtpm-setup", "--print-capabilities", "--create-config-files", "overwrite,root")
    yield sample("vtpm-setup", "--tpm2", "--tpm-state", "/tmp/x", "--reconfigure", "--pcr-banks", "-")
    values = {
        "--server": ("type=tcp,port=2321,bindaddr=::1,ifname=lo", "type=unixio,path=/s,mode=0660,uid=0,gid=0", "fd=3"),
        "--port": ("2321",),
        "--fd": ("3",),
        "--ctrl": ("type=tcp,port=2322,bindaddr=0.0.0.0,terminate", "type=unixio,fd=4", "type=unixio,clientfd=5"),
        "--flags": ("not-need-init,startup-state", "startup-none,disable-auto-shutdown"),
        "--locality": ("reject-locality-4", "allow-set-locality"),
        "--pid": ("file=/run/p.pid", "fd=3"),
        "--log": ("fd=2,level=5", "file=/l,prefix=vtpm,truncate"),
        "--object-slots": ("1", "255", "\u0663"),  # a non-ASCII digit: str.isdigit() says yes, int() may not
        "--seccomp": ("action=none", "action=kill"),
        "--migration": ("incoming", "release-lock-outgoing"),
        "--profile": ("name=default-v1", 'profile={"Name":"default-v1"}', '{"Name":"x"}', "fd=3,remove-disabled=check"),
        "--pcap": ("fd=3", "file=/p,mode=0600"),
        "--print-info": ("1", "0x80"),
        "--chroot": ("/srv",),
        "--key": (
            "file=/k,format=binary,mode=aes-128-cbc",
            "fd=3,remove=true",
            "pwdfile=/p,kdf=sha512",
            "pwdfd=4,mode=aes-256-cbc",
        ),
        "--tpmstate": ("dir=/tmp/s,mode=0640,lock", "backend-uri=dir:///tmp/s", "backend-uri=file:///dev/sdb"),
        "vtpm-ioctl --tcp": ("127.0.0.1:2322", "[::1]:2322", ":2322"),
    }
    for name, texts in values.items():
        for text in texts:
            yield sample(name, text)
    for argv in BAD_ARGVS:
        yield sample(argv[0], *argv[1:])
