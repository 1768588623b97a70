"""Persistence of the TPM state: swtpm-compatible files, blobs, keys and locking.

Modules:

* :mod:`.errors`      -- StateError (carries the ptm result code), option errors
* :mod:`.kinds`       -- StateKind (permanent/volatile/savestate) and file names
* :mod:`.atomic`      -- crash-safe file replacement
* :mod:`.lock`        -- the ``<dir>/.lock`` POSIX record lock
* :mod:`.blobformat`  -- swtpm's header + TLV container
* :mod:`.crypto`      -- AES-GCM sealing of state and migration data, StateKey
* :mod:`.keyoption`   -- ``--key`` / ``--migration-key`` parsing and key loading
* :mod:`.tpmstate`    -- ``--tpmstate`` parsing and the ``TPM_PATH`` fallback
* :mod:`.optionstring`-- swtpm's ``key=value,...`` option syntax
* :mod:`.store`       -- DirectoryStore, tying it all together
"""

from .crypto import StateKey
from .errors import (
    KeyOptionError,
    OptionError,
    PtmResult,
    StateError,
    StorageLockError,
    TpmStateOptionError,
)
from .keyoption import KeyOption, load_key_option, parse_key_option
from .kinds import StateKind
from .lock import StorageLock
from .store import DirectoryStore, PtmConfigFlag
from .tpmstate import TpmStateOption, parse_tpmstate_option, resolve_tpmstate

__all__ = [
    "DirectoryStore",
    "KeyOption",
    "KeyOptionError",
    "OptionError",
    "PtmConfigFlag",
    "PtmResult",
    "StateError",
    "StateKey",
    "StateKind",
    "StorageLock",
    "StorageLockError",
    "TpmStateOption",
    "TpmStateOptionError",
    "load_key_option",
    "parse_key_option",
    "parse_tpmstate_option",
    "resolve_tpmstate",
]
