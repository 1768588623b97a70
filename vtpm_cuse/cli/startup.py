"""Settings every daemon mode shares, parsed before anything starts, and applied in swtpm's order.

Parsing (:func:`parse_common`) touches nothing: a bad value anywhere on the
command line is reported before a socket, device, log or state file exists.
Applying happens in three steps, each called by the mode at the point swtpm
does it:

1. :meth:`CommonSettings.enter_chroot` -- before the state is opened, so
   ``--tpmstate`` paths are inside the new root (modules are imported first:
   the new root has no Python installation);
2. :meth:`CommonSettings.drop_privileges` -- ``--runas`` once sockets/devices exist;
3. :meth:`CommonSettings.lock_down` -- ``--seccomp`` right before serving.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import vtpm_cuse
from vtpm_cuse.flags import LocalityPolicy, StartupMode, VtpmFlags
from vtpm_cuse.state.kinds import StateKind
from vtpm_cuse.state.tpmstate import resolve_tpmstate

from . import seccomp
from .modes import Mode
from .options import (
    CliOptionError,
    LogOption,
    MigrationOption,
    PcapOption,
    SeccompAction,
    SeccompOption,
    parse_chroot_option,
    parse_flags_option,
    parse_locality_option,
    parse_log_option,
    parse_migration_option,
    parse_pcap_option,
    parse_pid_option,
    parse_print_info_option,
    parse_profile_option,
    parse_seccomp_option,
)
from .process import PidFile, RunAs

__all__ = ["CommonSettings", "parse_common", "print_requested"]

log = logging.getLogger(__name__)


def print_requested(args: argparse.Namespace, mode: Mode) -> str | None:
    """The document a ``--print-*`` option asks for, or None to go on and serve."""
    if not (args.print_capabilities or args.print_profiles or args.print_info is not None or args.print_states):
        return None
    from . import info  # json and the feature tables: only for the documents

    if args.print_capabilities:
        return info.capabilities_json(mode)
    if args.print_profiles:
        return info.info_json(info.AVAILABLE_PROFILES)
    if args.print_info is not None:
        return info.info_json(parse_print_info_option(args.print_info))
    if args.print_states:
        from vtpm_cuse.state.store import DirectoryStore

        store = DirectoryStore.from_option(resolve_tpmstate(args.tpmstate))
        return info.states_json((kind, store.stored_size(kind)) for kind in StateKind)
    return None


@dataclass(frozen=True)
class CommonSettings:
    """The parsed options every mode has."""

    flags: VtpmFlags
    locality: LocalityPolicy
    seccomp: SeccompOption
    migration: MigrationOption
    log: LogOption | None
    pid_file: PidFile | None
    runas: RunAs | None
    chroot: Path | None
    profile: str | None
    """``--profile``'s (checked) name; None: the built-in default."""
    pcap: PcapOption | None = None

    def attach_capture(self, vtpm: object) -> None:
        """``--pcap``: open the capture (errors reported now, before start-up) and record ``vtpm``."""
        if self.pcap is None:
            return
        from .pcap import PcapWriter, record_commands

        try:
            writer = PcapWriter.open(self.pcap)
        except OSError as exc:
            raise CliOptionError(f"--pcap: cannot open {self.pcap.path}: {exc.strerror}") from None
        record_commands(vtpm, writer)

    def enter_chroot(self) -> None:
        """``-R/--chroot``: import what serving needs, then change the root (root only)."""
        if self.chroot is None:
            return
        _import_everything()
        try:
            os.chroot(self.chroot)
            os.chdir("/")
        except OSError as exc:
            raise CliOptionError(f"--chroot: cannot chroot to {self.chroot}: {exc.strerror}") from None
        log.info("chroot to %s", self.chroot)

    def drop_privileges(self) -> None:
        """``-r/--runas``: become the user (a no-op when already that user)."""
        if self.runas is None:
            return
        try:
            self.runas.apply()
        except OSError as exc:
            raise CliOptionError(f"--runas: cannot become {self.runas.name}: {exc.strerror}") from None
        log.info("running as %s (uid %d)", self.runas.name, self.runas.uid)

    def lock_down(self) -> None:
        """``--seccomp``: install the syscall filter for all threads (nothing for action=none)."""
        if seccomp.install_filter(self.seccomp.action):
            log.info("seccomp filter installed (action=%s)", self.seccomp.action.value)


def _import_everything() -> None:
    """Load every module of the package (and the encodings logging may need) before a chroot."""
    import importlib
    import pkgutil

    for module in pkgutil.walk_packages(vtpm_cuse.__path__, prefix="vtpm_cuse."):
        if not module.name.endswith(("__main__", ".entry")):
            importlib.import_module(module.name)
    "".encode("idna")


def _default_seccomp() -> SeccompOption:
    """swtpm filters by default (action kill); where we have no syscall table, nothing is filtered."""
    return SeccompOption(SeccompAction.KILL if seccomp.supported() else SeccompAction.NONE)


def parse_common(args: argparse.Namespace, mode: Mode, *, vtpm_proxy: bool = False) -> CommonSettings:
    """Every shared option of ``args`` as values; raises CliOptionError naming a bad one.

    ``vtpm_proxy``: swtpm's defaults for ``--vtpm-proxy`` (startup-clear unless
    --flags says otherwise, allow-set-locality) apply.
    """
    for name in ("key", "migration_key"):  # read later; a bad value is reported now
        if getattr(args, name) is not None:
            from vtpm_cuse.state.keyoption import parse_key_option  # cryptography: only with a key

            parse_key_option(getattr(args, name), "--" + name.replace("_", "-"))
    flags = parse_flags_option(args.flags) if args.flags is not None else VtpmFlags()
    locality = parse_locality_option(args.locality) if args.locality is not None else LocalityPolicy()
    if vtpm_proxy:
        if args.flags is None:
            flags = VtpmFlags(not_need_init=True, startup=StartupMode.CLEAR)
        locality = LocalityPolicy(locality.reject_locality_4, allow_set_locality=True)
    profile = None
    if args.profile is not None:
        from . import info

        profile = info.check_profile(parse_profile_option(args.profile), info.profile_names())
    try:
        runas = RunAs.lookup(args.runas) if args.runas is not None else None
    except ValueError as exc:
        raise CliOptionError(f"--runas: {exc}") from None
    return CommonSettings(
        flags=flags,
        locality=locality,
        seccomp=parse_seccomp_option(args.seccomp) if args.seccomp is not None else _default_seccomp(),
        migration=parse_migration_option(args.migration) if args.migration is not None else MigrationOption(),
        log=parse_log_option(args.log) if args.log is not None else None,
        pid_file=PidFile(parse_pid_option(args.pid)) if args.pid is not None else None,
        runas=runas,
        chroot=parse_chroot_option(args.chroot) if args.chroot is not None else None,
        profile=profile,
        pcap=parse_pcap_option(args.pcap) if args.pcap is not None else None,
    )
