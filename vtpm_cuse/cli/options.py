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
from vtpm_cuse.tpm.constants import MAX_LOADED_OBJECTS

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
]

DEFAULT_SERVER_PORT = 6545
"""swtpm's data port when neither ``--server port=`` nor ``TPM_PORT`` is given."""
TPM_PORT_ENV = "TPM_PORT"
_FIRST_FREE_FD = 3
"""Descriptors 0-2 are stdio; swtpm refuses them as sockets and so do we."""


class CliOptionError(OptionError):
    """A daemon command-line option value is invalid."""


@dataclass(frozen=True)
class ServerOption:
    """The data channel (``--server``, ``-p``, ``-f``)."""

    endpoint: Endpoint
    disconnect: bool = False
    """Close the connection after each response (``disconnect``, implied by ``-p``)."""


@dataclass(frozen=True)
class CtrlOption:
    """The control channel (``--ctrl``)."""

    endpoint: Endpoint
    terminate: bool = False
    """Exit when the control client goes away."""


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
    """``--seccomp``: the requested action, kept so the filter can honour it later.

    Accepted so that swtpm command lines (test harnesses pass
    ``--seccomp action=none``) start this daemon unchanged; no filter is
    installed yet, whatever the action.
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


_SERVER_NAMES = ("type", "port", "bindaddr", "path", "mode", "fd", "disconnect")


def parse_server_option(value: str, environ: Mapping[str, str] | None = None) -> ServerOption:
    """``--server [type=tcp][,port=P][,bindaddr=A][,fd=F][,disconnect] | type=unixio,path=P[,mode=M][,fd=F]``.

    ``fd=`` may be a listening socket or an already connected one; the data
    server finds out which (swtpm's documentation is ambiguous about it).
    """
    option = "--server"
    items = _items(value, _SERVER_NAMES, option)
    kind = _type(items, option, "tcp")
    disconnect = _flag(items, "disconnect", option)
    if "fd" in items:
        for name in ("port", "path", "bindaddr"):
            if name in items:
                raise CliOptionError(f"{option}: fd= and {name}= are mutually exclusive")
        return ServerOption(ListeningFd(_fd(items["fd"], option, "fd")), disconnect)
    if kind == "unixio":
        _only_for(items, ("port", "bindaddr", "disconnect"), "unixio", option)
        path = _required(items, "path", option)
        return ServerOption(UnixEndpoint(Path(path), _socket_mode(items, option)))
    _only_for(items, ("path", "mode"), "tcp", option)
    port = _port(items["port"], option) if "port" in items else _env_port(environ)
    bindaddr = items.get("bindaddr") or DEFAULT_BIND_ADDRESS
    return ServerOption(TcpEndpoint(port, bindaddr), disconnect)


def parse_port_option(value: str) -> ServerOption:
    """``-p/--port P``: a TCP data server on loopback that disconnects after each response."""
    return ServerOption(TcpEndpoint(_port(value, "--port", "port")), disconnect=True)


def parse_data_fd_option(value: str) -> ServerOption:
    """``-f/--fd F``: an already connected data socket."""
    return ServerOption(ConnectedFd(_fd(value, "--fd", "fd")))


_CTRL_NAMES = ("type", "port", "bindaddr", "path", "mode", "fd", "clientfd", "terminate")


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
        for other in ("port", "path", "bindaddr"):
            if other in items:
                raise CliOptionError(f"{option}: {name}= and {other}= are mutually exclusive")
        fd = _fd(items[name], option, name)
        endpoint: Endpoint = ListeningFd(fd) if name == "fd" else ConnectedFd(fd)
        return CtrlOption(endpoint, terminate)
    if kind is None:
        raise CliOptionError(f"{option}: type=tcp or type=unixio is required")
    if kind == "unixio":
        _only_for(items, ("port", "bindaddr"), "unixio", option)
        path = _required(items, "path", option)
        return CtrlOption(UnixEndpoint(Path(path), _socket_mode(items, option)), terminate)
    _only_for(items, ("path", "mode"), "tcp", option)
    if "port" not in items:
        raise CliOptionError(f"{option}: type=tcp needs port=")
    port = _port(items["port"], option)
    return CtrlOption(TcpEndpoint(port, items.get("bindaddr") or DEFAULT_BIND_ADDRESS), terminate)


_FLAG_NAMES = ("not-need-init", "disable-auto-shutdown") + tuple(s.value for s in StartupMode)


def parse_flags_option(value: str) -> VtpmFlags:
    """``--flags [not-need-init][,startup-clear|startup-state|startup-none][,disable-auto-shutdown]``."""
    option = "--flags"
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
    """``--seccomp [action=none|kill|log]`` (swtpm 0.10 syntax; ``action=`` omitted means kill).

    Only validated: no seccomp filter is applied yet, so every action behaves
    like ``none`` for now.
    """
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
