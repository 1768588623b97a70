"""Values of the swtpm-style daemon options (``--server``, ``--ctrl``, ``--flags`` ...).

Each option value uses swtpm's ``key=value,...`` syntax, split by
:func:`vtpm_cuse.state.optionstring.parse_option_string` (shared with
``--key``/``--tpmstate``); this module turns the pieces into frozen
dataclasses so that the daemon never looks at option strings again.

Everything here is pure parsing: nothing opens sockets or files, so the
parsers can be tested without side effects and a bad command line fails
before any resource is touched.  Every problem raises
:class:`CliOptionError` with a message naming the option and the offending
value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from vtpm_cuse.flags import LocalityPolicy, StartupMode, VtpmFlags
from vtpm_cuse.sockets.endpoints import (
    DEFAULT_BIND_ADDRESS,
    DEFAULT_UNIX_SOCKET_MODE,
    ConnectedFd,
    Endpoint,
    ListeningFd,
    TcpEndpoint,
    UnixEndpoint,
)
from vtpm_cuse.state.errors import OptionError
from vtpm_cuse.state.optionstring import parse_bool, parse_mode, parse_option_string
from vtpm_cuse.tpm.limits import MAX_LOADED_OBJECTS

__all__ = [
    "CliOptionError",
    "TcpEndpoint",
    "UnixEndpoint",
    "ListeningFd",
    "ConnectedFd",
    "Endpoint",
    "ServerOption",
    "CtrlOption",
    "PidOption",
    "LogOption",
    "SeccompAction",
    "SeccompOption",
    "DEFAULT_BIND_ADDRESS",
    "DEFAULT_SERVER_PORT",
    "DEFAULT_UNIX_SOCKET_MODE",
    "TPM_PORT_ENV",
    "parse_server_option",
    "parse_port_option",
    "parse_data_fd_option",
    "parse_ctrl_option",
    "parse_flags_option",
    "parse_locality_option",
    "parse_pid_option",
    "parse_log_option",
    "parse_object_slots_option",
    "parse_seccomp_option",
    "SocketOwner",
    "MigrationOption",
    "ProfileOption",
    "RemoveDisabled",
    "PcapOption",
    "parse_migration_option",
    "parse_profile_option",
    "parse_pcap_option",
    "parse_print_info_option",
    "parse_chroot_option",
    "PRINT_INFO_ALL",
]

DEFAULT_SERVER_PORT = 6545
"""swtpm's data port when neither ``--server port=`` nor ``TPM_PORT`` is given."""
TPM_PORT_ENV = "TPM_PORT"
_FIRST_FREE_FD = 3
"""Descriptors 0-2 are stdio; swtpm refuses them as sockets and so do we."""


class CliOptionError(OptionError):
    """A daemon command-line option value is invalid."""


@dataclass(frozen=True)
class SocketOwner:
    """``uid=``/``gid=`` of a UnixIO socket: who owns the socket file (root only, as in swtpm).

    -1 leaves that half unchanged, which is what ``os.chown`` expects.
    """

    uid: int = -1
    gid: int = -1

    def apply(self, path: Path) -> None:
        """chown the socket file; the caller reports the OSError with the option name."""
        os.chown(path, self.uid, self.gid)


@dataclass(frozen=True)
class ServerOption:
    """The data channel (``--server``, ``-p``, ``-f``)."""

    endpoint: Endpoint
    disconnect: bool = False
    """Close the connection after each response (``disconnect``, implied by ``-p``)."""
    owner: SocketOwner | None = None
    """``uid=``/``gid=`` of a ``type=unixio`` socket file."""
    idle_timeout: float | None = None
    """``idle-timeout=S`` (ours, not swtpm's): seconds a data or control connection may
    idle while its table is full and others wait; None keeps the default."""


@dataclass(frozen=True)
class CtrlOption:
    """The control channel (``--ctrl``)."""

    endpoint: Endpoint
    terminate: bool = False
    """Exit when the control client goes away."""
    owner: SocketOwner | None = None
    """``uid=``/``gid=`` of a ``type=unixio`` socket file."""


@dataclass(frozen=True)
class PidOption:
    """``--pid``: where to write the process id (exactly one of the two)."""

    path: Path | None = None
    fd: int | None = None


@dataclass(frozen=True)
class LogOption:
    """``--log``: destination (``file=-`` disables logging), level, prefix."""

    path: Path | None = None
    fd: int | None = None
    level: int = 1
    prefix: str = ""
    truncate: bool = False

    @property
    def disabled(self) -> bool:
        return self.path is None and self.fd is None


class SeccompAction(Enum):
    """What swtpm's seccomp profile does on a blacklisted syscall (``--seccomp action=``)."""

    NONE = "none"
    KILL = "kill"
    LOG = "log"


@dataclass(frozen=True)
class SeccompOption:
    """``--seccomp``: what the syscall filter of :mod:`.seccomp` does on a denied call
    (``none`` installs no filter).
    """

    action: SeccompAction = SeccompAction.KILL
    """swtpm's default when ``action=`` is omitted."""


# -- helpers -------------------------------------------------------------------


def _items(value: str, allowed: tuple[str, ...], option: str) -> dict[str, str | None]:
    return parse_option_string(value, allowed, option=option, error=CliOptionError)


def _required(items: Mapping[str, str | None], name: str, option: str) -> str:
    value = items.get(name)
    if value is None:
        raise CliOptionError(f"{option}: {name} needs a value, e.g. {name}=...")
    return value


def _flag(items: Mapping[str, str | None], name: str, option: str) -> bool:
    if name not in items:
        return False
    return parse_bool(items[name], name=name, option=option, error=CliOptionError)


def _port(text: str | None, option: str, name: str = "port") -> int:
    if text is None or not (text.isascii() and text.isdigit()):
        raise CliOptionError(f"{option}: {name}={text!r} is not a port number")
    port = int(text)
    if not 0 < port < 65536:
        raise CliOptionError(f"{option}: {name}={port} is outside 1..65535")
    return port


def _fd(text: str | None, option: str, name: str) -> int:
    if text is None or not (text.isascii() and text.isdigit()):
        raise CliOptionError(f"{option}: {name}={text!r} is not a file descriptor number")
    fd = int(text)
    if fd < _FIRST_FREE_FD:
        raise CliOptionError(f"{option}: {name}={fd} is a standard stream, not a socket")
    return fd


def _socket_mode(items: Mapping[str, str | None], option: str) -> int:
    if "mode" not in items:
        return DEFAULT_UNIX_SOCKET_MODE
    return parse_mode(items["mode"], name="mode", option=option, error=CliOptionError)


def _type(items: Mapping[str, str | None], option: str, default: str | None) -> str | None:
    kind = items["type"] if "type" in items else default
    if "type" in items and kind is None:
        raise CliOptionError(f"{option}: type needs a value (tcp or unixio)")
    if kind not in (None, "tcp", "unixio"):
        raise CliOptionError(f"{option}: unknown type={kind!r} (expected tcp or unixio)")
    return kind


def _only_for(items: Mapping[str, str | None], names: tuple[str, ...], kind: str, option: str) -> None:
    for name in names:
        if name in items:
            raise CliOptionError(f"{option}: {name}= is not valid for type={kind}")


def _env_port(environ: Mapping[str, str] | None) -> int:
    env = os.environ if environ is None else environ
    text = env.get(TPM_PORT_ENV)
    if not text:
        return DEFAULT_SERVER_PORT
    return _port(text, f"environment variable {TPM_PORT_ENV}", "value")


# -- parsers --------------------------------------------------------------------


def _id(text: str | None, option: str, name: str) -> int:
    if text is None or not (text.isascii() and text.isdigit()):
        raise CliOptionError(f"{option}: {name}={text!r} is not a numeric id")
    return int(text)


def _owner(items: Mapping[str, str | None], kind: str | None, option: str) -> SocketOwner | None:
    """``uid=``/``gid=``: only for UnixIO sockets, which have a file to own."""
    given = [name for name in ("uid", "gid") if name in items]
    if not given:
        return None
    if kind != "unixio":
        raise CliOptionError(f"{option}: {given[0]}= is only valid for type=unixio")
    return SocketOwner(
        uid=_id(items["uid"], option, "uid") if "uid" in items else -1,
        gid=_id(items["gid"], option, "gid") if "gid" in items else -1,
    )


def _bind_address(items: Mapping[str, str | None], option: str) -> str:
    """``bindaddr=`` with ``ifname=``: a link-local IPv6 address needs its interface as scope."""
    bindaddr = items.get("bindaddr") or DEFAULT_BIND_ADDRESS
    if "ifname" not in items:
        return bindaddr
    ifname = _required(items, "ifname", option)
    if ":" not in bindaddr or "%" in bindaddr:
        raise CliOptionError(f"{option}: ifname={ifname} needs an IPv6 bindaddr= without a %scope, not {bindaddr!r}")
    return f"{bindaddr}%{ifname}"


_SERVER_NAMES = ("type", "port", "bindaddr", "ifname", "path", "mode", "uid", "gid", "fd", "disconnect", "idle-timeout")
MAX_IDLE_TIMEOUT = 86400.0
"""A day: anything longer is a typo, not a policy."""


def _idle_timeout(items: Mapping[str, str | None], option: str) -> float | None:
    """``idle-timeout=S``: a positive number of seconds up to :data:`MAX_IDLE_TIMEOUT`."""
    if "idle-timeout" not in items:
        return None
    text = _required(items, "idle-timeout", option)
    try:
        seconds = float(text)
    except ValueError:
        raise CliOptionError(f"{option}: idle-timeout={text!r} is not a number of seconds") from None
    if not 0 < seconds <= MAX_IDLE_TIMEOUT:  # also refuses nan
        raise CliOptionError(f"{option}: idle-timeout={text} is outside (0, {MAX_IDLE_TIMEOUT:.0f}] seconds")
    return seconds


def parse_server_option(value: str, environ: Mapping[str, str] | None = None) -> ServerOption:
    """``--server [type=tcp][,port=P][,bindaddr=A][,fd=F][,disconnect] | type=unixio,path=P[,mode=M][,fd=F]``.

    ``fd=`` may be a listening socket or an already connected one; the data
    server finds out which (swtpm's documentation is ambiguous about it).
    """
    option = "--server"
    items = _items(value, _SERVER_NAMES, option)
    kind = _type(items, option, "tcp")
    disconnect = _flag(items, "disconnect", option)
    idle = _idle_timeout(items, option)
    if "fd" in items:
        for name in ("port", "path", "bindaddr", "ifname", "uid", "gid", "mode"):
            if name in items:
                raise CliOptionError(f"{option}: fd= and {name}= are mutually exclusive")
        return ServerOption(ListeningFd(_fd(items["fd"], option, "fd")), disconnect, idle_timeout=idle)
    owner = _owner(items, kind, option)
    if kind == "unixio":
        _only_for(items, ("port", "bindaddr", "ifname", "disconnect"), "unixio", option)
        path = _required(items, "path", option)
        return ServerOption(UnixEndpoint(Path(path), _socket_mode(items, option)), owner=owner, idle_timeout=idle)
    _only_for(items, ("path", "mode"), "tcp", option)
    port = _port(items["port"], option) if "port" in items else _env_port(environ)
    return ServerOption(TcpEndpoint(port, _bind_address(items, option)), disconnect, idle_timeout=idle)


def parse_port_option(value: str) -> ServerOption:
    """``-p/--port P``: a TCP data server on loopback that disconnects after each response."""
    return ServerOption(TcpEndpoint(_port(value, "--port", "port")), disconnect=True)


def parse_data_fd_option(value: str) -> ServerOption:
    """``-f/--fd F``: an already connected data socket."""
    return ServerOption(ConnectedFd(_fd(value, "--fd", "fd")))


_CTRL_NAMES = ("type", "port", "bindaddr", "ifname", "path", "mode", "uid", "gid", "fd", "clientfd", "terminate")


def parse_ctrl_option(value: str) -> CtrlOption:
    """``--ctrl type=tcp,port=P[,bindaddr=A] | type=unixio,path=P[,mode=M] | [type=..,]fd=F``
    or ``clientfd=F``, each with an optional ``,terminate``."""
    option = "--ctrl"
    items = _items(value, _CTRL_NAMES, option)
    kind = _type(items, option, None)
    terminate = _flag(items, "terminate", option)
    given_fds = [name for name in ("fd", "clientfd") if name in items]
    if len(given_fds) == 2:
        raise CliOptionError(f"{option}: fd= and clientfd= are mutually exclusive")
    if given_fds:
        name = given_fds[0]
        for other in ("port", "path", "bindaddr", "ifname", "uid", "gid", "mode"):
            if other in items:
                raise CliOptionError(f"{option}: {name}= and {other}= are mutually exclusive")
        fd = _fd(items[name], option, name)
        endpoint: Endpoint = ListeningFd(fd) if name == "fd" else ConnectedFd(fd)
        return CtrlOption(endpoint, terminate)
    if kind is None:
        raise CliOptionError(f"{option}: type=tcp or type=unixio is required")
    owner = _owner(items, kind, option)
    if kind == "unixio":
        _only_for(items, ("port", "bindaddr", "ifname"), "unixio", option)
        path = _required(items, "path", option)
        return CtrlOption(UnixEndpoint(Path(path), _socket_mode(items, option)), terminate, owner)
    _only_for(items, ("path", "mode"), "tcp", option)
    if "port" not in items:
        raise CliOptionError(f"{option}: type=tcp needs port=")
    port = _port(items["port"], option)
    return CtrlOption(TcpEndpoint(port, _bind_address(items, option)), terminate)


_FLAG_NAMES = ("not-need-init", "disable-auto-shutdown") + tuple(s.value for s in StartupMode)
_TPM12_STARTUP = "startup-deactivated"
"""swtpm's TPM 1.2-only startup flag: refused with a message saying so."""


def parse_flags_option(value: str) -> VtpmFlags:
    """``--flags [not-need-init][,startup-clear|startup-state|startup-none][,disable-auto-shutdown]``."""
    option = "--flags"
    if _TPM12_STARTUP in value.split(","):
        raise CliOptionError(f"{option}: {_TPM12_STARTUP} is only valid for a TPM 1.2; this TPM is a TPM 2.0")
    items = _items(value, _FLAG_NAMES, option)
    startups = [s for s in StartupMode if _flag(items, s.value, option)]
    if len(startups) > 1:
        raise CliOptionError(f"{option}: choose one of {', '.join(s.value for s in startups)}, not several")
    return VtpmFlags(
        not_need_init=_flag(items, "not-need-init", option),
        startup=startups[0] if startups else None,
        disable_auto_shutdown=_flag(items, "disable-auto-shutdown", option),
    )


def parse_locality_option(value: str) -> LocalityPolicy:
    """``--locality [reject-locality-4][,allow-set-locality]``."""
    option = "--locality"
    items = _items(value, ("reject-locality-4", "allow-set-locality"), option)
    return LocalityPolicy(
        reject_locality_4=_flag(items, "reject-locality-4", option),
        allow_set_locality=_flag(items, "allow-set-locality", option),
    )


def parse_pid_option(value: str) -> PidOption:
    """``--pid file=<path>|fd=<fd>``."""
    option = "--pid"
    items = _items(value, ("file", "fd"), option)
    if ("file" in items) == ("fd" in items):
        raise CliOptionError(f"{option}: give exactly one of file= or fd=")
    if "file" in items:
        return PidOption(path=Path(_required(items, "file", option)))
    return PidOption(fd=_fd(items["fd"], option, "fd"))


def parse_seccomp_option(value: str) -> SeccompOption:
    """``--seccomp [action=none|kill|log]`` (swtpm 0.10 syntax; ``action=`` omitted means kill)."""
    option = "--seccomp"
    items = _items(value, ("action",), option)
    if "action" not in items:
        return SeccompOption()
    text = _required(items, "action", option)
    try:
        return SeccompOption(SeccompAction(text))
    except ValueError:
        choices = "|".join(a.value for a in SeccompAction)
        raise CliOptionError(f"{option}: unknown action={text!r} (expected {choices})") from None


def parse_log_option(value: str) -> LogOption:
    """``--log file=<path>|fd=<fd>[,level=n][,prefix=<text>][,truncate]``; ``file=-`` disables."""
    option = "--log"
    items = _items(value, ("file", "fd", "level", "prefix", "truncate"), option)
    if "file" in items and "fd" in items:
        raise CliOptionError(f"{option}: give file= or fd=, not both")
    level = 1
    if "level" in items:
        text = items["level"]
        if text is None or not (text.isascii() and text.isdigit()):
            raise CliOptionError(f"{option}: level={text!r} is not a number")
        level = int(text)
    common = {
        "level": level,
        "prefix": items.get("prefix") or "",
        "truncate": _flag(items, "truncate", option),
    }
    if "fd" in items:
        # fd 1/2 are fine for a log, so no _fd() standard-stream check here.
        text = items["fd"]
        if text is None or not (text.isascii() and text.isdigit()):
            raise CliOptionError(f"{option}: fd={text!r} is not a file descriptor number")
        return LogOption(fd=int(text), **common)  # type: ignore[arg-type]
    path = _required(items, "file", option) if "file" in items else None
    if path is None:
        raise CliOptionError(f"{option}: give file=<path> or fd=<fd>")
    if path == "-":
        return LogOption(**common)  # type: ignore[arg-type]
    return LogOption(path=Path(path), **common)  # type: ignore[arg-type]


def parse_object_slots_option(value: str) -> int:
    """``--object-slots N``: transient object slots of the TPM, 1..MAX_LOADED_OBJECTS.

    Without a resource manager every tool's objects stay loaded until it flushes them,
    so the default is generous (libtpms has 3); a smaller count reproduces such a TPM.
    """
    option = "--object-slots"
    if not (value.isascii() and value.isdigit()):
        raise CliOptionError(f"{option}: {value!r} is not a number")
    slots = int(value)
    if not 1 <= slots <= MAX_LOADED_OBJECTS:
        raise CliOptionError(f"{option}: {slots} is outside 1..{MAX_LOADED_OBJECTS}")
    return slots


@dataclass(frozen=True)
class MigrationOption:
    """``--migration [incoming][,release-lock-outgoing]``: storage locking around a migration."""

    incoming: bool = False
    """Defer the storage lock until state blobs arrive or the first command runs."""
    release_lock_outgoing: bool = False
    """Release the lock once the savestate blob was fetched (always done here, see README)."""


def parse_migration_option(value: str) -> MigrationOption:
    """``--migration [incoming][,release-lock-outgoing]``."""
    option = "--migration"
    items = _items(value, ("incoming", "release-lock-outgoing"), option)
    return MigrationOption(
        incoming=_flag(items, "incoming", option),
        release_lock_outgoing=_flag(items, "release-lock-outgoing", option),
    )


class RemoveDisabled(Enum):
    """``--profile ...,remove-disabled=``: drop algorithms a FIPS host disables (``custom`` profile only)."""

    CHECK = "check"
    FIPS_HOST = "fips-host"


@dataclass(frozen=True)
class ProfileOption:
    """``--profile``: exactly one source of a profile, plus ``remove-disabled``.

    Only parsed here; :mod:`.info` decides whether this TPM can honour it.
    """

    name: str | None = None
    json_text: str | None = None
    path: Path | None = None
    fd: int | None = None
    remove_disabled: RemoveDisabled | None = None


_PROFILE_SOURCES = ("name", "profile", "file", "fd")


def parse_profile_option(value: str) -> ProfileOption:
    """``--profile name=<n>|profile=<json>|file=<path>|fd=<fd>[,remove-disabled=check|fips-host]``.

    A JSON profile contains commas, so ``profile=`` takes the rest of the value
    (as swtpm does); a value starting with ``{`` is a JSON profile too.
    """
    option = "--profile"
    remove: RemoveDisabled | None = None
    if value.startswith("{") or value.startswith("profile="):
        text = value.removeprefix("profile=")
        if not text:
            raise CliOptionError(f"{option}: profile= needs a JSON document")
        return ProfileOption(json_text=text)
    items = _items(value, (*_PROFILE_SOURCES, "remove-disabled"), option)
    sources = [name for name in _PROFILE_SOURCES if name in items]
    if len(sources) != 1:
        raise CliOptionError(f"{option}: give exactly one of name=, profile=, file= or fd=, not {value!r}")
    if "remove-disabled" in items:
        text = _required(items, "remove-disabled", option)
        try:
            remove = RemoveDisabled(text)
        except ValueError:
            choices = "|".join(r.value for r in RemoveDisabled)
            raise CliOptionError(f"{option}: unknown remove-disabled={text!r} (expected {choices})") from None
    source = sources[0]
    text = _required(items, source, option)
    if source == "name":
        return ProfileOption(name=text, remove_disabled=remove)
    if source == "file":
        return ProfileOption(path=Path(text), remove_disabled=remove)
    if source == "fd":
        if not (text.isascii() and text.isdigit()):
            raise CliOptionError(f"{option}: fd={text!r} is not a file descriptor number")
        return ProfileOption(fd=int(text), remove_disabled=remove)
    return ProfileOption(json_text=text, remove_disabled=remove)


@dataclass(frozen=True)
class PcapOption:
    """``--pcap``: where to record the TPM traffic as pcapng (see :mod:`.pcap`)."""

    path: Path | None = None
    fd: int | None = None
    truncate: bool = False
    mode: int = 0o640
    """swtpm's default file mode of the capture."""
    checksums: bool = False


def parse_pcap_option(value: str) -> PcapOption:
    """``--pcap file=<path>|fd=<fd>[,truncate][,mode=0...][,checksums]``."""
    option = "--pcap"
    items = _items(value, ("file", "fd", "truncate", "mode", "checksums"), option)
    if ("file" in items) == ("fd" in items):
        raise CliOptionError(f"{option}: give exactly one of file= or fd=")
    common = {
        "truncate": _flag(items, "truncate", option),
        "checksums": _flag(items, "checksums", option),
        "mode": parse_mode(items["mode"], name="mode", option=option, error=CliOptionError)
        if "mode" in items
        else 0o640,
    }
    if "fd" in items:
        text = items["fd"]
        if text is None or not (text.isascii() and text.isdigit()):
            raise CliOptionError(f"{option}: fd={text!r} is not a file descriptor number")
        return PcapOption(fd=int(text), **common)  # type: ignore[arg-type]
    return PcapOption(path=Path(_required(items, "file", option)), **common)  # type: ignore[arg-type]


PRINT_INFO_ALL = 0xFF
"""Every SwtpmInfo bit swtpm 0.10 defines (0x01 specification ... 0x80 attributes)."""


def parse_print_info_option(value: str) -> int:
    """``--print-info <flags>``: decimal or 0x-hex, a combination of the bits 0x01..0x80."""
    option = "--print-info"
    try:
        flags = int(value, 0)
    except ValueError:
        raise CliOptionError(f"{option}: {value!r} is not a number") from None
    if not 0 < flags <= PRINT_INFO_ALL:
        raise CliOptionError(f"{option}: {value} is outside 0x1..0x{PRINT_INFO_ALL:x}")
    return flags


def parse_chroot_option(value: str) -> Path:
    """``-R/--chroot <dir>``: must name a directory (checked when applied, as root)."""
    if not value:
        raise CliOptionError("--chroot: the directory name is empty")
    return Path(value)
