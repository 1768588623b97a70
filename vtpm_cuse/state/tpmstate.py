"""The ``--tpmstate`` option value and its ``TPM_PATH`` fallback (spec §2.12, §5.3).

Accepted::

    dir=<dir>|backend-uri=dir://<dir>[,mode=0...][,lock[=true|false]][,backup][,fsync]

* ``mode`` -- permission bits of the state files. Default **0600** (swtpm's
  default is 0640; the files hold TPM secrets, so we keep them owner-only).
  The mode must keep owner read and write, or the daemon could not use its
  own files.
* ``lock`` -- take ``<dir>/.lock`` (default on, as swtpm does for dir://).
* ``backup`` -- keep the previous permanent state in ``tpm2-00.permall.bak``
  and fall back to it when the current file is damaged.
* ``fsync`` -- accepted for swtpm compatibility; state files are *always*
  fsync'ed here (file and directory), the flag changes nothing.

``backend-uri=file://<path>`` selects swtpm's single-file "linear" backend
(:mod:`.linear`): all state in one regular file or block device; there
``lock`` defaults to off (as in swtpm) and ``backup`` is refused (swtpm allows
it only for directories). Other URI schemes are refused as unknown.
Without ``--tpmstate`` the ``TPM_PATH`` environment variable names the state
directory, as in swtpm.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .atomic import DEFAULT_FILE_MODE
from .errors import TpmStateOptionError
from .optionstring import parse_bool, parse_mode, parse_option_string

__all__ = [
    "TPM_PATH_ENV",
    "TpmStateOption",
    "parse_tpmstate_option",
    "tpmstate_from_environment",
    "resolve_tpmstate",
]

TPM_PATH_ENV = "TPM_PATH"
_OPTION = "--tpmstate"
_NAMES = ("dir", "backend-uri", "mode", "lock", "backup", "fsync")
_DIR_SCHEME = "dir://"
_FILE_SCHEME = "file://"
_OWNER_RW = 0o600


@dataclass(frozen=True)
class TpmStateOption:
    """Where and how to keep the TPM state."""

    directory: Path
    mode: int = DEFAULT_FILE_MODE
    lock: bool = True
    backup: bool = False
    #: recorded for completeness; files are always fsync'ed
    fsync: bool = False
    #: ``backend-uri=file://``: the single state file (``directory`` is its parent)
    linear_file: Path | None = None


def _location_from_uri(uri: str) -> tuple[str, bool]:
    """``(path, is_linear_file)`` of a ``backend-uri=``."""
    if uri.startswith(_DIR_SCHEME):
        return uri[len(_DIR_SCHEME) :], False
    if uri.startswith(_FILE_SCHEME):
        return uri[len(_FILE_SCHEME) :], True
    raise TpmStateOptionError(f"{_OPTION}: backend-uri={uri!r} has an unknown scheme (expected dir:// or file://)")


def parse_tpmstate_option(value: str) -> TpmStateOption:
    """Parse a ``--tpmstate`` value. The directory is not checked for existence
    here; that happens when the TPM is initialised, as in swtpm."""
    items = parse_option_string(value, _NAMES, option=_OPTION, error=TpmStateOptionError)

    linear = False
    if "dir" in items and "backend-uri" in items:
        raise TpmStateOptionError(f"{_OPTION}: give dir= or backend-uri=, not both")
    if "dir" in items:
        directory = items["dir"]
        if directory is None:
            raise TpmStateOptionError(f"{_OPTION}: dir needs a value")
    elif "backend-uri" in items:
        uri = items["backend-uri"]
        if uri is None:
            raise TpmStateOptionError(f"{_OPTION}: backend-uri needs a value")
        directory, linear = _location_from_uri(uri)
    else:
        raise TpmStateOptionError(f"{_OPTION}: dir= or backend-uri= is required")
    if not directory:
        raise TpmStateOptionError(f"{_OPTION}: the state directory name is empty")

    mode = DEFAULT_FILE_MODE
    if "mode" in items:
        mode = parse_mode(items["mode"], name="mode", option=_OPTION, error=TpmStateOptionError)
        if mode & _OWNER_RW != _OWNER_RW:
            raise TpmStateOptionError(
                f"{_OPTION}: mode={items['mode']} lacks owner read/write; the TPM could not use its own state files"
            )

    def flag(name: str, default: bool) -> bool:
        if name not in items:
            return default
        return parse_bool(items[name], name=name, option=_OPTION, error=TpmStateOptionError)

    if linear and flag("backup", False):
        raise TpmStateOptionError(f"{_OPTION}: backup is only supported by the directory backend, not file://")
    return TpmStateOption(
        directory=Path(directory).parent if linear else Path(directory),
        mode=mode,
        lock=flag("lock", not linear),
        backup=flag("backup", False),
        fsync=flag("fsync", False),
        linear_file=Path(directory) if linear else None,
    )


def tpmstate_from_environment(environ: Mapping[str, str] | None = None) -> TpmStateOption | None:
    """The state location from ``TPM_PATH``, or None if it is unset/empty."""
    env = os.environ if environ is None else environ
    path = env.get(TPM_PATH_ENV)
    if not path:
        return None
    return TpmStateOption(directory=Path(path))


def resolve_tpmstate(value: str | None, environ: Mapping[str, str] | None = None) -> TpmStateOption:
    """``--tpmstate`` if given, else ``TPM_PATH``; neither is an error."""
    if value is not None:
        return parse_tpmstate_option(value)
    option = tpmstate_from_environment(environ)
    if option is None:
        raise TpmStateOptionError(f"no state directory: pass {_OPTION} dir=<directory> or set {TPM_PATH_ENV}")
    return option
