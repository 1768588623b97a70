"""The tpm_ioctl.h structs, one request and one response dataclass each.

Field names are the C member names so that the spec tables can be checked
against the code line by line.  ``length`` members are not constructor
arguments: they are always ``len(data)`` (see :class:`~ioctl_defs.part.PayloadPart`).

The lower-case module attributes (``ptm_init`` ...) are the C structs as
:class:`~ioctl_defs.part.CStruct` values; ``STRUCTS`` maps C names to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .constants import PTM_GETINFO_SIZE, PTM_HDATA_MAX, PTM_STATE_BLOB_SIZE
from .layout import Layout, Length, Pad, Payload, u8, u32, u64
from .part import CStruct, Part, PayloadPart, ResultPart
from .results import PtmResult

__all__ = [
    "STRUCTS",
    "PtmCapNRequest",
    "PtmCapNResponse",
    "PtmCapRequest",
    "PtmCapResponse",
    "PtmEstRequest",
    "PtmEstResponse",
    "PtmGetConfigRequest",
    "PtmGetConfigResponse",
    "PtmGetInfoRequest",
    "PtmGetInfoResponse",
    "PtmGetStateRequest",
    "PtmGetStateResponse",
    "PtmHdataRequest",
    "PtmHdataResponse",
    "PtmInitRequest",
    "PtmInitResponse",
    "PtmLocRequest",
    "PtmLocResponse",
    "PtmLockStorageRequest",
    "PtmLockStorageResponse",
    "PtmResRequest",
    "PtmResResponse",
    "PtmResetEstRequest",
    "PtmResetEstResponse",
    "PtmSetBufferSizeRequest",
    "PtmSetBufferSizeResponse",
    "PtmSetStateRequest",
    "PtmSetStateResponse",
    "ptm_cap",
    "ptm_cap_n",
    "ptm_est",
    "ptm_getconfig",
    "ptm_getinfo",
    "ptm_getstate",
    "ptm_hdata",
    "ptm_init",
    "ptm_loc",
    "ptm_lockstorage",
    "ptm_res",
    "ptm_reset_est",
    "ptm_setbuffersize",
    "ptm_setstate",
]

_NOTHING = Layout()
_RESULT_ONLY = Layout(u32("tpm_result"))


# -- ptm_res: plain uint32_t result (SHUTDOWN, HASH_START/END, CANCEL, STORE_VOLATILE, STOP, SET_DATAFD)


@dataclass(frozen=True)
class PtmResRequest(Part):
    """No input: these commands only act."""

    LAYOUT = _NOTHING


@dataclass(frozen=True)
class PtmResResponse(ResultPart):
    """Just the result; also the generic early-error reply on the socket."""

    LAYOUT = _RESULT_ONLY


# -- ptm_cap: bare uint64_t, CUSE only (no result field)


@dataclass(frozen=True)
class PtmCapRequest(Part):
    LAYOUT = _NOTHING


@dataclass(frozen=True)
class PtmCapResponse(Part):
    """PTM_GET_CAPABILITY on the device: the capability bits as a u64, nothing else."""

    LAYOUT = Layout(u64("caps"))
    caps: int = 0


# -- ptm_cap_n: the socket's GET_CAPABILITY answer (a big-endian u64 to old readers)


@dataclass(frozen=True)
class PtmCapNRequest(Part):
    LAYOUT = _NOTHING


@dataclass(frozen=True)
class PtmCapNResponse(ResultPart):
    """``tpm_result`` is always 0; ``caps`` holds :class:`~ioctl_defs.PtmCap` bits."""

    LAYOUT = Layout(u32("tpm_result"), u32("caps"))
    caps: int = 0


# -- ptm_est: GET_TPMESTABLISHED


@dataclass(frozen=True)
class PtmEstRequest(Part):
    LAYOUT = _NOTHING


@dataclass(frozen=True)
class PtmEstResponse(ResultPart):
    LAYOUT = Layout(u32("tpm_result"), u8("bit"), Pad(3))
    bit: int = 0


# -- ptm_reset_est: RESET_TPMESTABLISHED


@dataclass(frozen=True)
class PtmResetEstRequest(Part):
    """``loc`` is the first body byte; QEMU pads it to 4 bytes, so extra bytes are accepted."""

    LAYOUT = Layout(u8("loc"))
    SOCKET_EXACT = False
    loc: int = 0


@dataclass(frozen=True)
class PtmResetEstResponse(ResultPart):
    LAYOUT = _RESULT_ONLY


# -- ptm_init: INIT


@dataclass(frozen=True)
class PtmInitRequest(Part):
    """``init_flags``: :class:`~ioctl_defs.PtmInitFlag` bits.  Trailing socket bytes are
    ignored, as for every fixed-size body (swtpm refuses them for INIT alone)."""

    LAYOUT = Layout(u32("init_flags"))
    SOCKET_EXACT = False
    init_flags: int = 0


@dataclass(frozen=True)
class PtmInitResponse(ResultPart):
    LAYOUT = _RESULT_ONLY


# -- ptm_loc: SET_LOCALITY


@dataclass(frozen=True)
class PtmLocRequest(Part):
    """Like :class:`PtmResetEstRequest`: one byte, trailing padding tolerated."""

    LAYOUT = Layout(u8("loc"))
    SOCKET_EXACT = False
    loc: int = 0


@dataclass(frozen=True)
class PtmLocResponse(ResultPart):
    LAYOUT = _RESULT_ONLY


# -- ptm_hdata: HASH_DATA


@dataclass(frozen=True)
class PtmHdataRequest(PayloadPart, Part):
    """Data to hash: at most 4096 bytes per ioctl; unbounded (streamed) on the socket."""

    LAYOUT = Layout(Length(), Payload("data", PTM_HDATA_MAX))
    data: bytes = b""


@dataclass(frozen=True)
class PtmHdataResponse(ResultPart):
    LAYOUT = _RESULT_ONLY


# -- ptm_getstate: GET_STATEBLOB


@dataclass(frozen=True)
class PtmGetStateRequest(Part):
    """``type``: :class:`~ioctl_defs.PtmBlobType`; ``offset`` into the blob."""

    LAYOUT = Layout(u32("state_flags"), u32("type"), u32("offset"))
    SOCKET_EXACT = False
    state_flags: int = 0
    type: int = 0
    offset: int = 0


@dataclass(frozen=True)
class PtmGetStateResponse(PayloadPart, ResultPart):
    """One chunk (ioctl, <= 3072 bytes) or the whole rest of the blob (socket).

    ``totlength`` is the blob size (ioctl) or equals ``length`` (socket).
    """

    LAYOUT = Layout(
        u32("tpm_result"),
        u32("state_flags"),
        u32("totlength"),
        Length(),
        Payload("data", PTM_STATE_BLOB_SIZE),
    )
    state_flags: int = 0
    totlength: int = 0
    data: bytes = b""

    _EARLY_ERRORS: ClassVar[frozenset[int]] = frozenset({PtmResult.TPM_BAD_ORDINAL, PtmResult.TPM_BAD_PARAMETER})

    @classmethod
    def socket_error_size(cls, result: int) -> int:
        """swtpm rejects bad input / a stopped TPM with 4 bytes before the blob
        handler runs; failures inside the handler still send the 16-byte header."""
        return 4 if result in cls._EARLY_ERRORS else cls.LAYOUT.header_size


# -- ptm_setstate: SET_STATEBLOB


@dataclass(frozen=True)
class PtmSetStateRequest(PayloadPart, Part):
    """A chunk (ioctl: exactly 3072 means "more follows") or the whole blob (socket)."""

    LAYOUT = Layout(u32("state_flags"), u32("type"), Length(), Payload("data", PTM_STATE_BLOB_SIZE))
    state_flags: int = 0
    type: int = 0
    data: bytes = b""


@dataclass(frozen=True)
class PtmSetStateResponse(ResultPart):
    LAYOUT = _RESULT_ONLY


# -- ptm_getconfig: GET_CONFIG


@dataclass(frozen=True)
class PtmGetConfigRequest(Part):
    LAYOUT = _NOTHING


@dataclass(frozen=True)
class PtmGetConfigResponse(ResultPart):
    """``flags``: :class:`~ioctl_defs.PtmConfigFlag` bits."""

    LAYOUT = Layout(u32("tpm_result"), u32("flags"))
    flags: int = 0


# -- ptm_setbuffersize: SET_BUFFERSIZE


@dataclass(frozen=True)
class PtmSetBufferSizeRequest(Part):
    """``buffersize`` 0 only queries."""

    LAYOUT = Layout(u32("buffersize"))
    SOCKET_EXACT = False
    buffersize: int = 0


@dataclass(frozen=True)
class PtmSetBufferSizeResponse(ResultPart):
    LAYOUT = Layout(u32("tpm_result"), u32("buffersize"), u32("minsize"), u32("maxsize"))
    buffersize: int = 0
    minsize: int = 0
    maxsize: int = 0


# -- ptm_getinfo: GET_INFO (the only struct whose size depends on the ABI)


@dataclass(frozen=True)
class PtmGetInfoRequest(Part):
    """``flags``: :class:`~ioctl_defs.SwtpmInfo` bits (a u64, big-endian on the socket)."""

    LAYOUT = Layout(u64("flags"), u32("offset"), Pad(4))
    SOCKET_EXACT = False
    flags: int = 0
    offset: int = 0


@dataclass(frozen=True)
class PtmGetInfoResponse(PayloadPart, ResultPart):
    """A window of the JSON text; ``totlength`` counts the whole string plus its NUL."""

    LAYOUT = Layout(u32("tpm_result"), u32("totlength"), Length(), Payload("buffer", PTM_GETINFO_SIZE))
    totlength: int = 0
    buffer: bytes = b""


# -- ptm_lockstorage: LOCK_STORAGE


@dataclass(frozen=True)
class PtmLockStorageRequest(Part):
    LAYOUT = Layout(u32("retries"))
    SOCKET_EXACT = False
    retries: int = 0


@dataclass(frozen=True)
class PtmLockStorageResponse(ResultPart):
    LAYOUT = _RESULT_ONLY


ptm_res = CStruct("ptm_res", PtmResRequest, PtmResResponse)
ptm_cap = CStruct("ptm_cap", PtmCapRequest, PtmCapResponse)
ptm_cap_n = CStruct("ptm_cap_n", PtmCapNRequest, PtmCapNResponse)
ptm_est = CStruct("ptm_est", PtmEstRequest, PtmEstResponse)
ptm_reset_est = CStruct("ptm_reset_est", PtmResetEstRequest, PtmResetEstResponse)
ptm_init = CStruct("ptm_init", PtmInitRequest, PtmInitResponse)
ptm_loc = CStruct("ptm_loc", PtmLocRequest, PtmLocResponse)
ptm_hdata = CStruct("ptm_hdata", PtmHdataRequest, PtmHdataResponse)
ptm_getstate = CStruct("ptm_getstate", PtmGetStateRequest, PtmGetStateResponse)
ptm_setstate = CStruct("ptm_setstate", PtmSetStateRequest, PtmSetStateResponse)
ptm_getconfig = CStruct("ptm_getconfig", PtmGetConfigRequest, PtmGetConfigResponse)
ptm_setbuffersize = CStruct("ptm_setbuffersize", PtmSetBufferSizeRequest, PtmSetBufferSizeResponse)
ptm_getinfo = CStruct("ptm_getinfo", PtmGetInfoRequest, PtmGetInfoResponse)
ptm_lockstorage = CStruct("ptm_lockstorage", PtmLockStorageRequest, PtmLockStorageResponse)

STRUCTS: dict[str, CStruct] = {
    s.name: s
    for s in (
        ptm_res,
        ptm_cap,
        ptm_cap_n,
        ptm_est,
        ptm_reset_est,
        ptm_init,
        ptm_loc,
        ptm_hdata,
        ptm_getstate,
        ptm_setstate,
        ptm_getconfig,
        ptm_setbuffersize,
        ptm_getinfo,
        ptm_lockstorage,
    )
}
