"""The Vtpm's control operations: locality and the established bit, hashing, buffer size,
capability, config, info, storage lock.

(vtpm_cuse.vtpm / .control.) Every test drives the TPM the way a transport would: typed ioctl_defs requests
through ``control.dispatch`` and raw TPM command bytes through ``Vtpm.execute``.
Async tests run under ``trio.run`` (no pytest plugin needed); the shared helpers are
in tests/support/vtpm_control.py.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from ioctl_defs import (
    PtmCmd,
    PtmGetInfoRequest,
    PtmHdataRequest,
    PtmLockStorageRequest,
    PtmLocRequest,
    PtmResetEstRequest,
    PtmResult,
    PtmSetBufferSizeRequest,
    SwtpmInfo,
)
from tests.support.vtpm_control import (
    FATAL,
    ctl,
    get_max_command_size,
    init,
    ok,
    pcr_extend,
    pcr_read,
    rc,
    read_pcr,
    result_of,
    startup,
    tpm_cmd,
    trio_test,
)
from vtpm_cuse import control
from vtpm_cuse.control import Transport
from vtpm_cuse.state import StateKey
from vtpm_cuse.tpm.commands import COMMANDS
from vtpm_cuse.tpm.errors import TPM_RC
from vtpm_cuse.vtpm import (
    BUFFER_SIZE_MAX,
    BUFFER_SIZE_MIN,
    LocalityPolicy,
    Vtpm,
    VtpmFlags,
    fatal_error_response,
)

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
