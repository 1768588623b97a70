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

from ..lazy_exports import lazy_exports

#: public name -> the module that defines it.  Loaded when first used (PEP 562), so that
#: the daemon's option parsing (``.optionstring``, ``.tpmstate``, ``.errors``) does not
#: import ``cryptography`` through ``.crypto`` before its sockets are listening.
_DEFINED_IN = {
    "DirectoryStore": ".store",
    "KeyOption": ".keyoption",
    "KeyOptionError": ".errors",
    "OptionError": ".errors",
    "PtmConfigFlag": ".store",
    "PtmResult": ".errors",
    "StateError": ".errors",
    "StateKey": ".crypto",
    "StateKind": ".kinds",
    "StorageLock": ".lock",
    "StorageLockError": ".errors",
    "TpmStateOption": ".tpmstate",
    "TpmStateOptionError": ".errors",
    "load_key_option": ".keyoption",
    "parse_key_option": ".keyoption",
    "parse_tpmstate_option": ".tpmstate",
    "resolve_tpmstate": ".tpmstate",
}

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


__getattr__, __dir__ = lazy_exports(__name__, _DEFINED_IN, __all__)
