"""The Vtpm and its control operations: INIT, persistence, automatic shutdown, state blobs.

(vtpm_cuse.vtpm / .control.) Every test drives the TPM the way a transport would: typed ioctl_defs requests
through ``control.dispatch`` and raw TPM command bytes through ``Vtpm.execute``.
Async tests run under ``trio.run`` (no pytest plugin needed); the shared helpers are
in tests/support/vtpm_control.py.
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
import trio

from ioctl_defs import (
    PTM_STATE_BLOB_SIZE,
    PtmBlobType,
    PtmCmd,
    PtmGetStateRequest,
    PtmInitFlag,
    PtmInitRequest,
    PtmResult,
    PtmSetStateRequest,
    PtmStateFlag,
)
from tests.support.vtpm_control import (
    FATAL,
    PERMALL,
    SU_CLEAR,
    SU_STATE,
    VOLATILE,
    ctl,
    init,
    ok,
    pcr_extend,
    pcr_read,
    rc,
    read_pcr,
    result_of,
    shutdown,
    snapshot,
    startup,
    trio_test,
)
from vtpm_cuse.control import CuseBlobTransfer, TransferMode, Transport
from vtpm_cuse.state import StateKey
from vtpm_cuse.tpm.errors import TPM_RC
from vtpm_cuse.vtpm import (
    Vtpm,
    VtpmFlags,
)

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
