"""The Vtpm and its control operations around TPM commands: the worker thread and cancel,
what needs a running or a stopped TPM.

(vtpm_cuse.vtpm / .control.) Every test drives the TPM the way a transport would: typed ioctl_defs requests
through ``control.dispatch`` and raw TPM command bytes through ``Vtpm.execute``.
Async tests run under ``trio.run`` (no pytest plugin needed); the shared helpers are
in tests/support/vtpm_control.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from ioctl_defs import (
    PtmCmd,
    PtmGetInfoRequest,
    PtmGetStateRequest,
    PtmHdataRequest,
    PtmLockStorageRequest,
    PtmLocRequest,
    PtmResetEstRequest,
    PtmResRequest,
    PtmResult,
    PtmSetBufferSizeRequest,
    PtmSetStateRequest,
)
from tests.support.vtpm_control import (
    SLOW_CC,
    SlowCommand,
    ctl,
    init,
    ok,
    pcr_read,
    rc,
    result_of,
    startup,
    tpm_cmd,
    trio_test,
)
from vtpm_cuse import control
from vtpm_cuse.control import Transport
from vtpm_cuse.tpm.errors import TPM_RC
from vtpm_cuse.vtpm import (
    BUFFER_SIZE_MAX,
    Vtpm,
)

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
