"""The tpm_ioctl.h contract (swtpm's control protocol) as Python.

Single source of truth for the CUSE device's ioctls, the socket control
channel and the ``vtpm-ioctl`` client: ioctl numbers, CMD codes, struct
layouts for both transports, flag values and result codes.

Typical use::

    spec, abi = by_ioctl(number)                      # CUSE server
    req = spec.request.unpack_ioctl(in_buf, abi)      # e.g. a PtmInitRequest
    out = PtmInitResponse(tpm_result=0).pack_ioctl(abi)

    cmd, body = split_socket_command(message)         # socket server
    spec = by_cmd(cmd)
    req = spec.socket_request.unpack_socket(body)

    wire = by_name("PTM_INIT").pack_socket_request(PtmInitRequest(1))  # client
"""

from . import ioc
from .abi import I386, KNOWN_ABIS, X86_64, Abi, compat_abi, host_abi, resolve_abi
from .commands import (
    COMMANDS,
    PTM_GET_INFO_I386,
    CommandSpec,
    IoctlMatch,
    PtmIoctl,
    by_cmd,
    by_ioctl,
    by_name,
)
from .constants import (
    PTM_GETINFO_SIZE,
    PTM_HDATA_MAX,
    PTM_IOC_MAGIC,
    PTM_STATE_BLOB_SIZE,
    PtmBlobType,
    PtmCap,
    PtmCmd,
    PtmConfigFlag,
    PtmInitFlag,
    PtmStateFlag,
    SwtpmInfo,
)
from .errors import MalformedMessage, PayloadTooLarge, UnknownCommand
from .framing import SOCKET_CMD_SIZE, pack_socket_command, split_socket_command
from .ioc import IocDir, IocFields, IocLayout
from .part import CStruct, Part, ResultPart
from .results import TPM_NON_FATAL, PtmResult, is_non_fatal, result_name
from .structs import (
    STRUCTS,
    PtmCapNRequest,
    PtmCapNResponse,
    PtmCapRequest,
    PtmCapResponse,
    PtmEstRequest,
    PtmEstResponse,
    PtmGetConfigRequest,
    PtmGetConfigResponse,
    PtmGetInfoRequest,
    PtmGetInfoResponse,
    PtmGetStateRequest,
    PtmGetStateResponse,
    PtmHdataRequest,
    PtmHdataResponse,
    PtmInitRequest,
    PtmInitResponse,
    PtmLockStorageRequest,
    PtmLockStorageResponse,
    PtmLocRequest,
    PtmLocResponse,
    PtmResetEstRequest,
    PtmResetEstResponse,
    PtmResRequest,
    PtmResResponse,
    PtmSetBufferSizeRequest,
    PtmSetBufferSizeResponse,
    PtmSetStateRequest,
    PtmSetStateResponse,
    ptm_cap,
    ptm_cap_n,
    ptm_est,
    ptm_getconfig,
    ptm_getinfo,
    ptm_getstate,
    ptm_hdata,
    ptm_init,
    ptm_loc,
    ptm_lockstorage,
    ptm_res,
    ptm_reset_est,
    ptm_setbuffersize,
    ptm_setstate,
)

__all__ = [
    # ioctl number encoding
    "ioc",
    "IocDir",
    "IocFields",
    "IocLayout",
    # ABIs
    "Abi",
    "X86_64",
    "I386",
    "KNOWN_ABIS",
    "host_abi",
    "compat_abi",
    "resolve_abi",
    # command table
    "COMMANDS",
    "CommandSpec",
    "IoctlMatch",
    "PtmIoctl",
    "PTM_GET_INFO_I386",
    "by_cmd",
    "by_ioctl",
    "by_name",
    # constants
    "PTM_IOC_MAGIC",
    "PTM_STATE_BLOB_SIZE",
    "PTM_GETINFO_SIZE",
    "PTM_HDATA_MAX",
    "PtmCap",
    "PtmCmd",
    "PtmInitFlag",
    "PtmBlobType",
    "PtmStateFlag",
    "PtmConfigFlag",
    "SwtpmInfo",
    "PtmResult",
    "TPM_NON_FATAL",
    "is_non_fatal",
    "result_name",
    # errors
    "MalformedMessage",
    "PayloadTooLarge",
    "UnknownCommand",
    # socket framing
    "SOCKET_CMD_SIZE",
    "pack_socket_command",
    "split_socket_command",
    # structs
    "CStruct",
    "Part",
    "ResultPart",
    "STRUCTS",
    "ptm_res",
    "ptm_cap",
    "ptm_cap_n",
    "ptm_est",
    "ptm_reset_est",
    "ptm_init",
    "ptm_loc",
    "ptm_hdata",
    "ptm_getstate",
    "ptm_setstate",
    "ptm_getconfig",
    "ptm_setbuffersize",
    "ptm_getinfo",
    "ptm_lockstorage",
    "PtmResRequest",
    "PtmResResponse",
    "PtmCapRequest",
    "PtmCapResponse",
    "PtmCapNRequest",
    "PtmCapNResponse",
    "PtmEstRequest",
    "PtmEstResponse",
    "PtmResetEstRequest",
    "PtmResetEstResponse",
    "PtmInitRequest",
    "PtmInitResponse",
    "PtmLocRequest",
    "PtmLocResponse",
    "PtmHdataRequest",
    "PtmHdataResponse",
    "PtmGetStateRequest",
    "PtmGetStateResponse",
    "PtmSetStateRequest",
    "PtmSetStateResponse",
    "PtmGetConfigRequest",
    "PtmGetConfigResponse",
    "PtmSetBufferSizeRequest",
    "PtmSetBufferSizeResponse",
    "PtmGetInfoRequest",
    "PtmGetInfoResponse",
    "PtmLockStorageRequest",
    "PtmLockStorageResponse",
]
