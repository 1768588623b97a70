"""The PTM control operations (tpm_ioctl.h) on a :class:`~vtpm_cuse.vtpm.Vtpm`, free of framing.

Both transports -- the CUSE device (ioctls, host byte order) and the socket
control channel (``CMD_*`` messages, big endian) -- unpack their bytes into
the typed request dataclasses of :mod:`ioctl_defs`, call :func:`dispatch`, and
pack the typed response it returns.  Nothing here knows about bytes on a wire.

Usage (socket control channel)::

    from ioctl_defs import PtmCmd, by_cmd, split_socket_command
    from vtpm_cuse import control
    from vtpm_cuse.vtpm import Vtpm

    vtpm = Vtpm("/var/lib/vtpm/state")              # or Vtpm(DirectoryStore(...), ...)
    cmd, body = split_socket_command(message)
    spec = by_cmd(cmd)                                # UnknownCommand -> reply TPM_BAD_ORDINAL
    request = spec.socket_request.unpack_socket(body)
    result = await control.dispatch(vtpm, spec.cmd, request, control.Transport.SOCKET)
    await stream.send_all(result.response.pack_socket())
    if result.terminate:                              # CMD_SHUTDOWN (or a fatal lock failure)
        ...close everything and exit...

Usage (CUSE device; keep one ``CuseBlobTransfer`` per device, it carries the
chunked GET/SET_STATEBLOB state between ioctls and read()/write())::

    transfer = control.CuseBlobTransfer()
    match = by_ioctl(number)
    request = match.command.request.unpack_ioctl(in_buf, match.abi)
    result = await control.dispatch(vtpm, match.command.cmd, request,
                                    control.Transport.CUSE, transfer=transfer)
    reply = result.response.pack_ioctl(match.abi)
    # read()/write() while transfer.mode is not TransferMode.IDLE:
    data = transfer.read(size)        # GET_STATEBLOB continuation
    transfer.write(data)              # SET_STATEBLOB accumulation

``CMD_SET_DATAFD`` is a socket-transport matter and is not handled here
(:func:`is_supported` tells which commands are); dispatching it returns
TPM_BAD_ORDINAL.  The CUSE device answers unsupported ioctls with EINVAL.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from ioctl_defs import (
    PTM_GETINFO_SIZE,
    PTM_HDATA_MAX,
    PTM_STATE_BLOB_SIZE,
    Part,
    PtmBlobType,
    PtmCap,
    PtmCapNResponse,
    PtmCapResponse,
    PtmCmd,
    PtmEstResponse,
    PtmGetConfigResponse,
    PtmGetInfoRequest,
    PtmGetInfoResponse,
    PtmGetStateRequest,
    PtmGetStateResponse,
    PtmHdataRequest,
    PtmHdataResponse,
    PtmInitFlag,
    PtmInitRequest,
    PtmInitResponse,
    PtmLockStorageRequest,
    PtmLockStorageResponse,
    PtmLocRequest,
    PtmLocResponse,
    PtmResetEstRequest,
    PtmResetEstResponse,
    PtmResResponse,
    PtmResult,
    PtmSetBufferSizeRequest,
    PtmSetBufferSizeResponse,
    PtmSetStateRequest,
    PtmSetStateResponse,
    PtmStateFlag,
    ResultPart,
    SwtpmInfo,
    UnknownCommand,
    by_cmd,
)

from .state import StateError, StorageLockError
from .tpm.algorithms import ALGORITHMS, RSA_KEY_BITS
from .tpm.command import CommandTable
from .tpm.constants import TPM_ALG
from .tpm.errors import TPM_RC
from .tpm.properties import FIRMWARE_VERSION, MANUFACTURER, SPEC_LEVEL, SPEC_REVISION
from .vtpm import BUFFER_SIZE_MAX, BUFFER_SIZE_MIN, MAX_LOCALITY, Vtpm, VtpmStateError

__all__ = [
    "ControlResult",
    "CuseBlobTransfer",
    "OPERATIONS",
    "Transport",
    "TransferMode",
    "capabilities",
    "dispatch",
    "get_info_json",
    "info_window",
    "is_supported",
]

log = logging.getLogger(__name__)

_OK = PtmResult.TPM_SUCCESS


class Transport(enum.Enum):
    """Which front door a request came through; a few answers differ (§1.3, §3.1)."""

    CUSE = "cuse"
    SOCKET = "socket"


@dataclass(frozen=True)
class ControlResult:
    """What a control operation answers.

    ``response`` is the typed response half to pack for the transport.
    ``terminate`` asks the transport to exit after sending it (CMD_SHUTDOWN,
    or storage that cannot be locked at SET_STATEBLOB, where swtpm exits too).
    """

    response: Part
    terminate: bool = False


# ---------------------------------------------------------------------------
# CUSE chunked state-blob transfer (§2.8)


class TransferMode(enum.Enum):
    """What read()/write() on the CUSE device currently mean."""

    IDLE = "idle"  # TPM command / response
    GET = "get"  # read() continues a GET_STATEBLOB
    SET = "set"  # write() appends to a SET_STATEBLOB


@dataclass
class CuseBlobTransfer:
    """The CUSE device's state-blob transfer state (one per device).

    GET: the blob is fetched fresh whenever a transfer starts (offset 0) or
    asks for another (type, decrypt) -- swtpm's stale cache is deliberately
    not reproduced -- and is kept only until the transfer has been read to
    its end, so that later chunks come from the same snapshot.  The read()
    continuation resumes at ``offset + copied`` of the last ioctl (swtpm uses
    ``copied``, which is only right after an offset-0 ioctl).

    SET: chunks of exactly 3072 bytes mean "more follows"; the first chunk of
    another size commits.  A 0-byte first chunk opens a transfer whose data
    then comes by write() and is committed by a final 0-byte ioctl.
    """

    mode: TransferMode = TransferMode.IDLE
    _get_key: tuple[int, bool] | None = None
    _get_blob: bytes = b""
    _get_encrypted: bool = False
    _read_offset: int = 0
    _set_type: int | None = None
    _set_data: bytearray = field(default_factory=bytearray)
    _set_encrypted: bool = False

    def reset(self) -> None:
        """Forget any transfer (e.g. read()/write() in the wrong mode, which is EIO)."""
        self.mode = TransferMode.IDLE
        self._get_key = None
        self._get_blob = b""
        self._read_offset = 0
        self._set_type = None
        self._set_data = bytearray()

    async def get_chunk(self, vtpm: Vtpm, request: PtmGetStateRequest) -> PtmGetStateResponse:
        decrypt = bool(request.state_flags & PtmStateFlag.PTM_STATE_FLAG_DECRYPTED)
        key = (request.type, decrypt)
        if request.offset == 0 or self._get_key != key:
            self.reset()
            blob, encrypted = await vtpm.get_state_blob(request.type, decrypt)
            self._get_key, self._get_blob, self._get_encrypted = key, blob, encrypted
        blob = self._get_blob
        offset = min(request.offset, len(blob))
        chunk = blob[offset : offset + PTM_STATE_BLOB_SIZE]
        end = offset + len(chunk)
        if end < len(blob):
            self.mode = TransferMode.GET
            self._read_offset = end
        else:
            encrypted = self._get_encrypted
            self.reset()
            self._get_encrypted = encrypted
        return PtmGetStateResponse(
            tpm_result=_OK, state_flags=_state_flags(self._get_encrypted), totlength=len(blob), data=chunk
        )

    def read(self, size: int) -> bytes:
        """read() during a GET transfer; a short read ends the transfer."""
        if self.mode is not TransferMode.GET:
            return b""
        blob = self._get_blob
        chunk = blob[self._read_offset : self._read_offset + max(0, size)]
        self._read_offset += len(chunk)
        if len(chunk) < size or self._read_offset >= len(blob):
            self.reset()
        return chunk

    def write(self, data: bytes) -> int:
        """write() during a SET transfer: append, never commit."""
        if self.mode is not TransferMode.SET:
            raise ValueError("no SET_STATEBLOB transfer is open")
        self._set_data += data
        return len(data)

    async def set_chunk(self, vtpm: Vtpm, request: PtmSetStateRequest) -> PtmSetStateResponse:
        if len(request.data) > PTM_STATE_BLOB_SIZE:
            return PtmSetStateResponse(tpm_result=PtmResult.TPM_BAD_PARAMETER)
        if self._set_type != request.type:
            self.reset()
            self._set_type = request.type
            self.mode = TransferMode.SET
            if not request.data:
                return PtmSetStateResponse(tpm_result=_OK)
        self.mode = TransferMode.SET
        self._set_data += request.data
        self._set_encrypted = bool(request.state_flags & PtmStateFlag.PTM_STATE_FLAG_ENCRYPTED)
        if len(request.data) == PTM_STATE_BLOB_SIZE:
            return PtmSetStateResponse(tpm_result=_OK)
        blob, blob_type, encrypted = bytes(self._set_data), request.type, self._set_encrypted
        self.reset()
        await vtpm.set_state_blob(blob_type, blob, encrypted)
        return PtmSetStateResponse(tpm_result=_OK)


def _state_flags(encrypted: bool) -> int:
    return int(PtmStateFlag.PTM_STATE_FLAG_ENCRYPTED) if encrypted else 0


# ---------------------------------------------------------------------------
# GET_INFO (§2.7): libtpms-style JSON describing this TPM


def _ranges(codes: list[int]) -> str:
    """``"0x11f-0x122,0x124"``: libtpms' compact form of a command-code list."""
    parts: list[str] = []
    start = prev = None
    for code in sorted(codes):
        if prev is not None and code == prev + 1:
            prev = code
            continue
        if start is not None:
            parts.append(f"0x{start:x}" if start == prev else f"0x{start:x}-0x{prev:x}")
        start = prev = code
    if start is not None:
        parts.append(f"0x{start:x}" if start == prev else f"0x{start:x}-0x{prev:x}")
    return ",".join(parts)


def _algorithm_names() -> str:
    names = []
    for alg in sorted(ALGORITHMS):
        try:
            names.append(TPM_ALG(alg).name.lower())
        except ValueError:
            names.append(f"0x{alg:x}")
    return ",".join(names)


_PROFILE_NAME = "default-v1"
_PROFILE_DESCRIPTION = "vtpm-cuse's only profile: every implemented command and algorithm."


def _profile(table: CommandTable) -> dict[str, object]:
    return {
        "Name": _PROFILE_NAME,
        "Commands": _ranges(table.codes()),
        "Algorithms": _algorithm_names(),
        "Description": _PROFILE_DESCRIPTION,
    }


def get_info_json(vtpm: Vtpm, flags: int) -> str:
    """The GET_INFO document for ``flags`` (SwtpmInfo bits; several are merged)."""
    table = vtpm.command_table
    info: dict[str, object] = {}
    if flags & SwtpmInfo.SWTPM_INFO_TPMSPECIFICATION:
        info["TPMSpecification"] = {"family": "2.0", "level": SPEC_LEVEL, "revision": SPEC_REVISION}
    if flags & SwtpmInfo.SWTPM_INFO_TPMATTRIBUTES:
        major, minor, patch = FIRMWARE_VERSION
        info["TPMAttributes"] = {
            "manufacturer": f"id:{int.from_bytes(MANUFACTURER, 'big'):08X}",
            "version": f"id:{(major << 16 | minor) & 0xFFFFFFFF:08X}",
            "model": "vtpm-cuse",
        }
    if flags & SwtpmInfo.SWTPM_INFO_TPMFEATURES:
        info["TPMFeatures"] = {"RSAKeySizes": list(RSA_KEY_BITS), "CamelliaKeySizes": []}
    if flags & SwtpmInfo.SWTPM_INFO_RUNTIME_ALGORITHMS:
        names = _algorithm_names()
        info["RuntimeAlgorithms"] = {"Implemented": names, "CanBeDisabled": "", "Enabled": names, "Disabled": ""}
    if flags & SwtpmInfo.SWTPM_INFO_RUNTIME_COMMANDS:
        codes = _ranges(table.codes())
        info["RuntimeCommands"] = {"Implemented": codes, "CanBeDisabled": "", "Enabled": codes, "Disabled": ""}
    if flags & SwtpmInfo.SWTPM_INFO_ACTIVE_PROFILE:
        info["ActiveProfile"] = _profile(table)
    if flags & SwtpmInfo.SWTPM_INFO_AVAILABLE_PROFILES:
        info["AvailableProfiles"] = [{"Name": _PROFILE_NAME, "Description": _PROFILE_DESCRIPTION}]
    if flags & SwtpmInfo.SWTPM_INFO_RUNTIME_ATTRIBUTES:
        info["RuntimeAttributes"] = {"Implemented": "", "CanBeDisabled": "", "Enabled": "", "Disabled": ""}
    return json.dumps(info, separators=(",", ":"))


def info_window(text: str, offset: int) -> PtmGetInfoResponse:
    """Page a GET_INFO document as swtpm does: NUL-terminated, 3072 bytes per request.

    ``offset`` at or past the end of the text is TPM_BAD_PARAMETER.
    """
    raw = text.encode() + b"\0"
    if offset >= len(raw) - 1:
        return PtmGetInfoResponse(tpm_result=PtmResult.TPM_BAD_PARAMETER)
    window = raw[offset : offset + PTM_GETINFO_SIZE]
    return PtmGetInfoResponse(tpm_result=_OK, totlength=len(raw), buffer=window)


# ---------------------------------------------------------------------------
# the operations


@dataclass(frozen=True)
class _Context:
    vtpm: Vtpm
    transport: Transport
    transfer: CuseBlobTransfer


def _res(result: int) -> PtmResResponse:
    return PtmResResponse(tpm_result=int(result))


async def _get_capability(ctx: _Context, request: Part) -> ControlResult:
    caps = capabilities(ctx.transport)
    if ctx.transport is Transport.CUSE:
        return ControlResult(PtmCapResponse(caps=caps))
    return ControlResult(PtmCapNResponse(tpm_result=_OK, caps=caps))


async def _init(ctx: _Context, request: PtmInitRequest) -> ControlResult:
    delete_volatile = bool(request.init_flags & PtmInitFlag.PTM_INIT_FLAG_DELETE_VOLATILE)
    await ctx.vtpm.init(delete_volatile=delete_volatile)
    return ControlResult(PtmInitResponse(tpm_result=_OK))


async def _shutdown(ctx: _Context, request: Part) -> ControlResult:
    ctx.transfer.reset()
    await ctx.vtpm.shutdown()
    return ControlResult(_res(_OK), terminate=True)


async def _stop(ctx: _Context, request: Part) -> ControlResult:
    ctx.transfer.reset()
    await ctx.vtpm.stop()
    return ControlResult(_res(_OK))


async def _get_established(ctx: _Context, request: Part) -> ControlResult:
    bit = await ctx.vtpm.get_established()
    return ControlResult(PtmEstResponse(tpm_result=_OK, bit=int(bit)))


async def _reset_established(ctx: _Context, request: PtmResetEstRequest) -> ControlResult:
    ctx.vtpm.require_running("PTM_RESET_TPMESTABLISHED")
    if request.loc > MAX_LOCALITY:
        # swtpm's CUSE server never answers this case; we answer like its socket does.
        return ControlResult(PtmResetEstResponse(tpm_result=PtmResult.TPM_BAD_LOCALITY))
    rc = await ctx.vtpm.reset_established(request.loc)
    result = PtmResult.TPM_BAD_LOCALITY if rc == TPM_RC.LOCALITY else rc
    return ControlResult(PtmResetEstResponse(tpm_result=int(result)))


async def _set_locality(ctx: _Context, request: PtmLocRequest) -> ControlResult:
    if not ctx.vtpm.locality_policy.allows(request.loc):
        return ControlResult(PtmLocResponse(tpm_result=PtmResult.TPM_BAD_LOCALITY))
    ctx.vtpm.locality = request.loc
    return ControlResult(PtmLocResponse(tpm_result=_OK))


async def _hash_start(ctx: _Context, request: Part) -> ControlResult:
    await ctx.vtpm.hash_start()
    return ControlResult(_res(_OK))


async def _hash_data(ctx: _Context, request: PtmHdataRequest) -> ControlResult:
    ctx.vtpm.require_running("PTM_HASH_DATA")
    if ctx.transport is Transport.CUSE and len(request.data) > PTM_HDATA_MAX:
        return ControlResult(PtmHdataResponse(tpm_result=PtmResult.TPM_FAIL))
    await ctx.vtpm.hash_data(request.data)
    return ControlResult(PtmHdataResponse(tpm_result=_OK))


async def _hash_end(ctx: _Context, request: Part) -> ControlResult:
    await ctx.vtpm.hash_end()
    return ControlResult(_res(_OK))


async def _cancel(ctx: _Context, request: Part) -> ControlResult:
    ctx.vtpm.require_running("PTM_CANCEL_TPM_CMD")
    ctx.vtpm.cancel()
    return ControlResult(_res(_OK))


async def _store_volatile(ctx: _Context, request: Part) -> ControlResult:
    await ctx.vtpm.store_volatile()
    return ControlResult(_res(_OK))


async def _get_stateblob(ctx: _Context, request: PtmGetStateRequest) -> ControlResult:
    vtpm = ctx.vtpm
    vtpm.require_running("PTM_GET_STATEBLOB")
    if request.type not in PtmBlobType._value2member_map_:
        bad = PtmResult.TPM_BAD_PARAMETER if ctx.transport is Transport.CUSE else PtmResult.TPM_FAIL
        return ControlResult(PtmGetStateResponse(tpm_result=bad))
    if ctx.transport is Transport.CUSE:
        return ControlResult(await ctx.transfer.get_chunk(vtpm, request))
    decrypt = bool(request.state_flags & PtmStateFlag.PTM_STATE_FLAG_DECRYPTED)
    blob, encrypted = await vtpm.get_state_blob(request.type, decrypt)
    rest = blob[request.offset :]
    return ControlResult(
        PtmGetStateResponse(tpm_result=_OK, state_flags=_state_flags(encrypted), totlength=len(rest), data=rest)
    )


async def _set_stateblob(ctx: _Context, request: PtmSetStateRequest) -> ControlResult:
    vtpm = ctx.vtpm
    vtpm.require_stopped("PTM_SET_STATEBLOB")
    try:
        if ctx.transport is Transport.CUSE:
            return ControlResult(await ctx.transfer.set_chunk(vtpm, request))
        encrypted = bool(request.state_flags & PtmStateFlag.PTM_STATE_FLAG_ENCRYPTED)
        await vtpm.set_state_blob(request.type, request.data, encrypted)
        return ControlResult(PtmSetStateResponse(tpm_result=_OK))
    except StorageLockError as exc:
        # swtpm exits here: another process owns the state it was about to overwrite.
        log.error("SET_STATEBLOB: %s; terminating", exc)
        return ControlResult(PtmSetStateResponse(tpm_result=PtmResult.TPM_IOERROR), terminate=True)


async def _get_config(ctx: _Context, request: Part) -> ControlResult:
    return ControlResult(PtmGetConfigResponse(tpm_result=_OK, flags=int(ctx.vtpm.store.config_flags)))


async def _set_buffersize(ctx: _Context, request: PtmSetBufferSizeRequest) -> ControlResult:
    size = ctx.vtpm.set_buffer_size(request.buffersize)
    return ControlResult(
        PtmSetBufferSizeResponse(tpm_result=_OK, buffersize=size, minsize=BUFFER_SIZE_MIN, maxsize=BUFFER_SIZE_MAX)
    )


async def _get_info(ctx: _Context, request: PtmGetInfoRequest) -> ControlResult:
    return ControlResult(info_window(get_info_json(ctx.vtpm, request.flags), request.offset))


async def _lock_storage(ctx: _Context, request: PtmLockStorageRequest) -> ControlResult:
    try:
        await ctx.vtpm.lock_storage(request.retries)
    except StorageLockError as exc:
        log.warning("LOCK_STORAGE: %s", exc)
        return ControlResult(PtmLockStorageResponse(tpm_result=PtmResult.TPM_FAIL))
    return ControlResult(PtmLockStorageResponse(tpm_result=_OK))


_Operation = Callable[[_Context, Part], Awaitable[ControlResult]]


@dataclass(frozen=True)
class Operation:
    """One control operation: its handler, request type and capability bit."""

    handler: _Operation
    request: type[Part] | None
    cap: PtmCap


OPERATIONS: Mapping[PtmCmd, Operation] = {
    PtmCmd.CMD_GET_CAPABILITY: Operation(_get_capability, None, PtmCap(0)),
    PtmCmd.CMD_INIT: Operation(_init, PtmInitRequest, PtmCap.PTM_CAP_INIT),
    PtmCmd.CMD_SHUTDOWN: Operation(_shutdown, None, PtmCap.PTM_CAP_SHUTDOWN),
    PtmCmd.CMD_GET_TPMESTABLISHED: Operation(_get_established, None, PtmCap.PTM_CAP_GET_TPMESTABLISHED),
    PtmCmd.CMD_SET_LOCALITY: Operation(_set_locality, PtmLocRequest, PtmCap.PTM_CAP_SET_LOCALITY),
    PtmCmd.CMD_HASH_START: Operation(_hash_start, None, PtmCap.PTM_CAP_HASHING),
    PtmCmd.CMD_HASH_DATA: Operation(_hash_data, PtmHdataRequest, PtmCap.PTM_CAP_HASHING),
    PtmCmd.CMD_HASH_END: Operation(_hash_end, None, PtmCap.PTM_CAP_HASHING),
    PtmCmd.CMD_CANCEL_TPM_CMD: Operation(_cancel, None, PtmCap.PTM_CAP_CANCEL_TPM_CMD),
    PtmCmd.CMD_STORE_VOLATILE: Operation(_store_volatile, None, PtmCap.PTM_CAP_STORE_VOLATILE),
    PtmCmd.CMD_RESET_TPMESTABLISHED: Operation(
        _reset_established, PtmResetEstRequest, PtmCap.PTM_CAP_RESET_TPMESTABLISHED
    ),
    PtmCmd.CMD_GET_STATEBLOB: Operation(_get_stateblob, PtmGetStateRequest, PtmCap.PTM_CAP_GET_STATEBLOB),
    PtmCmd.CMD_SET_STATEBLOB: Operation(_set_stateblob, PtmSetStateRequest, PtmCap.PTM_CAP_SET_STATEBLOB),
    PtmCmd.CMD_STOP: Operation(_stop, None, PtmCap.PTM_CAP_STOP),
    PtmCmd.CMD_GET_CONFIG: Operation(_get_config, None, PtmCap.PTM_CAP_GET_CONFIG),
    PtmCmd.CMD_SET_BUFFERSIZE: Operation(_set_buffersize, PtmSetBufferSizeRequest, PtmCap.PTM_CAP_SET_BUFFERSIZE),
    PtmCmd.CMD_GET_INFO: Operation(_get_info, PtmGetInfoRequest, PtmCap.PTM_CAP_GET_INFO),
    PtmCmd.CMD_LOCK_STORAGE: Operation(_lock_storage, PtmLockStorageRequest, PtmCap.PTM_CAP_LOCK_STORAGE),
}
"""The dispatch table; GET_CAPABILITY's answer is computed from it."""

#: Capabilities a transport adds itself (they are not operations on a Vtpm).
_TRANSPORT_CAPS: Mapping[Transport, PtmCap] = {
    Transport.CUSE: PtmCap(0),
    Transport.SOCKET: PtmCap.PTM_CAP_SET_DATAFD | PtmCap.PTM_CAP_SEND_COMMAND_HEADER,
}


def capabilities(transport: Transport) -> int:
    """GET_CAPABILITY bits: CUSE 0x16fff, socket 0x1ffff (with this table)."""
    caps = PtmCap(0)
    for op in OPERATIONS.values():
        caps |= op.cap
    return int(caps | _TRANSPORT_CAPS[transport])


def is_supported(cmd: int) -> bool:
    """Whether :func:`dispatch` implements ``cmd`` (SET_DATAFD is the socket's own)."""
    return cmd in OPERATIONS


def _error_response(cmd: int, transport: Transport, result: int) -> Part:
    """The response type of ``cmd`` carrying only ``result`` (a PtmResResponse if unknown)."""
    try:
        spec = by_cmd(cmd)
    except UnknownCommand:
        return _res(result)
    response = spec.response if transport is Transport.CUSE else spec.socket_response
    if not issubclass(response, ResultPart):
        return _res(result)
    return response(tpm_result=int(result))


async def dispatch(
    vtpm: Vtpm,
    cmd: PtmCmd | int,
    request: Part | None,
    transport: Transport,
    *,
    transfer: CuseBlobTransfer | None = None,
) -> ControlResult:
    """Run control command ``cmd`` with its typed ``request`` on ``vtpm``.

    Never raises for bad input: unknown/unsupported commands get
    TPM_BAD_ORDINAL, a request of the wrong type TPM_BAD_PARAMETER, a TPM in
    the wrong state TPM_BAD_ORDINAL, state failures their StateError code, and
    unexpected internal errors TPM_FAIL (logged).
    """
    op = OPERATIONS.get(cmd)  # type: ignore[call-overload]
    if op is None:
        log.debug("control command %r is not supported", cmd)
        return ControlResult(_error_response(cmd, transport, PtmResult.TPM_BAD_ORDINAL))
    if op.request is not None and not isinstance(request, op.request):
        log.warning(
            "control command %s: expected %s, got %s", PtmCmd(cmd).name, op.request.__name__, type(request).__name__
        )
        return ControlResult(_error_response(cmd, transport, PtmResult.TPM_BAD_PARAMETER))
    ctx = _Context(vtpm, transport, transfer if transfer is not None else CuseBlobTransfer())
    try:
        return await op.handler(ctx, request)  # type: ignore[arg-type]
    except VtpmStateError as exc:
        log.debug("control command %s: %s", PtmCmd(cmd).name, exc)
        return ControlResult(_error_response(cmd, transport, exc.result_code))
    except StateError as exc:
        log.warning("control command %s failed: %s", PtmCmd(cmd).name, exc)
        return ControlResult(_error_response(cmd, transport, exc.result_code))
    except Exception:
        log.exception("control command %s failed unexpectedly", PtmCmd(cmd).name)
        return ControlResult(_error_response(cmd, transport, PtmResult.TPM_FAIL))
