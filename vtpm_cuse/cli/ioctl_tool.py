"""``vtpm-ioctl``: a drop-in for swtpm_ioctl, on a CUSE device or the socket control channel.

Options, messages and exit codes follow Debian's swtpm_ioctl (0.7.x), because
scripts and test suites compare its output literally: one command per
invocation, results on stdout, failures on stderr as
``TPM result from PTM_<NAME>: 0x<hex>``, exit status 0 or 1.  Like
``getopt_long_only`` every option may be written with one or two dashes.

Transports: the character device (``/dev/NAME`` as the last argument, or
``--tpm-device``: one ioctl per request, host byte order), ``--tcp`` and
``--unix``.  On the device, ``SWTPM_IOCTL_BUFFERSIZE=n`` makes ``--save``/``--load``
move the state blob with read()/write() of n bytes after the first ioctl,
as swtpm_ioctl does; otherwise blobs travel in 3072-byte ioctl chunks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import BinaryIO, NoReturn, TextIO

from ioctl_defs import (
    PTM_HDATA_MAX,
    PTM_STATE_BLOB_SIZE,
    PtmBlobType,
    PtmGetInfoRequest,
    PtmGetStateRequest,
    PtmHdataRequest,
    PtmInitFlag,
    PtmInitRequest,
    PtmLockStorageRequest,
    PtmLocRequest,
    PtmResetEstRequest,
    PtmSetBufferSizeRequest,
    PtmSetStateRequest,
    PtmStateFlag,
    by_name,
    is_non_fatal,
)
from vtpm_cuse import __version__

from .ctrl_client import (
    ControlClient,
    ControlConnectError,
    ControlIOError,
    DeviceControlClient,
    SocketControlClient,
    TcpAddress,
    UnixAddress,
)
from .exit_codes import ExitCode

__all__ = ["main", "parse_arguments", "Invocation", "UsageError"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_CTRL_PORT = 6546
"""swtpm_ioctl's default control port (its man page says 6545; the code uses 6546)."""
MAX_LOCALITY = 4
_HASH_CHUNK = PTM_HDATA_MAX
BUFFERSIZE_ENV = "SWTPM_IOCTL_BUFFERSIZE"
"""On a device: move state blobs with read()/write() of this many bytes."""


class UsageError(Exception):
    """Bad command line; the message is printed as is.

    ``newline=False`` reproduces the few swtpm_ioctl messages that lack a
    trailing newline (scripts comparing output would notice).
    """

    def __init__(self, message: str, *, newline: bool = True) -> None:
        super().__init__(message)
        self.end = "\n" if newline else ""


class Command(Enum):
    """The one thing an invocation does (swtpm_ioctl accepts only one)."""

    CAPABILITY = "c"
    INIT = "i"
    STOP = "stop"
    SHUTDOWN = "s"
    ESTABLISHED = "e"
    RESET_ESTABLISHED = "r"
    STORE_VOLATILE = "v"
    CANCEL = "C"
    LOCALITY = "l"
    HASH = "h"
    SAVE = "save"
    LOAD = "load"
    CONFIG = "g"
    BUFFERSIZE = "b"
    INFO = "info"
    LOCK_STORAGE = "lock-storage"


_BLOB_TYPES = {
    "permanent": PtmBlobType.PTM_BLOB_TYPE_PERMANENT,
    "volatile": PtmBlobType.PTM_BLOB_TYPE_VOLATILE,
    "savestate": PtmBlobType.PTM_BLOB_TYPE_SAVESTATE,
}

# option name -> (command, number of arguments); transports and meta options separately.
_COMMAND_OPTIONS: dict[str, tuple[Command, int]] = {
    "c": (Command.CAPABILITY, 0),
    "i": (Command.INIT, 0),
    "stop": (Command.STOP, 0),
    "s": (Command.SHUTDOWN, 0),
    "e": (Command.ESTABLISHED, 0),
    "r": (Command.RESET_ESTABLISHED, 1),
    "v": (Command.STORE_VOLATILE, 0),
    "C": (Command.CANCEL, 0),
    "l": (Command.LOCALITY, 1),
    "h": (Command.HASH, 1),
    "save": (Command.SAVE, 2),
    "load": (Command.LOAD, 2),
    "g": (Command.CONFIG, 0),
    "b": (Command.BUFFERSIZE, 1),
    "info": (Command.INFO, 1),
    "lock-storage": (Command.LOCK_STORAGE, 1),
}
_TRANSPORT_OPTIONS = ("tcp", "unix", "tpm-device")
_META_OPTIONS = ("version", "help")


@dataclass
class Invocation:
    """A parsed command line."""

    command: Command | None = None
    args: list[str] = field(default_factory=list)
    address: TcpAddress | UnixAddress | None = None
    device: str | None = None
    show_version: bool = False
    show_help: bool = False


def _option_name(arg: str) -> str | None:
    """``-c``/``--c``/``-stop``/``--stop`` -> ``c``/``stop``; None for non-options."""
    if arg.startswith("--") and len(arg) > 2:
        return arg[2:]
    if arg.startswith("-") and len(arg) > 1:
        return arg[1:]
    return None


def parse_tcp_address(text: str) -> TcpAddress:
    """``[host]:[port]``; the last colon separates the port (as swtpm_ioctl does)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, ""
    host = host.strip("[]") or DEFAULT_HOST
    if not port_text:
        return TcpAddress(host, DEFAULT_CTRL_PORT)
    if not (port_text.isascii() and port_text.isdigit()):
        raise UsageError(f"Invalid port '{port_text}'")
    port = int(port_text)
    if not 0 < port < 65536:
        raise UsageError(f"Port '{port_text}' outside valid range.")
    return TcpAddress(host, port)


def parse_arguments(argv: Sequence[str]) -> Invocation:
    """Parse like ``getopt_long_only``: one command, one transport."""
    inv = Invocation()
    index = 0
    while index < len(argv):
        arg = argv[index]
        name = _option_name(arg)
        index += 1
        if name is None:
            inv.device = arg  # the last positional argument names the device
            continue
        if "=" in name and arg.startswith("--"):
            # --tcp=host:port style
            name, _, inline = name.partition("=")
            argv = [*argv[:index], inline, *argv[index:]]
        if name in _META_OPTIONS:
            inv.show_version |= name == "version"
            inv.show_help |= name == "help"
            continue
        if name in _TRANSPORT_OPTIONS:
            if index >= len(argv):
                raise UsageError(f"Option '--{name}' requires an argument.")
            value = argv[index]
            index += 1
            if name == "tpm-device":
                inv.device = value
            else:
                inv.address = parse_tcp_address(value) if name == "tcp" else UnixAddress(value)
            continue
        if name not in _COMMAND_OPTIONS:
            raise UsageError(f"Unknown option '{arg}'.")
        command, nargs = _COMMAND_OPTIONS[name]
        if inv.command is not None:
            raise UsageError("Only one command may be given.")
        if index + nargs > len(argv):
            if command is Command.SAVE:
                raise UsageError("Missing filename argument for --save option")
            if command is Command.LOAD:
                raise UsageError("Missing filename argument for --load option")
            raise UsageError(f"Option '{arg}' requires an argument.")
        inv.command = command
        inv.args = list(argv[index : index + nargs])
        index += nargs
    return inv


# -- the commands ------------------------------------------------------------


class CommandFailed(Exception):
    """A command failed; the message has already the swtpm_ioctl wording."""


@dataclass
class Context:
    client: ControlClient
    out: TextIO
    stdin: BinaryIO
    buffersize: int | None = None
    """SWTPM_IOCTL_BUFFERSIZE: blob transfer by read()/write() on a device."""


def buffersize_from_env(environ: dict[str, str] | None = None) -> int | None:
    """SWTPM_IOCTL_BUFFERSIZE as a positive int; unset, empty or invalid -> None."""
    text = (os.environ if environ is None else environ).get(BUFFERSIZE_ENV, "")
    try:
        value = int(text, 0)
    except ValueError:
        return None
    return value if value >= 1 else None


def _call(ctx: Context, name: str, request=None, *, execute_name: str | None = None):
    """Run one request; a transport failure becomes ``Could not execute PTM_X: <reason>``."""
    spec = by_name(name)
    try:
        return ctx.client.request(spec, request)
    except (ControlIOError, ValueError) as exc:
        raise CommandFailed(f"Could not execute {execute_name or name}: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def _check(name: str, response) -> None:
    if response.tpm_result:
        raise CommandFailed(f"TPM result from {name}: {response.tpm_result:#x}")


def _simple(name: str, execute_name: str | None = None) -> Callable[[Context, list[str]], None]:
    def run(ctx: Context, args: list[str]) -> None:
        _check(name, _call(ctx, name, execute_name=execute_name))

    return run


def _parse_locality(text: str) -> int:
    try:
        loc = int(text, 0)
    except ValueError:
        raise UsageError(f"Could not get locality number from {text}.") from None
    if not 0 <= loc <= MAX_LOCALITY:
        raise UsageError(f"Locality outside valid range of [0..{MAX_LOCALITY}].")
    return loc


def cmd_capability(ctx: Context, args: list[str]) -> None:
    response = _call(ctx, "PTM_GET_CAPABILITY")
    # swtpm_ioctl reads the 8-byte {result, caps} reply as one big-endian u64.
    # On the device the reply is the bare u64.
    caps = (getattr(response, "tpm_result", 0) << 32) | getattr(response, "caps", 0)
    print(f"ptm capability is {caps:#x}", file=ctx.out)


def cmd_init(ctx: Context, args: list[str]) -> None:
    request = PtmInitRequest(init_flags=PtmInitFlag.PTM_INIT_FLAG_DELETE_VOLATILE)
    _check("PTM_INIT", _call(ctx, "PTM_INIT", request))


def cmd_established(ctx: Context, args: list[str]) -> None:
    response = _call(ctx, "PTM_GET_TPMESTABLISHED", execute_name="PTM_GET_ESTABLISHED")
    _check("PTM_GET_TPMESTABLISHED", response)
    print(f"tpmEstablished is {response.bit}", file=ctx.out)


def cmd_reset_established(ctx: Context, args: list[str]) -> None:
    request = PtmResetEstRequest(loc=_parse_locality(args[0]))
    response = _call(ctx, "PTM_RESET_TPMESTABLISHED", request, execute_name="PTM_RESET_ESTABLISHED")
    _check("PTM_RESET_TPMESTABLISHED", response)


def cmd_locality(ctx: Context, args: list[str]) -> None:
    request = PtmLocRequest(loc=_parse_locality(args[0]))
    _check("PTM_SET_LOCALITY", _call(ctx, "PTM_SET_LOCALITY", request))


def cmd_hash(ctx: Context, args: list[str]) -> None:
    data = ctx.stdin.read() if args[0] == "-" else os.fsencode(args[0])
    _check("PTM_HASH_START", _call(ctx, "PTM_HASH_START", execute_name="ioctl PTM_HASH_START"))
    for start in range(0, len(data), _HASH_CHUNK):
        request = PtmHdataRequest(data=data[start : start + _HASH_CHUNK])
        response = _call(ctx, "PTM_HASH_DATA", request, execute_name="ioctl PTM_HASH_DATA")
        _check("PTM_HASH_DATA", response)
    _check("PTM_HASH_END", _call(ctx, "PTM_HASH_END", execute_name="ioctl PTM_HASH_END"))


def _blob_type(text: str) -> PtmBlobType:
    try:
        return _BLOB_TYPES[text]
    except KeyError:
        raise UsageError(f"Unknown TPM state type '{text}'", newline=False) from None


def cmd_save(ctx: Context, args: list[str]) -> None:
    blob_type, filename = _blob_type(args[0]), args[1]
    try:
        fd = os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise CommandFailed(f"Could not open file '{filename}' for writing: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as file:

        def store(data: bytes) -> None:
            try:
                file.write(data)
            except OSError as exc:
                raise CommandFailed(f"Could not write to file '{filename}': {exc.strerror}") from exc

        offset = 0
        while True:
            request = PtmGetStateRequest(
                state_flags=PtmStateFlag.PTM_STATE_FLAG_DECRYPTED, type=blob_type, offset=offset
            )
            response = _call(ctx, "PTM_GET_STATEBLOB", request, execute_name="ioctl PTM_GET_STATEBLOB")
            if response.tpm_result:
                if is_non_fatal(response.tpm_result):
                    return
                _check("PTM_GET_STATEBLOB", response)
            store(response.data)
            offset += len(response.data)
            if not isinstance(ctx.client, DeviceControlClient) or offset >= response.totlength:
                return  # the socket answers the whole blob at once
            if ctx.buffersize is not None:
                _read_rest(ctx.client, response.totlength - offset, ctx.buffersize, store)
                return
            if not response.data:
                raise CommandFailed("Could not execute ioctl PTM_GET_STATEBLOB: no progress")


def _read_rest(client: DeviceControlClient, remaining: int, bufsize: int, store: Callable[[bytes], None]) -> None:
    """The read() continuation of a GET_STATEBLOB (SWTPM_IOCTL_BUFFERSIZE)."""
    while remaining > 0:
        try:
            data = client.read(bufsize)
        except ControlIOError as exc:
            raise CommandFailed(f"Could not read state blob: {_reason(exc)}") from exc
        if not data:
            raise CommandFailed(f"Could not read state blob: {remaining} bytes missing")
        store(data)
        remaining -= len(data)


def cmd_load(ctx: Context, args: list[str]) -> None:
    blob_type, filename = _blob_type(args[0]), args[1]
    try:
        with open(filename, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise CommandFailed(f"Could not open file '{filename}' for reading: {exc.strerror}") from exc
    if isinstance(ctx.client, DeviceControlClient):
        _load_device(ctx, ctx.client, blob_type, data)
        return
    request = PtmSetStateRequest(state_flags=0, type=blob_type, data=data)
    response = _call(ctx, "PTM_SET_STATEBLOB", request, execute_name="ioctl PTM_SET_STATEBLOB")
    _check("PTM_SET_STATEBLOB", response)


def _set_chunk(ctx: Context, blob_type: PtmBlobType, chunk: bytes) -> None:
    request = PtmSetStateRequest(state_flags=0, type=blob_type, data=chunk)
    _check("PTM_SET_STATEBLOB", _call(ctx, "PTM_SET_STATEBLOB", request, execute_name="ioctl PTM_SET_STATEBLOB"))


def _load_device(ctx: Context, client: DeviceControlClient, blob_type: PtmBlobType, data: bytes) -> None:
    """Chunks of exactly 3072 bytes and a shorter (maybe empty) last one; or, with
    SWTPM_IOCTL_BUFFERSIZE=n, an empty ioctl, write()s of n bytes, an empty ioctl."""
    if ctx.buffersize is None:
        for start in range(0, len(data) + 1, PTM_STATE_BLOB_SIZE):
            _set_chunk(ctx, blob_type, data[start : start + PTM_STATE_BLOB_SIZE])
        return
    _set_chunk(ctx, blob_type, b"")
    for start in range(0, len(data), ctx.buffersize):
        chunk = data[start : start + ctx.buffersize]
        try:
            written = client.write(chunk)
        except ControlIOError as exc:
            raise CommandFailed(f"Could not write state blob: {_reason(exc)}") from exc
        if written != len(chunk):
            raise CommandFailed(f"Could not write state blob: short write ({written} of {len(chunk)})")
    _set_chunk(ctx, blob_type, b"")


def cmd_config(ctx: Context, args: list[str]) -> None:
    response = _call(ctx, "PTM_GET_CONFIG")
    _check("PTM_GET_CONFIG", response)
    print(f"ptm configuration flags: {response.flags:#x}", file=ctx.out)


def _parse_unsigned(text: str, message: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(message) from None
    if not 0 <= value < 1 << 32:
        raise UsageError(message)
    return value


def cmd_buffersize(ctx: Context, args: list[str]) -> None:
    size = _parse_unsigned(args[0], f"Could not get buffersize from {args[0]}.")
    response = _call(ctx, "PTM_SET_BUFFERSIZE", PtmSetBufferSizeRequest(buffersize=size))
    _check("PTM_SET_BUFFERSIZE", response)
    print(f"TPM buffersize: {response.buffersize}", file=ctx.out)
    print(f"minimum size  : {response.minsize}", file=ctx.out)
    print(f"maximum size  : {response.maxsize}", file=ctx.out)


def cmd_info(ctx: Context, args: list[str]) -> None:
    try:
        flags = int(args[0], 0)
    except ValueError:
        raise UsageError("Cannot parse info flags.") from None
    if not 0 <= flags < 1 << 64:
        raise UsageError("Cannot parse info flags.")
    text = b""
    offset = 0
    while True:
        response = _call(ctx, "PTM_GET_INFO", PtmGetInfoRequest(flags=flags, offset=offset))
        _check("PTM_GET_INFO", response)
        text += response.buffer
        offset += len(response.buffer)
        if offset >= response.totlength or not response.buffer:
            break
    print(text.split(b"\0", 1)[0].decode(errors="replace"), file=ctx.out)


def cmd_lock_storage(ctx: Context, args: list[str]) -> None:
    _parse_unsigned(args[0], f"Could not get number of retries from {args[0]}.")
    # swtpm_ioctl sends retries = 0 whatever number was given; so do we.
    response = _call(ctx, "PTM_LOCK_STORAGE", PtmLockStorageRequest(retries=0))
    _check("PTM_LOCK_STORAGE", response)


_RUNNERS: dict[Command, Callable[[Context, list[str]], None]] = {
    Command.CAPABILITY: cmd_capability,
    Command.INIT: cmd_init,
    Command.STOP: _simple("PTM_STOP"),
    Command.SHUTDOWN: _simple("PTM_SHUTDOWN"),
    Command.ESTABLISHED: cmd_established,
    Command.RESET_ESTABLISHED: cmd_reset_established,
    Command.STORE_VOLATILE: _simple("PTM_STORE_VOLATILE"),
    Command.CANCEL: _simple("PTM_CANCEL_TPM_CMD"),
    Command.LOCALITY: cmd_locality,
    Command.HASH: cmd_hash,
    Command.SAVE: cmd_save,
    Command.LOAD: cmd_load,
    Command.CONFIG: cmd_config,
    Command.BUFFERSIZE: cmd_buffersize,
    Command.INFO: cmd_info,
    Command.LOCK_STORAGE: cmd_lock_storage,
}


def _validate_arguments(inv: Invocation) -> None:
    """Argument errors are reported before connecting, as swtpm_ioctl does."""
    assert inv.command is not None
    if inv.command in (Command.LOCALITY, Command.RESET_ESTABLISHED):
        _parse_locality(inv.args[0])
    elif inv.command in (Command.SAVE, Command.LOAD):
        _blob_type(inv.args[0])
    elif inv.command is Command.BUFFERSIZE:
        _parse_unsigned(inv.args[0], f"Could not get buffersize from {inv.args[0]}.")


def usage(program: str) -> str:
    return f"""\
TPM emulator control tool (vtpm-ioctl) version {__version__}

Usage: {program} command <device path> | --tpm-device <device path>
       {program} command --tcp [<host>]:[<port>] | --unix <path>

The following commands are supported:
--tpm-device <device> : the CUSE character device, e.g. /dev/vtpm-<name>; the
                        last non-option argument names it, too
--tcp [<host>]:[<prt>]: connect to the control channel on the given host and
                        port; default host is {DEFAULT_HOST}, default port is {DEFAULT_CTRL_PORT}
--unix <path>         : connect to the control channel's UnixIO socket
-c                    : get ptm capabilities
-i                    : do a hardware TPM_Init; if volatile state is found,
                        it will resume the TPM with it and delete it
                        afterwards
--stop                : stop the TPM without exiting
-s                    : shutdown the TPM; stops and exits
-e                    : get the tpmEstablished bit
-r <loc>              : reset the tpmEstablished bit; use the given locality
-v                    : store the TPM's volatile data
-C                    : cancel an ongoing TPM command
-l <loc>              : set the locality to the given number; valid
                        localities are 0-4
-h <data>             : hash the given data; if data is '-' then data are
                        read from stdin
--save <type> <file>  : store the TPM state blob of given type in a file;
                        type may be one of volatile, permanent, or savestate
--load <type> <file>  : load the TPM state blob of given type from a file;
                        type may be one of volatile, permanent, or savestate
-g                    : get configuration flags indicating which keys are in
                        use
-b <buffersize>       : set the buffer size of the TPM and get its current
                        size; get minimum and maximum supported sizes
--info <flags>        : get TPM implementation specific information;
                        flags must be an integer value
--lock-storage <n>    : lock the storage (retries are always 0)
--version             : display version and exit
--help                : display help screen and exit
"""


def run(
    argv: Sequence[str],
    *,
    program: str = "vtpm-ioctl",
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: BinaryIO | None = None,
) -> int:
    """Execute one invocation; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        inv = parse_arguments(argv)
        if inv.show_help:
            print(usage(program), file=out, end="")
            return ExitCode.OK
        if inv.show_version:
            print(f"TPM emulator control tool (vtpm-ioctl) version {__version__}", file=out)
            return ExitCode.OK
        if inv.command is None:
            raise UsageError("No valid command.")
        if inv.address is None and inv.device is None:
            raise UsageError("Error: Missing device name.")
        _validate_arguments(inv)
    except UsageError as exc:
        print(exc, file=err, end=exc.end)
        return ExitCode.FAILURE
    try:
        client: ControlClient
        if inv.address is not None:
            client = SocketControlClient.connect(inv.address)
        else:
            assert inv.device is not None
            client = DeviceControlClient.open(inv.device)
    except ControlConnectError as exc:
        print(exc.strerror, file=err)
        return ExitCode.FAILURE
    with client:
        ctx = Context(client, out, stdin or sys.stdin.buffer, buffersize_from_env())
        try:
            _RUNNERS[inv.command](ctx, inv.args)
        except UsageError as exc:
            print(exc, file=err, end=exc.end)
            return ExitCode.FAILURE
        except CommandFailed as exc:
            print(exc, file=err)
            return ExitCode.FAILURE
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = sys.argv[1:] if argv is None else argv
    sys.exit(run(args, program=os.path.basename(sys.argv[0]) or "vtpm-ioctl"))


if __name__ == "__main__":
    main()
