"""The daemon's command-line options, declared once, in swtpm's order per mode.

Why a table: ``vtpm-cuse socket|chardev|cuse`` must accept exactly the
options ``swtpm socket|chardev|cuse`` accept (swtpm 0.10/0.11, swtpm.8) and
list them in ``--help`` in the order a swtpm user knows from ``swtpm ...
--help``.  Each option is declared once in :data:`OPTIONS`; :data:`ORDER`
says which options a mode has and in which order.  Options of our own come
after swtpm's, declared by :mod:`.daemon` (see README "Options beyond swtpm's").

Values are strings here; :mod:`.options` and :mod:`vtpm_cuse.state` parse
them, so argparse only decides which options exist.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from .modes import Mode

__all__ = ["OPTIONS", "ORDER", "add_mode_arguments", "swtpm_option_names"]

MAX_DEVICE_NUMBER = 65535


@dataclass(frozen=True)
class Option:
    """One command-line option: its names, value placeholder and help."""

    names: tuple[str, ...]
    help: str
    metavar: str | None = None
    """None: a flag without value."""
    extra: dict[str, Any] = field(default_factory=dict)
    """More argparse keywords (type=, default=)."""

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.metavar is None:
            parser.add_argument(*self.names, **{"action": "store_true", "help": self.help, **self.extra})
        else:
            parser.add_argument(*self.names, metavar=self.metavar, help=self.help, **self.extra)


def _device_number(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0 <= value <= MAX_DEVICE_NUMBER:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..{MAX_DEVICE_NUMBER}")
    return value


_KEY = "file=<path>|fd=<fd>|pwdfile=<path>|pwdfd=<fd>[,mode=aes-cbc|aes-256-cbc][,format=hex|binary][,remove][,kdf=..]"
_SOCKET = (
    "type=unixio|tcp[,path=<path>][,port=<port>[,bindaddr=<addr>[,ifname=<if>]]]"
    "[,fd=<fd>|clientfd=<fd>][,mode=0...][,uid=<uid>][,gid=<gid>]"
)

OPTIONS: dict[str, Option] = {
    option.names[-1].lstrip("-"): option
    for option in (
        Option(("-p", "--port"), "TCP data port (implies --server type=tcp,disconnect)", "<port>"),
        Option(("-f", "--fd"), "socket: a connected data socket (implies -t); chardev: a character device", "<fd>"),
        Option(("-c", "--chardev"), "use the given character device for TPM commands", "<device>"),
        Option(("-t", "--terminate"), "terminate once the data channel connection has been lost"),
        Option(("-d", "--daemon"), "daemonize the TPM once it serves"),
        Option(("--ctrl",), "control channel (UnixIO or TCP) [,terminate]", _SOCKET + "[,terminate]"),
        Option(("--migration-key",), "key for the state blobs handed out over the control channel", _KEY),
        Option(
            ("--log",),
            "log destination ('-' disables), level (1 normal, 2+ debug), line prefix, truncate",
            "file=<path>|fd=<fd>[,level=n][,prefix=<prefix>][,truncate]",
        ),
        Option(("--key",), "key for encrypting the state files", _KEY),
        Option(("--locality",), "locality policy", "[reject-locality-4][,allow-set-locality]"),
        Option(("--pid",), "write the process ID", "file=<path>|fd=<fd>"),
        Option(
            ("--tpmstate",),
            "state directory, or one state file/block device with backend-uri=file:// (default: $TPM_PATH)",
            "dir=<dir>|backend-uri=dir://<dir>|file://<file>[,mode=0...][,lock][,backup][,fsync]",
        ),
        Option(
            ("--server",),
            "data channel server",
            "[type=tcp][,port=<port>[,bindaddr=<addr>[,ifname=<if>]]][,fd=<fd>][,disconnect]"
            "|type=unixio,path=<path>[,fd=<fd>][,mode=0...][,uid=<uid>][,gid=<gid>]; both: [,idle-timeout=<s>]",
        ),
        Option(("--vtpm-proxy",), "create a Linux vTPM proxy device (/dev/tpmN) and serve its commands"),
        Option(
            ("--flags",),
            "start without INIT, send TPM2_Startup, no automatic TPM2_Shutdown",
            "[not-need-init][,startup-clear|startup-state|startup-none][,disable-auto-shutdown]",
        ),
        Option(("-n", "--name"), "device name (mandatory): the node is /dev/NAME", "NAME"),
        Option(("-M", "--maj"), "device major number (0 = dynamic)", "MAJ", {"type": _device_number, "default": 0}),
        Option(("-m", "--min"), "device minor number", "MIN", {"type": _device_number, "default": 0}),
        Option(("-r", "--runas"), "change to the given user once the channels are open", "<user>"),
        Option(("-R", "--chroot"), "chroot to the given directory at startup (root only)", "<path>"),
        Option(("--tpm2",), "TPM 2.0 (the only TPM this emulator implements)"),
        Option(
            ("--seccomp",),
            "seccomp syscall filter: action on a denied syscall; none disables it (default kill)",
            "action=none|kill|log",
        ),
        Option(
            ("--migration",), "defer the storage lock for an incoming migration", "[incoming][,release-lock-outgoing]"
        ),
        Option(("--print-capabilities",), "print the supported features as JSON and exit"),
        Option(("--print-states",), "print the stored TPM states as JSON and exit"),
        Option(
            ("--profile",),
            "select the TPM 2 profile (only the built-in profile exists)",
            "name=<name>|profile=<json>|file=<file>|fd=<fd>[,remove-disabled=check|fips-host]",
        ),
        Option(("--print-profiles",), "print the built-in profiles as JSON and exit"),
        Option(("--print-info",), "print TPM information as JSON (flags 0x1..0x80, or'ed) and exit", "<flags>"),
        Option(
            ("--pcap",),
            "write TPM commands and responses into a pcapng file (simulated TCP to port 2321)",
            "file=<path>|fd=<fd>[,truncate][,mode=0...][,checksums]",
        ),
        Option(("-h", "--help"), "display this help screen and exit", extra={"action": "help"}),
        Option(("-v", "--version"), "print the version and exit"),
    )
}
"""Every option, keyed by its long name without dashes."""

_ALL_TAIL = (
    "seccomp", "migration", "print-capabilities", "print-states", "profile", "print-profiles", "print-info",
)  # fmt: skip

ORDER: dict[Mode, tuple[str, ...]] = {
    Mode.SOCKET: (
        "port", "fd", "terminate", "daemon", "ctrl", "migration-key", "log", "key", "locality", "pid", "tpmstate",
        "server", "flags", "runas", "chroot", "tpm2", *_ALL_TAIL, "pcap", "help",
    ),
    Mode.CHARDEV: (
        "chardev", "fd", "daemon", "ctrl", "migration-key", "log", "key", "pid", "tpmstate", "runas", "chroot",
        "vtpm-proxy", "locality", "flags", "tpm2", *_ALL_TAIL, "pcap", "help",
    ),
    Mode.CUSE: (
        "name", "maj", "min", "key", "locality", "migration-key", "log", "pid", "tpmstate", "flags", "runas",
        "chroot", "tpm2", *_ALL_TAIL, "pcap", "help", "version",
    ),
}  # fmt: skip
"""swtpm's options of each mode, in the order of its ``--help``."""


def add_mode_arguments(parser: argparse.ArgumentParser, mode: Mode) -> None:
    """Declare ``mode``'s swtpm options on a parser created with ``add_help=False``;
    options of our own are added after them by the caller."""
    for key in ORDER[mode]:
        OPTIONS[key].add_to(parser)


def swtpm_option_names(mode: Mode) -> list[str]:
    """Every spelling (short and long) of swtpm's options in ``mode``."""
    return [name for key in ORDER[mode] for name in OPTIONS[key].names]
