"""Process chores of the daemon: ``--log``, ``--pid``, ``-d/--daemon``, ``--runas``, sd_notify.

Kept apart from option parsing and from the servers because they touch the
process as a whole (file descriptors 0-2, fork, the root logger).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from vtpm_cuse.state.errors import OptionError

from .exit_codes import ExitCode
from .options import LogOption, PidOption

__all__ = [
    "configure_logging",
    "OneLineFormatter",
    "PidFile",
    "Daemonizer",
    "DaemonizeError",
    "RunAs",
    "notify_systemd",
]

_LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def _level(swtpm_level: int) -> int:
    """swtpm's ``level=n``: higher is chattier; 1 = normal, >= 2 = debug, 0 = errors only."""
    if swtpm_level <= 0:
        return logging.ERROR
    if swtpm_level == 1:
        return logging.INFO
    return logging.DEBUG


class OneLineFormatter(logging.Formatter):
    """One line per event, as swtpm's log: a traceback or a multi-line message is folded
    (`` | `` between its lines), so that every line of the log starts with the prefix."""

    def format(self, record: logging.LogRecord) -> str:
        return " | ".join(super().format(record).splitlines())


LOG_FILE_MODE = 0o600
"""A new log file is owner-only: it names state paths and clients (never key material)."""


def _open_log_file(path: Path, truncate: bool) -> TextIO:
    """Append (or truncate) ``path``, creating it 0600 whatever the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
    try:
        fd = os.open(path, flags, LOG_FILE_MODE)
    except OSError as exc:
        raise LogFileError(f"--log: cannot open {path}: {exc.strerror}") from None
    if os.fstat(fd).st_size == 0:
        os.fchmod(fd, LOG_FILE_MODE)
    return os.fdopen(fd, "a", buffering=1)


class LogFileError(OptionError):
    """The ``--log`` file cannot be opened (reported like a bad option value)."""


def configure_logging(option: LogOption | None) -> None:
    """Without ``--log`` warnings go to stderr; ``file=-`` silences everything."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if option is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        root.setLevel(logging.WARNING)
    elif option.disabled:
        handler = logging.NullHandler()
        root.setLevel(logging.CRITICAL + 1)
    else:
        stream: TextIO
        if option.fd is not None:
            stream = os.fdopen(option.fd, "a", buffering=1, closefd=False)
        else:
            assert option.path is not None
            stream = _open_log_file(option.path, option.truncate)
        handler = logging.StreamHandler(stream)
        root.setLevel(_level(option.level))
    fmt = (option.prefix if option is not None else "") + _LOG_FORMAT
    handler.setFormatter(OneLineFormatter(fmt))
    root.addHandler(handler)


@dataclass
class PidFile:
    """Writes the pid where ``--pid`` says; a file is removed again at exit."""

    option: PidOption

    def write(self) -> None:
        text = str(os.getpid()).encode()
        if self.option.fd is not None:
            os.write(self.option.fd, text)
            os.close(self.option.fd)
            return
        assert self.option.path is not None
        tmp = self.option.path.with_name(self.option.path.name + ".tmp")
        tmp.write_bytes(text)
        os.replace(tmp, self.option.path)

    def remove(self) -> None:
        if self.option.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.option.path.unlink()


class DaemonizeError(RuntimeError):
    pass


class Daemonizer:
    """``-d``: fork; the parent waits until the child is serving, then exits 0.

    The parent stays until :meth:`ready` so that a caller (libvirt, a test)
    that starts ``vtpm-cuse socket -d`` can connect as soon as the command
    returns, and sees a non-zero status if the start failed.
    """

    def __init__(self) -> None:
        self._write_end: int | None = None

    def detach(self) -> None:
        """Fork; returns only in the child (the parent exits with the child's verdict)."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid:
            os.close(write_end)
            with os.fdopen(read_end, "rb") as verdict:
                ok = verdict.read(1) == b"1"
            os._exit(ExitCode.OK if ok else ExitCode.FAILURE)
        os.close(read_end)
        os.setsid()
        self._write_end = write_end
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1):
            os.dup2(null, fd)
        # stderr stays until ready(): start-up errors still reach the terminal.
        os.close(null)

    def ready(self) -> None:
        """Tell the waiting parent that start-up succeeded."""
        if self._write_end is None:
            return
        os.write(self._write_end, b"1")
        os.close(self._write_end)
        self._write_end = None
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 2)
        os.close(null)


NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def notify_systemd(state: str = "READY=1", environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` to the service manager's $NOTIFY_SOCKET (a unix datagram socket;
    a leading '@' names an abstract socket).  Returns whether a message was sent.

    Why not libsystemd: the protocol is one datagram, and a failure to notify must
    not take the TPM down (the service manager then times the unit out itself)."""
    path = (os.environ if environ is None else environ).get(NOTIFY_SOCKET_ENV)
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.send(state.encode())
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot notify %s=%s: %s", NOTIFY_SOCKET_ENV, path, exc)
        return False
    return True


@dataclass(frozen=True)
class RunAs:
    """``--runas USER``: whom to become once the device exists (swtpm drops root
    after creating the node, which needs root to open /dev/cuse)."""

    name: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, user: str) -> RunAs:
        """A user name or numeric uid; raises ValueError for an unknown user."""
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            raise ValueError(f"user '{user}' does not exist") from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    def apply(self) -> None:
        """Drop to the user (all threads: glibc applies set*id process-wide)."""
        if os.geteuid() == self.uid:
            return
        os.setgroups(os.getgrouplist(self.name, self.gid))
        os.setgid(self.gid)
        os.setuid(self.uid)
