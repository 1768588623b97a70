"""``vtpm-cuse``: the daemon.  ``vtpm-cuse socket [options]`` speaks swtpm's sockets,
``vtpm-cuse chardev -c DEV|-f FD|--vtpm-proxy`` serves a character device,
``vtpm-cuse cuse -n NAME [options]`` creates the character device /dev/NAME.

The subcommands take ``swtpm socket``'s, ``swtpm chardev``'s and ``swtpm cuse``'s
options (spec §3.5, §2.12; declared once in :mod:`.arguments`, in swtpm's order)
so that existing command lines (libvirt's, QEMU's documentation, swtpm's tests)
work by replacing the program name; the settings all modes share are parsed and
applied by :mod:`.startup`.  Subcommands are registered in :data:`SUBCOMMANDS`.

Option errors are one line on stderr and exit status 1; nothing (socket,
state directory, key file) is touched before the whole command line has
been parsed.

Start-up order, and why: a client (libvirt waits 1 s for the control socket,
QEMU, a test) may connect as soon as the process exists, and the interpreter
needs far longer for trio, ``cryptography`` and the engine than for parsing
and binding.  So this module imports only what parsing and binding need (the
standard library, :mod:`.options`, :mod:`.arguments`, :mod:`.startup`,
:mod:`vtpm_cuse.sockets.endpoints`); each mode opens its endpoints first and
imports what serves them afterwards (in ``run_socket`` / ``run_chardev``); the
kernel queues connections meanwhile.  ``tests/test_cli_startup_order.py`` holds it to that.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from vtpm_cuse import __version__
from vtpm_cuse.sockets.endpoints import EndpointError, OpenedEndpoint, open_endpoint
from vtpm_cuse.state.errors import OptionError, StateError
from vtpm_cuse.state.tpmstate import resolve_tpmstate
from vtpm_cuse.tpm.limits import DEFAULT_OBJECT_SLOTS, MAX_LOADED_OBJECTS

from . import startup_gc
from .arguments import add_mode_arguments
from .exit_codes import ExitCode
from .modes import Mode
from .options import (
    CliOptionError,
    CtrlOption,
    ServerOption,
    parse_ctrl_option,
    parse_data_fd_option,
    parse_object_slots_option,
    parse_port_option,
    parse_server_option,
)
from .process import Daemonizer, configure_logging, notify_systemd
from .seccomp import SeccompError
from .startup import CommonSettings, parse_common, print_requested

if TYPE_CHECKING:
    from vtpm_cuse.cuse.handshake import CuseOptions, Handshake
    from vtpm_cuse.state.crypto import StateKey
    from vtpm_cuse.vtpm import Vtpm

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

PROGRAM = "vtpm-cuse"

log = logging.getLogger(__name__)

DEV_DIR = "/dev"


class UsageError(Exception):
    """A command-line problem; printed as one line, exit status 1."""


def _terminal_columns() -> int:
    """What ``shutil.get_terminal_size().columns`` answers (COLUMNS, the terminal, 80)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter with its default width found without importing shutil: argparse
    makes a formatter for every add_argument, and shutil (with bz2, lzma) cost ~2.7 ms of
    every start before the sockets were open (scripts/bench_startup.py)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position, _terminal_columns() - 2 if width is None else width)


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; swtpm-style tools print one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


# -- socket subcommand ----------------------------------------------------------


def _add_extra_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of our own that every mode has; they follow swtpm's (arguments.ORDER)."""
    add = parser.add_argument
    add(
        "--object-slots",
        metavar="N",
        type=_object_slots,
        help=f"transient object slots, 1..{MAX_LOADED_OBJECTS} (default {DEFAULT_OBJECT_SLOTS}; libtpms has 3)",
    )
    add(
        "--physical-presence",
        action="store_true",
        help="the platform asserts physical presence (TPM2_PP_Commands and the commands it lists may run)",
    )


def _add_socket_arguments(parser: argparse.ArgumentParser) -> None:
    add_mode_arguments(parser, Mode.SOCKET)
    _add_extra_arguments(parser)
    parser.add_argument("--version", action="store_true", help="print the version and exit")


@dataclass
class SocketSettings:
    """The ``socket`` command line, parsed into values (no side effects yet)."""

    server: ServerOption | None
    ctrl: CtrlOption | None
    terminate: bool


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
    return SocketSettings(server=server, ctrl=ctrl, terminate=args.terminate or args.fd is not None)


@dataclass(frozen=True)
class StateKeys:
    """``--key`` / ``--migration-key`` read from their files before the sockets are bound:
    a missing or malformed key file is reported like a bad option value (the one case in
    which ``cryptography`` is imported before listening)."""

    file_key: StateKey | None
    migration_key: StateKey | None

    @classmethod
    def load(cls, args: argparse.Namespace) -> StateKeys:
        if args.key is None and args.migration_key is None:
            return cls(None, None)  # no key: cryptography stays unimported until the TPM starts
        from vtpm_cuse.state.keyoption import load_key_option

        return cls(
            load_key_option(args.key, "--key") if args.key is not None else None,
            load_key_option(args.migration_key, "--migration-key") if args.migration_key is not None else None,
        )


def _build_vtpm(args: argparse.Namespace, common: CommonSettings, keys: StateKeys) -> Vtpm:
    """The TPM from ``--tpmstate``/``TPM_PATH``, the keys, ``--flags``, ``--migration``
    and ``--pcap`` (imports the serving side: call it once the endpoints are open)."""
    from vtpm_cuse.state.store import DirectoryStore
    from vtpm_cuse.vtpm import Vtpm

    tpmstate = resolve_tpmstate(args.tpmstate)
    store = DirectoryStore.from_option(tpmstate, file_key=keys.file_key, migration_key=keys.migration_key)
    vtpm = Vtpm(
        store,
        flags=common.flags,
        locality_policy=common.locality,
        incoming_migration=common.migration.incoming,
        engine_options=_engine_options(args),
    )
    common.attach_capture(vtpm)
    return vtpm


def _object_slots(text: str) -> int:
    """argparse type of ``--object-slots``: a bad count is a usage error before anything starts."""
    try:
        return parse_object_slots_option(text)
    except CliOptionError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--object-slots: ")) from None


def _engine_options(args: argparse.Namespace) -> dict[str, int | bool]:
    """Engine settings from the command line (``--object-slots``, ``--physical-presence``)."""
    options: dict[str, int | bool] = {} if args.object_slots is None else {"max_objects": args.object_slots}
    options["derive_ahead"] = True  # the usual EKs/SRKs are ready before they are asked for (derive_ahead.py)
    if args.physical_presence:
        options["physical_presence"] = True
    return options


def _print_requested(args: argparse.Namespace, mode: Mode) -> bool:
    """``--print-capabilities/-states/-info/-profiles``: print the document; True if one was asked for."""
    document = print_requested(args, mode)
    if document is None:
        return False
    print(document)
    return True


def _open(option: ServerOption | CtrlOption | None, what: str) -> OpenedEndpoint | None:
    if option is None:
        return None
    opened = open_endpoint(option.endpoint, what)
    if option.owner is not None and opened.unlink_on_close is not None:
        try:
            option.owner.apply(opened.unlink_on_close)
        except OSError as exc:
            opened.close()
            raise UsageError(
                f"{PROGRAM}: {what}: cannot set uid/gid of {opened.unlink_on_close}: {exc.strerror}"
            ) from None
    return opened


def _idle_timeout_setting(server: ServerOption | None) -> dict[str, float]:
    """``--server ...,idle-timeout=S`` for SocketServerConfig; nothing keeps its default."""
    if server is None or server.idle_timeout is None:
        return {}
    return {"idle_timeout": server.idle_timeout}


def _close_all(*opened: OpenedEndpoint | None) -> None:
    for endpoint in opened:
        if endpoint is not None:
            endpoint.close()


def run_socket(args: argparse.Namespace) -> int:
    if args.version:
        print_version()
        return ExitCode.OK
    if _print_requested(args, Mode.SOCKET):
        return ExitCode.OK
    settings = _parse_socket_settings(args)
    common = parse_common(args, Mode.SOCKET)
    pid_file = common.pid_file
    resolve_tpmstate(args.tpmstate)  # a missing state directory is reported before logging starts
    configure_logging(common.log)
    common.enter_chroot()
    keys = StateKeys.load(args)  # after the chroot: key paths are inside the new root, as before
    data = _open(settings.server, "--server")
    try:
        ctrl = _open(settings.ctrl, "--ctrl")
    except BaseException:
        _close_all(data)
        raise
    # Listening: clients queue in the kernel while the serving side is imported.
    try:
        import trio

        from vtpm_cuse.sockets.server import SocketServerConfig, serve

        vtpm = _build_vtpm(args, common, keys)
    except BaseException:
        _close_all(data, ctrl)
        raise
    config = SocketServerConfig(
        data=data,
        ctrl=ctrl,
        disconnect=bool(settings.server and settings.server.disconnect),
        **_idle_timeout_setting(settings.server),
        terminate_on_data_loss=settings.terminate,
        terminate_on_ctrl_loss=bool(settings.ctrl and settings.ctrl.terminate),
    )
    daemonizer = Daemonizer()
    if args.daemon:
        daemonizer.detach()
    common.drop_privileges()
    common.lock_down()

    def ready() -> None:
        if pid_file is not None:
            pid_file.write()
        log.info(
            "serving: data %s, control %s",
            data.description if data else "via CMD_SET_DATAFD",
            ctrl.description if ctrl else "none",
        )
        notify_systemd("READY=1")
        startup_gc.resume()
        daemonizer.ready()

    try:
        trio.run(functools.partial(serve, vtpm, config, ready=ready))
    finally:
        if pid_file is not None:
            pid_file.remove()
    return ExitCode.OK


# -- cuse subcommand ---------------------------------------------------------------


def _add_cuse_arguments(parser: argparse.ArgumentParser) -> None:
    add_mode_arguments(parser, Mode.CUSE)
    _add_extra_arguments(parser)
    add = parser.add_argument
    add(
        "--cancel-fifo",
        metavar="PATH",
        help="create a FIFO at PATH; a write to it cancels the running TPM command (QEMU passthrough's cancel-path)",
    )
    add(
        "--foreground",
        action="store_true",
        help="stay attached to the terminal (by default, like swtpm, the daemon detaches "
        "and the command returns once /dev/NAME exists)",
    )


def run_cuse(args: argparse.Namespace) -> int:
    from vtpm_cuse.cuse.handshake import CUSE_PATH, CuseOptions, handshake_blocking, open_channel
    from vtpm_cuse.cuse.protocol import CuseProtocolError

    if args.version:
        print(f"TPM emulator CUSE interface ({PROGRAM}) version {__version__}")
        return ExitCode.OK
    if _print_requested(args, Mode.CUSE):
        return ExitCode.OK
    if not args.name:
        raise UsageError(f"{PROGRAM} cuse: Error: device name missing (-n NAME)")
    try:
        options = CuseOptions(args.name, dev_major=args.maj, dev_minor=args.min)
    except ValueError as exc:
        raise UsageError(f"{PROGRAM} cuse: {exc}") from None
    common = parse_common(args, Mode.CUSE)
    resolve_tpmstate(args.tpmstate)
    node = os.path.join(DEV_DIR, options.name)
    if os.path.lexists(node):
        raise UsageError(f"{PROGRAM} cuse: Error: A device '{node}' already exists.")
    if not os.path.exists(CUSE_PATH):
        raise UsageError(f"{PROGRAM} cuse: {CUSE_PATH} does not exist: this kernel has no CUSE (modprobe cuse)")
    configure_logging(common.log)
    # The node, as the socket modes' listeners, comes before the heavy imports: CUSE_INIT
    # is answered here without trio and the kernel queues OPEN and the rest meanwhile.
    try:
        fd = open_channel(CUSE_PATH)
    except OSError as exc:
        print(f"{PROGRAM} cuse: /dev/{options.name}: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    try:
        try:
            handshake = handshake_blocking(fd, options)
        except (OSError, CuseProtocolError) as exc:
            print(f"{PROGRAM} cuse: /dev/{options.name}: {exc}", file=sys.stderr)
            return ExitCode.FAILURE
        return _serve_cuse(args, common, options, (fd, handshake))
    finally:
        os.close(fd)  # removes the node


def _serve_cuse(
    args: argparse.Namespace, common: CommonSettings, options: CuseOptions, opened: tuple[int, Handshake]
) -> int:
    """The rest of ``cuse``, once /dev/NAME exists: import the serving side, build the TPM, serve."""
    import trio

    from vtpm_cuse.cancel_fifo import CancelFifo, CancelFifoError, serve_with_cancel_fifo
    from vtpm_cuse.cuse.protocol import CuseProtocolError
    from vtpm_cuse.cuse_service import serve_vtpm_device

    pid_file = common.pid_file
    common.enter_chroot()
    vtpm = _build_vtpm(args, common, StateKeys.load(args))
    cancel_fifo = CancelFifo(args.cancel_fifo) if args.cancel_fifo else None
    if cancel_fifo is not None:
        try:
            cancel_fifo.create()
        except CancelFifoError as exc:
            raise UsageError(f"{PROGRAM} cuse: {exc.strerror}") from None
    daemonizer = Daemonizer()
    if not args.foreground:
        daemonizer.detach()
    common.lock_down()

    def ready() -> None:
        if pid_file is not None:
            pid_file.write()
        common.drop_privileges()
        notify_systemd("READY=1")
        startup_gc.resume()
        daemonizer.ready()

    serve = functools.partial(serve_vtpm_device, vtpm, options, ready=ready, opened=opened)
    if cancel_fifo is not None:
        serve = functools.partial(serve_with_cancel_fifo, cancel_fifo, vtpm.cancel, serve)
    try:
        trio.run(serve)
    except Exception as exc:
        cause = _sole_cause(exc)
        if not isinstance(cause, (OSError, CuseProtocolError, StateError)):
            raise
        print(f"{PROGRAM} cuse: /dev/{options.name}: {cause}", file=sys.stderr)
        return ExitCode.FAILURE
    finally:
        if cancel_fifo is not None:
            cancel_fifo.remove()
        if pid_file is not None:  # last: a vanished pid file means the daemon is done
            pid_file.remove()
    return ExitCode.OK


# -- chardev subcommand ------------------------------------------------------------


def _add_chardev_arguments(parser: argparse.ArgumentParser) -> None:
    add_mode_arguments(parser, Mode.CHARDEV)
    _add_extra_arguments(parser)
    parser.add_argument("--version", action="store_true", help="print the version and exit")


def _chardev_source(args: argparse.Namespace) -> str:
    """Which of -c/--chardev, -f/--fd, --vtpm-proxy was given (exactly one must be)."""
    given = [name for name in ("chardev", "fd", "vtpm_proxy") if getattr(args, name)]
    spelled = ", ".join("--" + name.replace("_", "-") for name in given)
    if len(given) != 1:
        raise UsageError(
            f"{PROGRAM} chardev: give exactly one of --chardev, --fd or --vtpm-proxy"
            + (f", not {spelled}" if given else "")
        )
    return given[0]


def _open_chardev(source: str, args: argparse.Namespace) -> Callable[[], tuple[int, str]]:
    """Open the command source now (errors reach the terminal); the returned callable gives
    ``(fd, description)`` once the TPM runs (the vTPM proxy device is created only then)."""
    if source == "vtpm_proxy":
        from .vtpm_proxy import ProxyControl, VtpmProxyError  # only this source needs it

        try:
            control = ProxyControl.open()
        except VtpmProxyError as exc:  # the message names --vtpm-proxy and the device
            raise CliOptionError(str(exc)) from None

        def create() -> tuple[int, str]:
            proxy = control.create()
            return proxy.fd, f"vTPM proxy {proxy.device} / {proxy.resource_manager}"

        return create
    if source == "fd":
        fd = parse_data_fd_option(args.fd).endpoint.fd
        try:
            os.fstat(fd)
        except OSError as exc:
            raise UsageError(f"{PROGRAM} chardev: --fd {fd}: {exc.strerror}") from None
        description = f"fd {fd}"
    else:
        try:
            fd, description = os.open(args.chardev, os.O_RDWR | os.O_CLOEXEC), args.chardev
        except OSError as exc:
            raise UsageError(f"{PROGRAM} chardev: --chardev {args.chardev}: {exc.strerror}") from None
    return lambda: (fd, description)


def run_chardev(args: argparse.Namespace) -> int:
    if args.version:
        print_version()
        return ExitCode.OK
    if _print_requested(args, Mode.CHARDEV):
        return ExitCode.OK
    source = _chardev_source(args)
    common = parse_common(args, Mode.CHARDEV, vtpm_proxy=source == "vtpm_proxy")
    ctrl_option = parse_ctrl_option(args.ctrl) if args.ctrl is not None else None
    if source == "fd":
        parse_data_fd_option(args.fd)
    resolve_tpmstate(args.tpmstate)
    source_ready = _open_chardev(source, args)  # errors reach the terminal, before logging starts
    configure_logging(common.log)
    common.enter_chroot()
    keys = StateKeys.load(args)
    ctrl = _open(ctrl_option, "--ctrl")
    try:
        import trio

        from vtpm_cuse.sockets.server import SocketServerConfig

        from .chardev import ChardevConfig, serve_chardev

        vtpm = _build_vtpm(args, common, keys)
    except BaseException:
        _close_all(ctrl)
        raise
    config = ChardevConfig(
        source_ready,
        SocketServerConfig(data=None, ctrl=ctrl, terminate_on_ctrl_loss=bool(ctrl_option and ctrl_option.terminate)),
    )
    daemonizer = Daemonizer()
    if args.daemon:
        daemonizer.detach()
    common.drop_privileges()
    common.lock_down()

    def ready() -> None:
        if common.pid_file is not None:
            common.pid_file.write()
        notify_systemd("READY=1")
        startup_gc.resume()
        daemonizer.ready()

    try:
        trio.run(functools.partial(serve_chardev, vtpm, config, ready=ready))
    except Exception as exc:
        cause = _sole_cause(exc)
        from .vtpm_proxy import VtpmProxyError  # loaded by now when the source is a proxy

        if not isinstance(cause, (OSError, StateError, VtpmProxyError)):
            raise
        print(f"{PROGRAM} chardev: {cause}", file=sys.stderr)
        return ExitCode.FAILURE
    finally:
        if common.pid_file is not None:
            common.pid_file.remove()
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
        "chardev",
        "serve TPM commands from a character device, an inherited fd or a Linux vTPM proxy device",
        _add_chardev_arguments,
        run_chardev,
    ),
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
        sub_parser = commands.add_parser(
            sub.name, help=sub.help, description=sub.help, allow_abbrev=False, add_help=False
        )
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
    except SeccompError as exc:
        print(f"{PROGRAM}: {exc}", file=sys.stderr)
        return ExitCode.FAILURE


def main(argv: Sequence[str] | None = None) -> NoReturn:
    # The daemon skips the engine's import-time declaration check (tests keep it):
    # see vtpm_cuse.tpm.declaration_check.
    os.environ.setdefault("VTPM_CUSE_DECLARATION_CHECK", "0")
    startup_gc.pause()  # until it serves: see .startup_gc
    sys.exit(run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
