"""What the daemon prints instead of serving: ``--print-capabilities``, ``--print-states``,
``--print-info``, ``--print-profiles``, and the check of ``--profile`` against our profile.

Why one module: libvirt and swtpm_setup probe an emulator with exactly these
options and decide from the answers which command lines to use, so the
answers must list what is implemented -- no more (a probe that promises
``--pcap`` gets a command line we would refuse), no less.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from vtpm_cuse import __version__
from vtpm_cuse.state import StateKind

from . import seccomp
from .modes import Mode  # defined apart, so that arguments.py imports no more than it needs
from .options import CliOptionError, ProfileOption

__all__ = ["Mode", "features", "capabilities_json", "states_json", "info_json", "profile_names", "check_profile"]

SWTPM_TYPE = "swtpm"
"""The ``type`` of every JSON document: libvirt checks for it."""

AVAILABLE_PROFILES = 0x40
"""The SwtpmInfo bit of the built-in profile list (also ``--print-profiles``)."""


_COMMON_FEATURES = (
    "tpm-2.0",
    "flags-opt-startup",
    "flags-opt-disable-auto-shutdown",
    "cmdarg-key-fd",
    "cmdarg-pwd-fd",
    "cmdarg-print-states",
    "cmdarg-chroot",
    "cmdarg-migration",
    "nvram-backend-dir",
    "nvram-backend-file",
    "cmdarg-profile",
    "cmdarg-print-profiles",
    "cmdarg-print-info",
    "tpmstate-opt-lock",
    "tpmstate-dir-backend-opt-backup",
    "tpmstate-dir-backend-opt-fsync",
    "systemd-notify",
    "cmdarg-pcap",
)
"""swtpm 0.10/0.11 feature names this daemon implements in every mode.

Left out on purpose: ``tpm-1.2`` (TPM 2.0 only), ``profile-opt-remove-disabled``
(only meaningful for libtpms' modifiable ``custom`` profile, which we do not
have)."""

_MODE_FEATURES = {
    Mode.SOCKET: ("tpm-send-command-header", "ctrl-opt-terminate"),
    Mode.CHARDEV: ("ctrl-opt-terminate",),
    Mode.CUSE: (),
}
"""The TCG send-command header exists only on the socket data channel; CUSE has no control socket."""


def features(mode: Mode) -> list[str]:
    """The feature list for ``mode``: common ones, the mode's own, seccomp if this CPU has a table, RSA sizes."""
    from vtpm_cuse.tpm.algorithms import RSA_KEY_BITS  # the engine's modules load lazily (daemon start-up)

    names = [*_COMMON_FEATURES, *_MODE_FEATURES[mode]]
    if seccomp.supported():
        names.append("cmdarg-seccomp")
    names.extend(f"rsa-keysize-{bits}" for bits in RSA_KEY_BITS)
    return names


def capabilities_json(mode: Mode) -> str:
    """The ``--print-capabilities`` document (with the ``version`` field libvirt reads since swtpm 0.7)."""
    return json.dumps({"type": SWTPM_TYPE, "features": features(mode), "version": __version__})


def states_json(sizes: Iterable[tuple[StateKind, int | None]]) -> str:
    """The ``--print-states`` document: name and stored size of each state that exists.

    Names are swtpm's (``permall``, ``volatile``, ``savestate``), not the file suffixes.
    """
    names = {StateKind.PERMANENT: "permall", StateKind.VOLATILE: "volatile", StateKind.SAVESTATE: "savestate"}
    states = [{"name": names[kind], "size": size} for kind, size in sizes if size is not None]
    return json.dumps({"type": SWTPM_TYPE, "states": states})


class _StoppedTpm:
    """What GET_INFO's document builder needs when no TPM runs (``--print-info``)."""

    @property
    def command_table(self) -> object:
        from vtpm_cuse.tpm.commands import COMMANDS

        return COMMANDS


def info_json(flags: int) -> str:
    """The ``--print-info`` document: what CMD_GET_INFO answers for ``flags`` (no TPM is started)."""
    from vtpm_cuse.control import get_info_json

    return get_info_json(_StoppedTpm(), flags)  # type: ignore[arg-type]


def profile_names() -> list[str]:
    """Names of the built-in profiles, from the same document GET_INFO answers with."""
    return [entry["Name"] for entry in json.loads(info_json(AVAILABLE_PROFILES))["AvailableProfiles"]]


_PLAIN_PROFILE_KEYS = frozenset({"Name", "Description", "StateFormatLevel"})
"""Keys a non-custom profile may carry; Algorithms/Commands/Attributes modify a profile."""


def _profile_document(option: ProfileOption) -> str:
    if option.json_text is not None:
        return option.json_text
    try:
        if option.path is not None:
            return option.path.read_text()
        assert option.fd is not None
        with os.fdopen(option.fd, "r", closefd=True) as stream:
            return stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        where = option.path if option.path is not None else f"fd {option.fd}"
        raise CliOptionError(f"--profile: cannot read {where}: {exc}") from None


def check_profile(option: ProfileOption, available: list[str]) -> str:
    """The profile name to run with; CliOptionError for a profile we cannot honour.

    Only the built-in profile(s) can be selected, unmodified: changing the
    enabled algorithms/commands (libtpms' ``custom`` profile) is not implemented.
    """
    if option.remove_disabled is not None:
        raise CliOptionError(
            f"--profile: remove-disabled={option.remove_disabled.value} needs the modifiable 'custom' profile, "
            f"which this TPM does not have (profiles: {', '.join(available)})"
        )
    name = option.name
    if name is None:
        text = _profile_document(option)
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliOptionError(f"--profile: not a JSON profile ({exc.msg} at offset {exc.pos})") from None
        if not isinstance(document, dict) or not isinstance(document.get("Name"), str):
            raise CliOptionError('--profile: a JSON profile must be an object with a "Name" string')
        extra = sorted(set(document) - _PLAIN_PROFILE_KEYS)
        if extra:
            raise CliOptionError(
                f"--profile: {', '.join(extra)} would modify the profile; only unmodified built-in profiles "
                f"({', '.join(available)}) are supported"
            )
        name = document["Name"]
    if name not in available:
        raise CliOptionError(f"--profile: unknown profile {name!r} (available: {', '.join(available)})")
    return name
