"""Numeric constants of tpm_ioctl.h: buffer sizes, flag bits, CMD codes.

Members carry the C names (as :mod:`signal` and :mod:`socket` do) so that the
spec, the C header and log messages can be grepped for the same identifier.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import Final

__all__ = [
    "PTM_GETINFO_SIZE",
    "PTM_HDATA_MAX",
    "PTM_IOC_MAGIC",
    "PTM_STATE_BLOB_SIZE",
    "PtmBlobType",
    "PtmCap",
    "PtmCmd",
    "PtmConfigFlag",
    "PtmInitFlag",
    "PtmStateFlag",
    "SwtpmInfo",
]

PTM_IOC_MAGIC: Final = ord("P")
"""The ``_IOC`` type byte of every PTM ioctl (0x50)."""

PTM_STATE_BLOB_SIZE: Final = 3 * 1024
"""Data capacity of ``ptm_getstate``/``ptm_setstate`` on the ioctl path (a chunk)."""

PTM_GETINFO_SIZE: Final = 3 * 1024
"""Capacity of ``ptm_getinfo.resp.buffer`` on the ioctl path."""

PTM_HDATA_MAX: Final = 4096
"""Capacity of ``ptm_hdata.req.data`` on the ioctl path (socket requests may be longer)."""


class PtmCap(IntFlag):
    """Capability bits reported by GET_CAPABILITY."""

    PTM_CAP_INIT = 1 << 0
    PTM_CAP_SHUTDOWN = 1 << 1
    PTM_CAP_GET_TPMESTABLISHED = 1 << 2
    PTM_CAP_SET_LOCALITY = 1 << 3
    PTM_CAP_HASHING = 1 << 4
    PTM_CAP_CANCEL_TPM_CMD = 1 << 5
    PTM_CAP_STORE_VOLATILE = 1 << 6
    PTM_CAP_RESET_TPMESTABLISHED = 1 << 7
    PTM_CAP_GET_STATEBLOB = 1 << 8
    PTM_CAP_SET_STATEBLOB = 1 << 9
    PTM_CAP_STOP = 1 << 10
    PTM_CAP_GET_CONFIG = 1 << 11
    PTM_CAP_SET_DATAFD = 1 << 12
    PTM_CAP_SET_BUFFERSIZE = 1 << 13
    PTM_CAP_GET_INFO = 1 << 14
    PTM_CAP_SEND_COMMAND_HEADER = 1 << 15
    PTM_CAP_LOCK_STORAGE = 1 << 16


class PtmInitFlag(IntFlag):
    """``ptm_init.req.init_flags``."""

    PTM_INIT_FLAG_DELETE_VOLATILE = 1 << 0
    """Delete the volatile state file after reading it."""


class PtmBlobType(IntEnum):
    """``type`` of GET/SET_STATEBLOB: which of the three state blobs."""

    PTM_BLOB_TYPE_PERMANENT = 1
    PTM_BLOB_TYPE_VOLATILE = 2
    PTM_BLOB_TYPE_SAVESTATE = 3


class PtmStateFlag(IntFlag):
    """``state_flags`` of GET/SET_STATEBLOB."""

    PTM_STATE_FLAG_DECRYPTED = 1
    """GET input: return the blob decrypted."""
    PTM_STATE_FLAG_ENCRYPTED = 2
    """GET output / SET input: the blob is encrypted."""


class PtmConfigFlag(IntFlag):
    """``ptm_getconfig.resp.flags``."""

    PTM_CONFIG_FLAG_FILE_KEY = 0x1
    PTM_CONFIG_FLAG_MIGRATION_KEY = 0x2


class SwtpmInfo(IntFlag):
    """``ptm_getinfo.req.flags`` (a u64): which JSON sections to return."""

    SWTPM_INFO_TPMSPECIFICATION = 1 << 0
    SWTPM_INFO_TPMATTRIBUTES = 1 << 1
    SWTPM_INFO_TPMFEATURES = 1 << 2
    SWTPM_INFO_RUNTIME_ALGORITHMS = 1 << 3
    SWTPM_INFO_RUNTIME_COMMANDS = 1 << 4
    SWTPM_INFO_ACTIVE_PROFILE = 1 << 5
    SWTPM_INFO_AVAILABLE_PROFILES = 1 << 6
    SWTPM_INFO_RUNTIME_ATTRIBUTES = 1 << 7


class PtmCmd(IntEnum):
    """Socket control-channel command codes (always ioctl nr + 1)."""

    CMD_GET_CAPABILITY = 0x01
    CMD_INIT = 0x02
    CMD_SHUTDOWN = 0x03
    CMD_GET_TPMESTABLISHED = 0x04
    CMD_SET_LOCALITY = 0x05
    CMD_HASH_START = 0x06
    CMD_HASH_DATA = 0x07
    CMD_HASH_END = 0x08
    CMD_CANCEL_TPM_CMD = 0x09
    CMD_STORE_VOLATILE = 0x0A
    CMD_RESET_TPMESTABLISHED = 0x0B
    CMD_GET_STATEBLOB = 0x0C
    CMD_SET_STATEBLOB = 0x0D
    CMD_STOP = 0x0E
    CMD_GET_CONFIG = 0x0F
    CMD_SET_DATAFD = 0x10
    CMD_SET_BUFFERSIZE = 0x11
    CMD_GET_INFO = 0x12
    CMD_LOCK_STORAGE = 0x13
