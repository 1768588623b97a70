"""The Vtpm instance and the framing-free control operations (vtpm_cuse.vtpm / .control).

Every test drives the TPM the way a transport would: typed ioctl_defs requests
through ``control.dispatch`` and raw TPM command bytes through ``Vtpm.execute``.
Async tests run under ``trio.run`` (no pytest plugin needed).
"""

from __future__ import annotations

import functools
import hashlib
import stat
import struct
import threading
from pathlib import Path

import pytest
import trio

from ioctl_defs import (
    PTM_STATE_BLOB_SIZE,
    PtmBlobType,
    PtmCmd,
    PtmGetInfoRequest,
    PtmGetStateRequest,
    PtmHdataRequest,
    PtmInitFlag,
    PtmInitRequest,
    PtmLockStorageRequest,
    PtmLocRequest,
    PtmResetEstRequest,
    PtmResRequest,
    PtmResult,
    PtmSetBufferSizeRequest,
    PtmSetStateRequest,
    PtmStateFlag,
    SwtpmInfo,
)
from vtpm_cuse import control
from vtpm_cuse.control import CuseBlobTransfer, TransferMode, Transport
from vtpm_cuse.state import StateKey
from vtpm_cuse.tpm.command import CommandTable, command
from vtpm_cuse.tpm.commands import COMMANDS
from vtpm_cuse.tpm.errors import TPM_RC, TpmError
from vtpm_cuse.vtpm import (
    BUFFER_SIZE_MAX,
    BUFFER_SIZE_MIN,
    LocalityPolicy,
    Vtpm,
    VtpmFlags,
    fatal_error_response,
)

PERMALL = "tpm2-00.permall"
VOLATILE = "tpm2-00.volatilestate"
SU_CLEAR, SU_STATE = 0, 1
SHA256 = 0x000B
FATAL = bytes.fromhex("8001 0000000a 00000101")


def trio_test(fn):
    """Run an ``async def`` test under trio."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return trio.run(functools.partial(fn, *args, **kwargs))

    return wrapper


# -- TPM command builders / parsers ------------------------------------------------


def tpm_cmd(code: int, body: bytes = b"", tag: int = 0x8001) -> bytes:
    return struct.pack(">HII", tag, 10 + len(body), code) + body


def startup(su: int = SU_CLEAR) -> bytes:
    return tpm_cmd(0x144, struct.pack(">H", su))


def shutdown(su: int) -> bytes:
    return tpm_cmd(0x145, struct.pack(">H", su))


def pcr_extend(pcr: int, digest: bytes) -> bytes:
    password_session = struct.pack(">IHBH", 0x40000009, 0, 0, 0)
    body = (
        struct.pack(">I", pcr)
        + struct.pack(">I", len(password_session))
        + password_session
        + struct.pack(">IH", 1, SHA256)
        + digest
    )
    return tpm_cmd(0x182, body, tag=0x8002)


def pcr_read(pcr: int) -> bytes:
    select = bytearray(3)
    select[pcr // 8] |= 1 << (pcr % 8)
    return tpm_cmd(0x17E, struct.pack(">IHB", 1, SHA256, 3) + bytes(select))


def get_max_command_size() -> bytes:
    return tpm_cmd(0x17A, struct.pack(">III", 6, 0x11E, 1))  # TPM_CAP_TPM_PROPERTIES


def rc(response: bytes) -> int:
    return struct.unpack_from(">I", response, 6)[0]


async def read_pcr(vtpm: Vtpm, pcr: int) -> bytes:
    response = await vtpm.execute(pcr_read(pcr))
    assert rc(response) == 0, hex(rc(response))
    (size,) = struct.unpack_from(">H", response, 28)
    return response[30 : 30 + size]


async def ok(vtpm: Vtpm, cmd: bytes) -> bytes:
    response = await vtpm.execute(cmd)
    assert rc(response) == 0, f"rc 0x{rc(response):x}"
    return response


async def ctl(vtpm: Vtpm, cmd: PtmCmd, request=None, transport=Transport.SOCKET, **kw):
    return await control.dispatch(vtpm, cmd, request if request is not None else PtmResRequest(), transport, **kw)


async def result_of(vtpm: Vtpm, cmd: PtmCmd, request=None, transport=Transport.SOCKET, **kw) -> int:
    return (await ctl(vtpm, cmd, request, transport, **kw)).response.tpm_result


async def init(vtpm: Vtpm, flags: int = 0) -> None:
    assert await result_of(vtpm, PtmCmd.CMD_INIT, PtmInitRequest(init_flags=flags)) == 0


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.name != ".lock"}


# -- a test-only slow, cancelable command ----------------------------------------------

SLOW_CC = 0x20000100


class SlowCommand:
    """A command that runs until released or cancelled, registered in a private table."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.table = CommandTable([*COMMANDS, command(SLOW_CC, cancelable=True)(self._handler)])

    def _handler(self, ctx):
        self.started.set()
        while not self.release.wait(0.005):
            if ctx.engine.cancel_requested.is_set():
                raise TpmError(TPM_RC.CANCELED, "cancelled")
        return None

    async def wait_started(self) -> None:
        with trio.fail_after(5):
            while not self.started.is_set():
                await trio.sleep(0.005)


# -- INIT / persistence ------------------------------------------------------------------


@trio_test
async def test_init_fresh_dir_creates_permall(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path / "state")
    assert await vtpm.execute(startup()) == FATAL  # not running yet
    await init(vtpm)
    await ok(vtpm, startup())
    permall = tmp_path / "state" / PERMALL
    assert permall.is_file()
    assert stat.S_IMODE(permall.stat().st_mode) == 0o600
    await vtpm.shutdown()


@trio_test
async def test_pcr_extend_survives_stop_and_init(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    await init(vtpm)
    await ok(vtpm, startup())
    digest = hashlib.sha256(b"event").digest()
    await ok(vtpm, pcr_extend(10, digest))
    expected = hashlib.sha256(bytes(32) + digest).digest()
    assert await read_pcr(vtpm, 10) == expected
    assert await result_of(vtpm, PtmCmd.CMD_STOP) == 0
    assert not vtpm.running
    await init(vtpm)
    # The automatic Shutdown(STATE) makes a Resume possible; PCR 10 is state-saved.
    await ok(vtpm, startup(SU_STATE))
    assert await read_pcr(vtpm, 10) == expected
    await vtpm.shutdown()


@trio_test
async def test_store_volatile_then_init_delete_volatile_resumes(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    await init(vtpm)
    await ok(vtpm, startup())
    digest = hashlib.sha256(b"x").digest()
    await ok(vtpm, pcr_extend(16, digest))
    pcr16 = await read_pcr(vtpm, 16)
    assert await result_of(vtpm, PtmCmd.CMD_STORE_VOLATILE) == 0
    assert (tmp_path / VOLATILE).is_file()
    await init(vtpm, PtmInitFlag.PTM_INIT_FLAG_DELETE_VOLATILE)
    assert not (tmp_path / VOLATILE).exists()
    # No Startup needed: the volatile state says the TPM is started.
    assert await read_pcr(vtpm, 16) == pcr16
    await vtpm.shutdown()


@trio_test
async def test_init_keeps_volatile_file_without_flag(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    await init(vtpm)
    await ok(vtpm, startup())
    assert await result_of(vtpm, PtmCmd.CMD_STORE_VOLATILE) == 0
    await init(vtpm)
    assert (tmp_path / VOLATILE).is_file()
    await vtpm.shutdown()


@trio_test
async def test_wrong_state_key_fails_init_and_leaves_files(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path, file_key=StateKey(b"\x01" * 32))
    await init(vtpm)
    await ok(vtpm, startup())
    assert await result_of(vtpm, PtmCmd.CMD_STORE_VOLATILE) == 0
    await vtpm.shutdown()
    before = snapshot(tmp_path)

    other = Vtpm(tmp_path, file_key=StateKey(b"\x02" * 32))
    # swtpm answers TPM_RC_FAILURE for a TPM 2 state it cannot decrypt (its own test of a
    # wrong key expects 0x101); the log names the file and "failed authentication".
    assert await result_of(other, PtmCmd.CMD_INIT, PtmInitRequest(PtmInitFlag.PTM_INIT_FLAG_DELETE_VOLATILE)) == 0x101
    assert not other.running
    assert await other.execute(startup()) == FATAL
    assert snapshot(tmp_path) == before
    await other.shutdown()


@trio_test
async def test_damaged_state_fails_init_with_rc_failure(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    await init(vtpm)
    await vtpm.shutdown()
    permall = tmp_path / PERMALL
    data = bytearray(permall.read_bytes())
    data[-5] ^= 0xFF
    permall.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    other = Vtpm(tmp_path)
    assert await result_of(other, PtmCmd.CMD_INIT, PtmInitRequest()) == PtmResult.TPM_RC_FAILURE
    assert snapshot(tmp_path) == before
    await other.shutdown()


# -- auto shutdown ---------------------------------------------------------------------


@trio_test
async def test_auto_shutdown_on_stop(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    await init(vtpm)
    await ok(vtpm, startup())
    assert await result_of(vtpm, PtmCmd.CMD_STOP) == 0
    await init(vtpm)
    assert rc(await vtpm.execute(startup(SU_STATE))) == 0
    await vtpm.shutdown()


@trio_test
async def test_no_auto_shutdown_when_disabled(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path, flags=VtpmFlags(disable_auto_shutdown=True))
    await init(vtpm)
    await ok(vtpm, startup())
    assert await result_of(vtpm, PtmCmd.CMD_STOP) == 0
    await init(vtpm)
    assert (
        rc(await vtpm.execute(startup(SU_STATE))) == TPM_RC.VALUE | 0x040 | 0x100
    )  # TPM_RC_VALUE + TPM_RC_P + TPM_RC_1
    await vtpm.shutdown()


@trio_test
async def test_no_auto_shutdown_after_explicit_shutdown(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    await init(vtpm)
    await ok(vtpm, startup())
    await ok(vtpm, shutdown(SU_CLEAR))
    await init(vtpm)  # INIT also stops first; the last command was TPM2_Shutdown
    assert rc(await vtpm.execute(startup(SU_STATE))) != 0
    await ok(vtpm, startup(SU_CLEAR))
    await vtpm.shutdown()


# -- state blobs -----------------------------------------------------------------------------


async def _migrate(src: Vtpm, dst: Vtpm, transport: Transport) -> None:
    blobs = {}
    for blob_type in (PtmBlobType.PTM_BLOB_TYPE_PERMANENT, PtmBlobType.PTM_BLOB_TYPE_VOLATILE):
        if transport is Transport.SOCKET:
            res = (
                await ctl(
                    src,
                    PtmCmd.CMD_GET_STATEBLOB,
                    PtmGetStateRequest(state_flags=PtmStateFlag.PTM_STATE_FLAG_DECRYPTED, type=blob_type, offset=0),
                )
            ).response
            assert res.tpm_result == 0 and res.totlength == len(res.data)
            blobs[blob_type] = res.data
        else:
            transfer = CuseBlobTransfer()
            res = (
                await ctl(
                    src,
                    PtmCmd.CMD_GET_STATEBLOB,
                    PtmGetStateRequest(state_flags=0, type=blob_type, offset=0),
                    Transport.CUSE,
                    transfer=transfer,
                )
            ).response
            assert res.tpm_result == 0 and len(res.data) <= PTM_STATE_BLOB_SIZE
            data = res.data
            while len(data) < res.totlength:  # read() continuation
                data += transfer.read(1000)
            assert transfer.mode is TransferMode.IDLE
            blobs[blob_type] = data
    # GET volatile deletes the volatile file, as swtpm
    assert not (src.store.directory / VOLATILE).exists()

    assert await result_of(dst, PtmCmd.CMD_STOP) == 0
    for blob_type, blob in blobs.items():
        if transport is Transport.SOCKET:
            assert (
                await result_of(
                    dst, PtmCmd.CMD_SET_STATEBLOB, PtmSetStateRequest(state_flags=0, type=blob_type, data=blob)
                )
                == 0
            )
        else:
            transfer = CuseBlobTransfer()
            chunks = [blob[i : i + PTM_STATE_BLOB_SIZE] for i in range(0, len(blob), PTM_STATE_BLOB_SIZE)]
            if len(chunks[-1]) == PTM_STATE_BLOB_SIZE:
                chunks.append(b"")
            for chunk in chunks:
                assert (
                    await result_of(
                        dst,
                        PtmCmd.CMD_SET_STATEBLOB,
                        PtmSetStateRequest(state_flags=0, type=blob_type, data=chunk),
                        Transport.CUSE,
                        transfer=transfer,
                    )
                    == 0
                )
            assert transfer.mode is TransferMode.IDLE
    await init(dst, PtmInitFlag.PTM_INIT_FLAG_DELETE_VOLATILE)


@pytest.mark.parametrize("migration_key", [None, b"\x07" * 32], ids=["plain", "migration-key"])
@pytest.mark.parametrize("transport", [Transport.SOCKET, Transport.CUSE], ids=["socket", "cuse"])
def test_stateblob_round_trip(tmp_path: Path, migration_key, transport) -> None:
    async def main() -> None:
        key = StateKey(migration_key) if migration_key else None
        src = Vtpm(tmp_path / "a", migration_key=key, file_key=StateKey(b"\x05" * 16))
        dst = Vtpm(
            tmp_path / "b",
            migration_key=StateKey(migration_key) if migration_key else None,
            file_key=StateKey(b"\x05" * 16),
        )
        await init(src)
        await ok(src, startup())
        for pcr, data in ((0, b"bios"), (7, b"secure boot"), (16, b"debug")):
            await ok(src, pcr_extend(pcr, hashlib.sha256(data).digest()))
        expected = [await read_pcr(src, pcr) for pcr in range(24)]
        await _migrate(src, dst, transport)
        assert [await read_pcr(dst, pcr) for pcr in range(24)] == expected
        # the permanent state came along too: same seeds, and dst keeps working
        assert dst.engine.permanent.eps == src.engine.permanent.eps
        assert dst.engine.permanent.sps == src.engine.permanent.sps
        await ok(dst, pcr_extend(10, hashlib.sha256(b"after").digest()))
        await src.shutdown()
        await dst.shutdown()

    trio.run(main)


@trio_test
async def test_stateblob_with_migration_key_rejected_without_it(tmp_path: Path) -> None:
    src = Vtpm(tmp_path / "a", migration_key=StateKey(b"\x09" * 16))
    dst = Vtpm(tmp_path / "b")
    await init(src)
    res = (
        await ctl(src, PtmCmd.CMD_GET_STATEBLOB, PtmGetStateRequest(type=PtmBlobType.PTM_BLOB_TYPE_PERMANENT))
    ).response
    assert res.tpm_result == 0
    assert (
        await result_of(
            dst, PtmCmd.CMD_SET_STATEBLOB, PtmSetStateRequest(type=PtmBlobType.PTM_BLOB_TYPE_PERMANENT, data=res.data)
        )
        == PtmResult.TPM_KEYNOTFOUND
    )
    await src.shutdown()
    await dst.shutdown()


@trio_test
async def test_get_stateblob_is_fresh_and_savestate_is_retry(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    await init(vtpm)
    await ok(vtpm, startup())
    req = PtmGetStateRequest(type=PtmBlobType.PTM_BLOB_TYPE_VOLATILE)
    first = (await ctl(vtpm, PtmCmd.CMD_GET_STATEBLOB, req)).response.data
    await ok(vtpm, pcr_extend(10, hashlib.sha256(b"y").digest()))
    second = (await ctl(vtpm, PtmCmd.CMD_GET_STATEBLOB, req)).response.data
    assert first != second  # no stale cache
    for transport in Transport:
        res = (
            await ctl(
                vtpm, PtmCmd.CMD_GET_STATEBLOB, PtmGetStateRequest(type=PtmBlobType.PTM_BLOB_TYPE_SAVESTATE), transport
            )
        ).response
        assert res.tpm_result == PtmResult.TPM_RETRY
    # GET savestate released the lock; the next command takes it again
    assert not vtpm.store.locked
    await ok(vtpm, pcr_read(0))
    assert vtpm.store.locked
    # unknown blob type
    res = (await ctl(vtpm, PtmCmd.CMD_GET_STATEBLOB, PtmGetStateRequest(type=9), Transport.CUSE)).response
    assert res.tpm_result == PtmResult.TPM_BAD_PARAMETER
    await vtpm.shutdown()


@trio_test
async def test_cuse_set_stateblob_via_write(tmp_path: Path) -> None:
    src = Vtpm(tmp_path / "a")
    dst = Vtpm(tmp_path / "b")
    await init(src)
    await ok(src, startup())
    await ok(src, pcr_extend(10, hashlib.sha256(b"w").digest()))
    blob = (
        await ctl(src, PtmCmd.CMD_GET_STATEBLOB, PtmGetStateRequest(type=PtmBlobType.PTM_BLOB_TYPE_PERMANENT))
    ).response.data
    transfer = CuseBlobTransfer()
    request = PtmSetStateRequest(type=PtmBlobType.PTM_BLOB_TYPE_PERMANENT, data=b"")
    assert await result_of(dst, PtmCmd.CMD_SET_STATEBLOB, request, Transport.CUSE, transfer=transfer) == 0
    assert transfer.mode is TransferMode.SET
    for i in range(0, len(blob), 1000):
        transfer.write(blob[i : i + 1000])
    assert not (tmp_path / "b" / PERMALL).exists()
    assert await result_of(dst, PtmCmd.CMD_SET_STATEBLOB, request, Transport.CUSE, transfer=transfer) == 0
    assert transfer.mode is TransferMode.IDLE
    assert (tmp_path / "b" / PERMALL).exists()
    await src.shutdown()
    await dst.shutdown()


# -- worker thread, cancel ------------------------------------------------------------------


@trio_test
async def test_control_answered_while_slow_command_runs(tmp_path: Path) -> None:
    slow = SlowCommand()
    vtpm = Vtpm(tmp_path, engine_options={"table": slow.table})
    await init(vtpm)
    await ok(vtpm, startup())
    responses: list[bytes] = []

    async def run_slow() -> None:
        responses.append(await vtpm.execute(tpm_cmd(SLOW_CC)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_slow)
        await slow.wait_started()
        with trio.fail_after(2):
            caps = (await ctl(vtpm, PtmCmd.CMD_GET_CAPABILITY)).response
            assert caps.caps == 0x1FFFF
            assert await result_of(vtpm, PtmCmd.CMD_SET_LOCALITY, PtmLocRequest(loc=3)) == 0
            assert (await ctl(vtpm, PtmCmd.CMD_GET_CONFIG)).response.flags == 0
            assert (
                await ctl(vtpm, PtmCmd.CMD_SET_BUFFERSIZE, PtmSetBufferSizeRequest(0))
            ).response.buffersize == BUFFER_SIZE_MAX
            info = (await ctl(vtpm, PtmCmd.CMD_GET_INFO, PtmGetInfoRequest(flags=1))).response
            assert info.tpm_result == 0
            assert await result_of(vtpm, PtmCmd.CMD_LOCK_STORAGE, PtmLockStorageRequest(0)) == 0
        assert vtpm.busy and not responses
        slow.release.set()
    assert rc(responses[0]) == 0
    assert vtpm.locality == 3
    await vtpm.shutdown()


@trio_test
async def test_cancel_stops_running_command(tmp_path: Path) -> None:
    slow = SlowCommand()
    vtpm = Vtpm(tmp_path, engine_options={"table": slow.table})
    await init(vtpm)
    await ok(vtpm, startup())
    # With nothing running, cancel has no lasting effect.
    assert await result_of(vtpm, PtmCmd.CMD_CANCEL_TPM_CMD) == 0
    responses: list[bytes] = []

    async def run_slow() -> None:
        responses.append(await vtpm.execute(tpm_cmd(SLOW_CC)))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_slow)
            await slow.wait_started()
            assert await result_of(vtpm, PtmCmd.CMD_CANCEL_TPM_CMD) == 0
    assert rc(responses[0]) == TPM_RC.CANCELED
    # The next command is not affected by the old cancel.
    await ok(vtpm, pcr_read(0))
    await vtpm.shutdown()


@trio_test
async def test_waiting_control_op_queues_behind_command(tmp_path: Path) -> None:
    slow = SlowCommand()
    vtpm = Vtpm(tmp_path, engine_options={"table": slow.table})
    await init(vtpm)
    await ok(vtpm, startup())
    order: list[str] = []

    async def run_slow() -> None:
        await vtpm.execute(tpm_cmd(SLOW_CC))
        order.append("command")

    async def hash_start() -> None:
        assert await result_of(vtpm, PtmCmd.CMD_HASH_START) == 0
        order.append("hash_start")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_slow)
            await slow.wait_started()
            nursery.start_soon(hash_start)
            await trio.sleep(0.05)
            assert order == []
            slow.release.set()
    assert order == ["command", "hash_start"]
    await vtpm.shutdown()


# -- running / stopped requirements ----------------------------------------------------------


NEEDS_RUNNING = [
    (PtmCmd.CMD_GET_TPMESTABLISHED, PtmResRequest()),
    (PtmCmd.CMD_RESET_TPMESTABLISHED, PtmResetEstRequest(loc=3)),
    (PtmCmd.CMD_HASH_START, PtmResRequest()),
    (PtmCmd.CMD_HASH_DATA, PtmHdataRequest(data=b"abc")),
    (PtmCmd.CMD_HASH_END, PtmResRequest()),
    (PtmCmd.CMD_CANCEL_TPM_CMD, PtmResRequest()),
    (PtmCmd.CMD_STORE_VOLATILE, PtmResRequest()),
    (PtmCmd.CMD_GET_STATEBLOB, PtmGetStateRequest(type=1)),
]


@pytest.mark.parametrize("transport", list(Transport))
def test_needs_running_and_needs_stopped(tmp_path: Path, transport: Transport) -> None:
    async def main() -> None:
        vtpm = Vtpm(tmp_path)
        for cmd, request in NEEDS_RUNNING:
            assert await result_of(vtpm, cmd, request, transport) == PtmResult.TPM_BAD_ORDINAL, cmd
        # allowed while stopped
        assert await result_of(vtpm, PtmCmd.CMD_SET_BUFFERSIZE, PtmSetBufferSizeRequest(3000), transport) == 0
        await init(vtpm)
        assert (
            await result_of(vtpm, PtmCmd.CMD_SET_STATEBLOB, PtmSetStateRequest(type=1, data=b"x"), transport)
            == PtmResult.TPM_BAD_ORDINAL
        )
        assert (
            await result_of(vtpm, PtmCmd.CMD_SET_BUFFERSIZE, PtmSetBufferSizeRequest(3000), transport)
            == PtmResult.TPM_BAD_ORDINAL
        )
        assert (
            await ctl(vtpm, PtmCmd.CMD_SET_BUFFERSIZE, PtmSetBufferSizeRequest(0), transport)
        ).response.buffersize == 3000
        await vtpm.shutdown()

    trio.run(main)


@trio_test
async def test_bad_requests_do_not_crash(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    assert await result_of(vtpm, PtmCmd.CMD_SET_DATAFD) == PtmResult.TPM_BAD_ORDINAL
    assert await result_of(vtpm, 0x77) == PtmResult.TPM_BAD_ORDINAL
    assert not control.is_supported(PtmCmd.CMD_SET_DATAFD)
    assert await result_of(vtpm, PtmCmd.CMD_INIT, PtmLocRequest(1)) == PtmResult.TPM_BAD_PARAMETER
    assert not vtpm.running
    await vtpm.shutdown()


# -- locality, established bit ------------------------------------------------------------------


@trio_test
async def test_set_locality(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path, locality_policy=LocalityPolicy(reject_locality_4=True))
    assert await result_of(vtpm, PtmCmd.CMD_SET_LOCALITY, PtmLocRequest(5)) == PtmResult.TPM_BAD_LOCALITY
    assert await result_of(vtpm, PtmCmd.CMD_SET_LOCALITY, PtmLocRequest(4)) == PtmResult.TPM_BAD_LOCALITY
    assert vtpm.locality == 0
    assert await result_of(vtpm, PtmCmd.CMD_SET_LOCALITY, PtmLocRequest(2), Transport.CUSE) == 0
    assert vtpm.locality == 2
    relaxed = Vtpm(tmp_path / "r")
    assert await result_of(relaxed, PtmCmd.CMD_SET_LOCALITY, PtmLocRequest(4)) == 0
    assert relaxed.locality == 4


@trio_test
async def test_vendor_set_locality_command(tmp_path: Path) -> None:
    def set_loc(loc: int) -> bytes:
        return tpm_cmd(0x20001000, bytes([loc]))

    strict = Vtpm(tmp_path / "s")
    await init(strict)
    assert await strict.execute(set_loc(2)) == FATAL
    assert strict.locality == 0
    await strict.shutdown()

    vtpm = Vtpm(tmp_path / "a", locality_policy=LocalityPolicy(reject_locality_4=True, allow_set_locality=True))
    await init(vtpm)
    assert rc(await vtpm.execute(set_loc(3))) == 0
    assert vtpm.locality == 3
    assert rc(await vtpm.execute(set_loc(4))) == TPM_RC.LOCALITY
    assert rc(await vtpm.execute(set_loc(5))) == TPM_RC.LOCALITY
    assert vtpm.locality == 3
    await vtpm.shutdown()


@trio_test
async def test_short_command_and_stopped_tpm(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    assert await vtpm.execute(b"\x80\x01") == FATAL == fatal_error_response()
    await init(vtpm)
    assert await vtpm.execute(b"\x80\x01\x00\x00") == bytes.fromhex("8001 0000000a 0000009a")
    await vtpm.shutdown()


@trio_test
async def test_reset_established_localities(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    await init(vtpm)
    assert (await ctl(vtpm, PtmCmd.CMD_GET_TPMESTABLISHED)).response.bit == 0
    assert await result_of(vtpm, PtmCmd.CMD_HASH_START) == 0
    assert await result_of(vtpm, PtmCmd.CMD_HASH_END) == 0
    assert (await ctl(vtpm, PtmCmd.CMD_GET_TPMESTABLISHED)).response.bit == 1
    for loc in (0, 1, 2, 5, 255):
        for transport in Transport:
            assert (
                await result_of(vtpm, PtmCmd.CMD_RESET_TPMESTABLISHED, PtmResetEstRequest(loc), transport)
                == PtmResult.TPM_BAD_LOCALITY
            ), loc
    assert (await ctl(vtpm, PtmCmd.CMD_GET_TPMESTABLISHED)).response.bit == 1
    assert await result_of(vtpm, PtmCmd.CMD_RESET_TPMESTABLISHED, PtmResetEstRequest(3)) == 0
    assert (await ctl(vtpm, PtmCmd.CMD_GET_TPMESTABLISHED)).response.bit == 0
    assert vtpm.locality == 0  # the reset's locality is not sticky
    # the established bit is permanent state: it survives a restart
    assert await result_of(vtpm, PtmCmd.CMD_HASH_START) == 0
    await init(vtpm)
    assert (await ctl(vtpm, PtmCmd.CMD_GET_TPMESTABLISHED)).response.bit == 1
    await vtpm.shutdown()


# -- hashing ----------------------------------------------------------------------------------


@trio_test
async def test_hash_after_startup_extends_pcr17(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    await init(vtpm)
    await ok(vtpm, startup())
    assert await read_pcr(vtpm, 18) == b"\xff" * 32  # DRTM PCRs start as all ones
    data = b"1234"
    assert await result_of(vtpm, PtmCmd.CMD_HASH_START) == 0
    assert await result_of(vtpm, PtmCmd.CMD_HASH_DATA, PtmHdataRequest(data=data[:2])) == 0
    assert await result_of(vtpm, PtmCmd.CMD_HASH_DATA, PtmHdataRequest(data=data[2:]), Transport.CUSE) == 0
    assert await result_of(vtpm, PtmCmd.CMD_HASH_END) == 0
    assert await read_pcr(vtpm, 17) == hashlib.sha256(bytes(32) + hashlib.sha256(data).digest()).digest()
    assert await read_pcr(vtpm, 18) == bytes(32)  # PCRs 17-22 were reset
    await vtpm.shutdown()


@trio_test
async def test_hash_before_startup_extends_pcr0(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    await init(vtpm)
    data = b"h-crtm measurement"
    assert await result_of(vtpm, PtmCmd.CMD_HASH_START) == 0
    assert await result_of(vtpm, PtmCmd.CMD_HASH_DATA, PtmHdataRequest(data=data)) == 0
    assert await result_of(vtpm, PtmCmd.CMD_HASH_END) == 0
    await ok(vtpm, startup())
    initial = bytes(31) + b"\x04"
    assert await read_pcr(vtpm, 0) == hashlib.sha256(initial + hashlib.sha256(data).digest()).digest()
    await vtpm.shutdown()


@trio_test
async def test_cuse_hash_data_too_long(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    await init(vtpm)
    # The ioctl struct cannot carry more; a request built by hand gets TPM_FAIL, not a crash.
    request = PtmHdataRequest(data=b"\0" * 4096)
    object.__setattr__(request, "data", b"\0" * 4097)
    assert await result_of(vtpm, PtmCmd.CMD_HASH_DATA, request, Transport.CUSE) == PtmResult.TPM_FAIL
    await vtpm.shutdown()


# -- buffer size, capability, config, info, lock ------------------------------------------------


@trio_test
async def test_set_buffersize_changes_max_command_size(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    res = (await ctl(vtpm, PtmCmd.CMD_SET_BUFFERSIZE, PtmSetBufferSizeRequest(3000))).response
    assert (res.tpm_result, res.buffersize, res.minsize, res.maxsize) == (0, 3000, BUFFER_SIZE_MIN, 4096)
    await init(vtpm)
    await ok(vtpm, startup())
    response = await ok(vtpm, get_max_command_size())
    assert struct.unpack_from(">II", response, 19) == (0x11E, 3000)
    assert await result_of(vtpm, PtmCmd.CMD_STOP) == 0
    for asked, granted in ((1, BUFFER_SIZE_MIN), (100000, BUFFER_SIZE_MAX)):
        res = (await ctl(vtpm, PtmCmd.CMD_SET_BUFFERSIZE, PtmSetBufferSizeRequest(asked))).response
        assert res.buffersize == granted
    await vtpm.shutdown()


@trio_test
async def test_get_capability_per_transport(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    assert (await ctl(vtpm, PtmCmd.CMD_GET_CAPABILITY, None, Transport.CUSE)).response.caps == 0x16FFF
    res = (await ctl(vtpm, PtmCmd.CMD_GET_CAPABILITY)).response
    assert (res.tpm_result, res.caps) == (0, 0x1FFFF)


@trio_test
async def test_get_config(tmp_path: Path) -> None:
    plain = Vtpm(tmp_path / "p")
    keyed = Vtpm(tmp_path / "k", file_key=StateKey(bytes(16)), migration_key=StateKey(bytes(32)))
    assert (await ctl(plain, PtmCmd.CMD_GET_CONFIG)).response.flags == 0
    assert (await ctl(keyed, PtmCmd.CMD_GET_CONFIG)).response.flags == 3


@trio_test
async def test_get_info(tmp_path: Path) -> None:
    import json

    vtpm = Vtpm(tmp_path)
    flags = SwtpmInfo.SWTPM_INFO_TPMSPECIFICATION | SwtpmInfo.SWTPM_INFO_TPMATTRIBUTES
    res = (await ctl(vtpm, PtmCmd.CMD_GET_INFO, PtmGetInfoRequest(flags=flags))).response
    assert res.tpm_result == 0
    assert res.buffer.endswith(b"\0") and res.totlength == len(res.buffer)
    doc = json.loads(res.buffer[:-1])
    assert doc["TPMSpecification"]["family"] == "2.0"
    assert doc["TPMAttributes"]["manufacturer"] == "id:56435345"  # "VCSE"
    everything = (await ctl(vtpm, PtmCmd.CMD_GET_INFO, PtmGetInfoRequest(flags=0xFF))).response
    doc = json.loads(everything.buffer[:-1])
    assert {
        "RuntimeAlgorithms",
        "RuntimeCommands",
        "ActiveProfile",
        "AvailableProfiles",
        "TPMFeatures",
        "RuntimeAttributes",
    } <= set(doc)
    implemented = set()
    for part in doc["RuntimeCommands"]["Implemented"].split(","):
        first, _, last = part.partition("-")
        implemented.update(range(int(first, 16), int(last or first, 16) + 1))
    # SelfTest, Startup, Shutdown and their neighbours (0x142-0x146), as swtpm lists code ranges
    assert set(range(0x142, 0x147)) <= implemented
    assert {c.code for c in COMMANDS} == implemented
    # paging: a window from an offset, and an offset past the end
    window = (await ctl(vtpm, PtmCmd.CMD_GET_INFO, PtmGetInfoRequest(flags=flags, offset=5))).response
    assert window.buffer == res.buffer[5:] and window.totlength == res.totlength
    past = (await ctl(vtpm, PtmCmd.CMD_GET_INFO, PtmGetInfoRequest(flags=flags, offset=res.totlength - 1))).response
    assert past.tpm_result == PtmResult.TPM_BAD_PARAMETER


def test_info_window_pages_3072_bytes() -> None:
    text = "x" * 5000
    first = control.info_window(text, 0)
    assert (first.totlength, len(first.buffer)) == (5001, 3072)
    second = control.info_window(text, 3072)
    assert second.buffer == b"x" * (5000 - 3072) + b"\0"


@trio_test
async def test_lock_storage_and_shutdown_release(tmp_path: Path) -> None:
    vtpm = Vtpm(tmp_path)
    assert await result_of(vtpm, PtmCmd.CMD_LOCK_STORAGE, PtmLockStorageRequest(retries=0)) == 0
    assert vtpm.store.locked
    result = await ctl(vtpm, PtmCmd.CMD_SHUTDOWN)
    assert result.response.tpm_result == 0 and result.terminate
    assert not vtpm.store.locked


@trio_test
async def test_boot_with_startup_flag(tmp_path: Path) -> None:
    from vtpm_cuse.vtpm import StartupMode

    idle = Vtpm(tmp_path / "idle")
    assert await idle.boot() is None and not idle.running
    vtpm = Vtpm(tmp_path / "b", flags=VtpmFlags(not_need_init=True, startup=StartupMode.CLEAR))
    response = await vtpm.boot()
    assert response is not None and rc(response) == 0
    assert vtpm.running and vtpm.engine.volatile.started
    await vtpm.shutdown()


@trio_test
async def test_startup_none_alone_starts_the_tpm_without_startup(tmp_path: Path) -> None:
    """``--flags startup-none`` starts the TPM like not-need-init and sends no Startup."""
    from vtpm_cuse.vtpm import StartupMode

    vtpm = Vtpm(tmp_path / "n", flags=VtpmFlags(startup=StartupMode.NONE))
    assert await vtpm.boot() is None
    assert vtpm.running and not vtpm.engine.volatile.started
    assert rc(await vtpm.execute(pcr_read(0))) == 0x100  # TPM_RC_INITIALIZE, not the fatal error
    await vtpm.shutdown()


@trio_test
async def test_two_instances_do_not_interfere(tmp_path: Path) -> None:
    a, b = Vtpm(tmp_path / "a"), Vtpm(tmp_path / "b")
    await init(a)
    await init(b)
    await ok(a, startup())
    await ok(b, startup())
    await ok(a, pcr_extend(10, hashlib.sha256(b"a").digest()))
    assert await read_pcr(b, 10) == bytes(32)
    assert await result_of(a, PtmCmd.CMD_SET_LOCALITY, PtmLocRequest(3)) == 0
    assert b.locality == 0
    await a.shutdown()
    await b.shutdown()
