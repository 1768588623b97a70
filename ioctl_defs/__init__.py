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

import importlib
from typing import Any

#: public name -> (defining module, attribute; None: the module itself).  Loaded when first
#: used (PEP 562): ``from ioctl_defs import PtmResult`` (the state layer's errors, imported
#: while the daemon parses its options) loads ``.results`` and not every struct layout.
_DEFINED_IN: dict[str, tuple[str, str | None]] = {
    "ioc": (".ioc", None),
    "I386": (".abi", "I386"),
    "KNOWN_ABIS": (".abi", "KNOWN_ABIS"),
    "X86_64": (".abi", "X86_64"),
    "Abi": (".abi", "Abi"),
    "compat_abi": (".abi", "compat_abi"),
    "host_abi": (".abi", "host_abi"),
    "resolve_abi": (".abi", "resolve_abi"),
    "COMMANDS": (".commands", "COMMANDS"),
    "PTM_GET_INFO_I386": (".commands", "PTM_GET_INFO_I386"),
    "CommandSpec": (".commands", "CommandSpec"),
    "IoctlMatch": (".commands", "IoctlMatch"),
    "PtmIoctl": (".commands", "PtmIoctl"),
    "by_cmd": (".commands", "by_cmd"),
    "by_ioctl": (".commands", "by_ioctl"),
    "by_name": (".commands", "by_name"),
    "PTM_GETINFO_SIZE": (".constants", "PTM_GETINFO_SIZE"),
    "PTM_HDATA_MAX": (".constants", "PTM_HDATA_MAX"),
    "PTM_IOC_MAGIC": (".constants", "PTM_IOC_MAGIC"),
    "PTM_STATE_BLOB_SIZE": (".constants", "PTM_STATE_BLOB_SIZE"),
    "PtmBlobType": (".constants", "PtmBlobType"),
    "PtmCap": (".constants", "PtmCap"),
    "PtmCmd": (".constants", "PtmCmd"),
    "PtmConfigFlag": (".constants", "PtmConfigFlag"),
    "PtmInitFlag": (".constants", "PtmInitFlag"),
    "PtmStateFlag": (".constants", "PtmStateFlag"),
    "SwtpmInfo": (".constants", "SwtpmInfo"),
    "MalformedMessage": (".errors", "MalformedMessage"),
    "PayloadTooLarge": (".errors", "PayloadTooLarge"),
    "UnknownCommand": (".errors", "UnknownCommand"),
    "SOCKET_CMD_SIZE": (".framing", "SOCKET_CMD_SIZE"),
    "pack_socket_command": (".framing", "pack_socket_command"),
    "split_socket_command": (".framing", "split_socket_command"),
    "IocDir": (".ioc", "IocDir"),
    "IocFields": (".ioc", "IocFields"),
    "IocLayout": (".ioc", "IocLayout"),
    "CStruct": (".part", "CStruct"),
    "Part": (".part", "Part"),
    "ResultPart": (".part", "ResultPart"),
    "TPM_NON_FATAL": (".results", "TPM_NON_FATAL"),
    "PtmResult": (".results", "PtmResult"),
    "is_non_fatal": (".results", "is_non_fatal"),
    "result_name": (".results", "result_name"),
    "STRUCTS": (".structs", "STRUCTS"),
    "PtmCapNRequest": (".structs", "PtmCapNRequest"),
    "PtmCapNResponse": (".structs", "PtmCapNResponse"),
    "PtmCapRequest": (".structs", "PtmCapRequest"),
    "PtmCapResponse": (".structs", "PtmCapResponse"),
    "PtmEstRequest": (".structs", "PtmEstRequest"),
    "PtmEstResponse": (".structs", "PtmEstResponse"),
    "PtmGetConfigRequest": (".structs", "PtmGetConfigRequest"),
    "PtmGetConfigResponse": (".structs", "PtmGetConfigResponse"),
    "PtmGetInfoRequest": (".structs", "PtmGetInfoRequest"),
    "PtmGetInfoResponse": (".structs", "PtmGetInfoResponse"),
    "PtmGetStateRequest": (".structs", "PtmGetStateRequest"),
    "PtmGetStateResponse": (".structs", "PtmGetStateResponse"),
    "PtmHdataRequest": (".structs", "PtmHdataRequest"),
    "PtmHdataResponse": (".structs", "PtmHdataResponse"),
    "PtmInitRequest": (".structs", "PtmInitRequest"),
    "PtmInitResponse": (".structs", "PtmInitResponse"),
    "PtmLockStorageRequest": (".structs", "PtmLockStorageRequest"),
    "PtmLockStorageResponse": (".structs", "PtmLockStorageResponse"),
    "PtmLocRequest": (".structs", "PtmLocRequest"),
    "PtmLocResponse": (".structs", "PtmLocResponse"),
    "PtmResetEstRequest": (".structs", "PtmResetEstRequest"),
    "PtmResetEstResponse": (".structs", "PtmResetEstResponse"),
    "PtmResRequest": (".structs", "PtmResRequest"),
    "PtmResResponse": (".structs", "PtmResResponse"),
    "PtmSetBufferSizeRequest": (".structs", "PtmSetBufferSizeRequest"),
    "PtmSetBufferSizeResponse": (".structs", "PtmSetBufferSizeResponse"),
    "PtmSetStateRequest": (".structs", "PtmSetStateRequest"),
    "PtmSetStateResponse": (".structs", "PtmSetStateResponse"),
    "ptm_cap": (".structs", "ptm_cap"),
    "ptm_cap_n": (".structs", "ptm_cap_n"),
    "ptm_est": (".structs", "ptm_est"),
    "ptm_getconfig": (".structs", "ptm_getconfig"),
    "ptm_getinfo": (".structs", "ptm_getinfo"),
    "ptm_getstate": (".structs", "ptm_getstate"),
    "ptm_hdata": (".structs", "ptm_hdata"),
    "ptm_init": (".structs", "ptm_init"),
    "ptm_loc": (".structs", "ptm_loc"),
    "ptm_lockstorage": (".structs", "ptm_lockstorage"),
    "ptm_res": (".structs", "ptm_res"),
    "ptm_reset_est": (".structs", "ptm_reset_est"),
    "ptm_setbuffersize": (".structs", "ptm_setbuffersize"),
    "ptm_setstate": (".structs", "ptm_setstate"),
}

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


def __getattr__(name: str) -> Any:
    if name not in _DEFINED_IN:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _DEFINED_IN[name]
    module = importlib.import_module(module_name, __name__)
    return module if attribute is None else getattr(module, attribute)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
