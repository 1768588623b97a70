"""``vtpm-cuse``: the daemon.  ``vtpm-cuse socket [options]`` speaks swtpm's sockets,
``vtpm-cuse cuse -n NAME [options]`` creates the character device /dev/NAME.

The subcommands take ``swtpm socket``'s and ``swtpm cuse``'s options (spec
§3.5, §2.12) so that existing command lines (libvirt's, QEMU's
documentation, swtpm's tests) work by replacing the program name; the
options both modes share are declared once.  Subcommands are registered in
:data:`SUBCOMMANDS`.

Option errors are one line on stderr and exit status 1; nothing (socket,
state directory, key file) is touched before the whole command line has
been parsed.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import trio

from vtpm_cuse import __version__
from vtpm_cuse.cuse.protocol import CuseProtocolError
from vtpm_cuse.cuse.session import CUSE_PATH, CuseOptions
from vtpm_cuse.cuse_service import serve_vtpm_device
from vtpm_cuse.sockets.endpoints import EndpointError, OpenedEndpoint, open_endpoint
from vtpm_cuse.sockets.server import SocketServerConfig, serve
from vtpm_cuse.state import (
    DirectoryStore,
    OptionError,
    StateError,
    load_key_option,
    resolve_tpmstate,
)
from vtpm_cuse.tpm.constants import DEFAULT_OBJECT_SLOTS, MAX_LOADED_OBJECTS
from vtpm_cuse.vtpm import LocalityPolicy, Vtpm, VtpmFlags

from .exit_codes import ExitCode
from .options import (
    CliOptionError,
    CtrlOption,
    SeccompOption,
    ServerOption,
    parse_ctrl_option,
    parse_data_fd_option,
    parse_flags_option,
    parse_locality_option,
    parse_log_option,
    parse_object_slots_option,
    parse_pid_option,
    parse_port_option,
    parse_seccomp_option,
    parse_server_option,
)
from .process import Daemonizer, PidFile, RunAs, configure_logging, notify_systemd

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

PROGRAM = "vtpm-cuse"

log = logging.getLogger(__name__)

SOCKET_FEATURES = (
    "tpm-2.0",
    "tpm-send-command-header",
    "flags-opt-startup",
    "flags-opt-disable-auto-shutdown",
    "ctrl-opt-terminate",
    "cmdarg-key-fd",
    "cmdarg-pwd-fd",
    "nvram-backend-dir",
    "tpmstate-opt-lock",
    "tpmstate-dir-backend-opt-backup",
    "tpmstate-dir-backend-opt-fsync",
)
"""swtpm ``--print-capabilities`` feature names, limited to what this daemon implements."""

CUSE_FEATURES = tuple(f for f in SOCKET_FEATURES if f not in ("tpm-send-command-header", "ctrl-opt-terminate"))
"""The CUSE variant: no TCG send-command header and no control socket (swtpm omits them too)."""

DEV_DIR = "/dev"
MAX_DEVICE_NUMBER = 65535


class UsageError(Exception):
    """A command-line problem; printed as one line, exit status 1."""


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; swtpm-style tools print one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


# -- socket subcommand ----------------------------------------------------------


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every mode has (swtpm's common.c set)."""
    add = parser.add_argument
    add("--tpm2", action="store_true", help="TPM 2.0 (accepted for swtpm compatibility; only TPM 2.0 is emulated)")
    add(
        "--tpmstate",
        metavar="dir=<dir>[,mode=0...][,lock][,backup][,fsync]",
        help="state directory (default: $TPM_PATH)",
    )
    add(
        "--flags",
        metavar="[not-need-init][,startup-clear|startup-state|startup-none][,disable-auto-shutdown]",
        help="start the TPM without INIT, send TPM2_Startup, keep the automatic TPM2_Shutdown off",
    )
    add("--locality", metavar="[reject-locality-4][,allow-set-locality]", help="locality policy")
    add(
        "--key",
        metavar="file=<path>|fd=<fd>|pwdfile=<path>|pwdfd=<fd>[,...]",
        help="key for encrypting the state files",
    )
    add(
        "--migration-key",
        metavar="file=<path>|fd=<fd>|pwdfile=<path>|pwdfd=<fd>[,...]",
        help="key for encrypting state blobs handed out by GET_STATEBLOB",
    )
    add("--pid", metavar="file=<path>|fd=<fd>", help="write the process id")
    add(
        "--log",
        metavar="file=<path>|fd=<fd>[,level=n][,prefix=<p>][,truncate]",
        help="log destination (file=- disables logging)",
    )
    add("--print-capabilities", action="store_true", help="print the supported features as JSON and exit")
    add(
        "--object-slots",
        metavar="N",
        type=_object_slots,
        help=f"transient object slots, 1..{MAX_LOADED_OBJECTS} (default {DEFAULT_OBJECT_SLOTS}; libtpms has 3)",
    )
    add(
        "--seccomp",
        metavar="action=none|kill|log",
        help="seccomp action (accepted and checked for swtpm compatibility; no seccomp filter is applied yet)",
    )


def _add_socket_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common_arguments(parser)
    add = parser.add_argument
    add(
        "--server",
        metavar="type=tcp,port=<p>[,bindaddr=<a>][,disconnect]|type=unixio,path=<p>[,mode=0...]|fd=<fd>",
        help="data channel server",
    )
    add("-p", "--port", metavar="PORT", help="TCP data port; implies --server type=tcp,disconnect")
    add("-f", "--fd", metavar="FD", help="connected data socket; implies --terminate")
    add(
        "--ctrl",
        metavar="type=tcp,port=<p>[,bindaddr=<a>]|type=unixio,path=<p>[,mode=0...]|fd=<fd>|clientfd=<fd>[,terminate]",
        help="control channel server",
    )
    add("-t", "--terminate", action="store_true", help="exit when the data client goes away")
    add("-d", "--daemon", action="store_true", help="run in the background once serving")
    add("--version", action="store_true", help="print the version and exit")


@dataclass
class SocketSettings:
    """The ``socket`` command line, parsed into values (no side effects yet)."""

    server: ServerOption | None
    ctrl: CtrlOption | None
    flags: VtpmFlags
    locality: LocalityPolicy
    terminate: bool
    seccomp: SeccompOption


def _parse_socket_settings(args: argparse.Namespace) -> SocketSettings:
    given = [name for name in ("server", "port", "fd") if getattr(args, name) is not None]
    if len(given) > 1:
        raise UsageError(f"{PROGRAM} socket: " + " and ".join(f"--{n}" for n in given) + " are mutually exclusive")
    server: ServerOption | None = None
    if args.server is not None:
        server = parse_server_option(args.server)
    elif args.port is not None:
        server = parse_port_option(args.port)
    elif args.fd is not None:
        server = parse_data_fd_option(args.fd)
    ctrl = parse_ctrl_option(args.ctrl) if args.ctrl is not None else None
    if server is None and ctrl is None:
        # swtpm's default: the data port from TPM_PORT (or 6545), -p style.
        server = parse_server_option("type=tcp,disconnect")
    return SocketSettings(
        server=server,
        ctrl=ctrl,
        flags=_parse_flags(args),
        locality=_parse_locality(args),
        terminate=args.terminate or args.fd is not None,
        seccomp=_parse_seccomp(args),
    )


def _parse_flags(args: argparse.Namespace) -> VtpmFlags:
    return parse_flags_option(args.flags) if args.flags is not None else VtpmFlags()


def _parse_locality(args: argparse.Namespace) -> LocalityPolicy:
    return parse_locality_option(args.locality) if args.locality is not None else LocalityPolicy()


def _parse_seccomp(args: argparse.Namespace) -> SeccompOption:
    """Validate ``--seccomp`` with the rest of the command line, before anything is opened."""
    return parse_seccomp_option(args.seccomp) if args.seccomp is not None else SeccompOption()


def _report_seccomp(seccomp: SeccompOption) -> None:
    """Say in the log that the requested action has no effect: no filter is installed yet."""
    log.debug("--seccomp action=%s accepted; no seccomp filter is applied", seccomp.action.value)


def _build_vtpm(args: argparse.Namespace, flags: VtpmFlags, locality: LocalityPolicy) -> Vtpm:
    """The TPM from ``--tpmstate``/``TPM_PATH``, ``--key``, ``--migration-key``, ``--flags``
    (reads key files; touches nothing else)."""
    tpmstate = resolve_tpmstate(args.tpmstate)
    file_key = load_key_option(args.key, "--key") if args.key is not None else None
    migration_key = load_key_option(args.migration_key, "--migration-key") if args.migration_key is not None else None
    store = DirectoryStore.from_option(tpmstate, file_key=file_key, migration_key=migration_key)
    return Vtpm(
        store,
        flags=flags,
        locality_policy=locality,
        engine_options=_engine_options(args),
    )


def _object_slots(text: str) -> int:
    """argparse type of ``--object-slots``: a bad count is a usage error before anything starts."""
    try:
        return parse_object_slots_option(text)
    except CliOptionError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--object-slots: ")) from None


def _engine_options(args: argparse.Namespace) -> dict[str, int]:
    """Engine settings from the command line (``--object-slots``)."""
    return {} if args.object_slots is None else {"max_objects": args.object_slots}


def print_capabilities(features: Sequence[str] = SOCKET_FEATURES) -> None:
    print(json.dumps({"type": "swtpm", "features": list(features), "version": __version__}))


def _open(option: ServerOption | CtrlOption | None, what: str) -> OpenedEndpoint | None:
    return None if option is None else open_endpoint(option.endpoint, what)


def run_socket(args: argparse.Namespace) -> int:
    if args.version:
        print_version()
        return ExitCode.OK
    if args.print_capabilities:
        print_capabilities()
        return ExitCode.OK
    settings = _parse_socket_settings(args)
    log_option = parse_log_option(args.log) if args.log is not None else None
    pid_file = PidFile(parse_pid_option(args.pid)) if args.pid is not None else None
    resolve_tpmstate(args.tpmstate)  # a missing state directory is reported before logging starts
    configure_logging(log_option)
    _report_seccomp(settings.seccomp)
    vtpm = _build_vtpm(args, settings.flags, settings.locality)
    data = _open(settings.server, "--server")
    try:
        ctrl = _open(settings.ctrl, "--ctrl")
    except BaseException:
        if data is not None:
            data.close()
        raise
    config = SocketServerConfig(
        data=data,
        ctrl=ctrl,
        disconnect=bool(settings.server and settings.server.disconnect),
        terminate_on_data_loss=settings.terminate,
        terminate_on_ctrl_loss=bool(settings.ctrl and settings.ctrl.terminate),
    )
    daemonizer = Daemonizer()
    if args.daemon:
        daemonizer.detach()

    def ready() -> None:
        if pid_file is not None:
            pid_file.write()
        log.info(
            "serving: data %s, control %s",
            data.description if data else "via CMD_SET_DATAFD",
            ctrl.description if ctrl else "none",
        )
        daemonizer.ready()

    try:
        trio.run(functools.partial(serve, vtpm, config, ready=ready))
    finally:
        if pid_file is not None:
            pid_file.remove()
    return ExitCode.OK


# -- cuse subcommand ---------------------------------------------------------------


def _device_number(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0 <= value <= MAX_DEVICE_NUMBER:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..{MAX_DEVICE_NUMBER}")
    return value


def _add_cuse_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("-n", "--name", metavar="NAME", help="device name (mandatory): the node is /dev/NAME")
    add("-M", "--maj", metavar="MAJ", type=_device_number, default=0, help="device major (0 = dynamic)")
    add("-m", "--min", metavar="MIN", type=_device_number, default=0, help="device minor")
    _add_common_arguments(parser)
    add("-r", "--runas", metavar="USER", help="become USER once the device exists")
    add(
        "--foreground",
        action="store_true",
        help="stay attached to the terminal (by default, like swtpm, the daemon detaches "
        "and the command returns once /dev/NAME exists)",
    )
    add("-v", "--version", action="store_true", help="print the version and exit")


def run_cuse(args: argparse.Namespace) -> int:
    if args.version:
        print(f"TPM emulator CUSE interface ({PROGRAM}) version {__version__}")
        return ExitCode.OK
    if args.print_capabilities:
        print_capabilities(CUSE_FEATURES)
        return ExitCode.OK
    if not args.name:
        raise UsageError(f"{PROGRAM} cuse: Error: device name missing (-n NAME)")
    try:
        options = CuseOptions(args.name, dev_major=args.maj, dev_minor=args.min)
    except ValueError as exc:
        raise UsageError(f"{PROGRAM} cuse: {exc}") from None
    flags, locality = _parse_flags(args), _parse_locality(args)
    seccomp = _parse_seccomp(args)
    log_option = parse_log_option(args.log) if args.log is not None else None
    pid_file = PidFile(parse_pid_option(args.pid)) if args.pid is not None else None
    try:
        runas = RunAs.lookup(args.runas) if args.runas is not None else None
    except ValueError as exc:
        raise UsageError(f"{PROGRAM} cuse: --runas: {exc}") from None
    resolve_tpmstate(args.tpmstate)
    node = os.path.join(DEV_DIR, options.name)
    if os.path.lexists(node):
        raise UsageError(f"{PROGRAM} cuse: Error: A device '{node}' already exists.")
    if not os.path.exists(CUSE_PATH):
        raise UsageError(f"{PROGRAM} cuse: {CUSE_PATH} does not exist: this kernel has no CUSE (modprobe cuse)")
    configure_logging(log_option)
    _report_seccomp(seccomp)
    vtpm = _build_vtpm(args, flags, locality)
    daemonizer = Daemonizer()
    if not args.foreground:
        daemonizer.detach()

    def ready() -> None:
        if pid_file is not None:
            pid_file.write()
        if runas is not None:
            runas.apply()
        notify_systemd("READY=1")
        daemonizer.ready()

    try:
        trio.run(functools.partial(serve_vtpm_device, vtpm, options, ready=ready))
    except Exception as exc:
        cause = _sole_cause(exc)
        if not isinstance(cause, (OSError, CuseProtocolError, StateError)):
            raise
        print(f"{PROGRAM} cuse: /dev/{options.name}: {cause}", file=sys.stderr)
        return ExitCode.FAILURE
    finally:
        if pid_file is not None:
            pid_file.remove()
    return ExitCode.OK


def _sole_cause(exc: BaseException) -> BaseException:
    """Unwrap the exception groups trio nurseries put around a single failure."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


# -- top level ---------------------------------------------------------------------


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("socket", "serve the TPM on swtpm-compatible TCP/UnixIO sockets", _add_socket_arguments, run_socket),
    Subcommand(
        "cuse",
        "create the character device /dev/NAME over CUSE (detaches once it exists)",
        _add_cuse_arguments,
        run_cuse,
    ),
)
"""Modes of the daemon."""


def print_version() -> None:
    print(f"{PROGRAM} version {__version__} (TPM 2.0 emulator with swtpm-compatible interfaces)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROGRAM,
        description="A virtual TPM 2.0 with swtpm-compatible interfaces.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(
        dest="mode", metavar="{" + ",".join(s.name for s in SUBCOMMANDS) + "}", parser_class=OneLineParser
    )
    for sub in SUBCOMMANDS:
        sub_parser = commands.add_parser(sub.name, help=sub.help, description=sub.help, allow_abbrev=False)
        sub.add_arguments(sub_parser)
        sub_parser.set_defaults(run=sub.run)
    return parser


def run(argv: Sequence[str]) -> int:
    try:
        args = build_parser().parse_args(list(argv))
        if args.mode is None:
            if args.version:
                print_version()
                return ExitCode.OK
            raise UsageError(f"{PROGRAM}: a mode is required: {', '.join(s.name for s in SUBCOMMANDS)}")
        return args.run(args)
    except (UsageError, OptionError, EndpointError) as exc:
        print(str(exc) if isinstance(exc, UsageError) else f"{PROGRAM}: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    except StateError as exc:
        print(f"{PROGRAM}: cannot start the TPM: {exc}", file=sys.stderr)
        return ExitCode.FAILURE


def main(argv: Sequence[str] | None = None) -> NoReturn:
    sys.exit(run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
