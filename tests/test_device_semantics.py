"""The /dev/vtpm-<name> semantics (vtpm_cuse.device) through the real CuseSession,
driven from a simulated kernel (tests/cuse_peer.py): what read()/write()/poll()/ioctl()
callers see, including each swtpm quirk the device fixes on purpose.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
from cuse_peer import (
    IOCTL_32BIT,
    IOCTL_COMPAT,
    IOCTL_OUT,
    NOTIFY_POLL,
    NOTIFY_POLL_WAKEUP_OUT,
    POLL_OUT,
    POLL_SCHEDULE_NOTIFY,
    WRITE_OUT,
    Harness,
    Message,
    cuse_server,
    trio_test,
)

from ioctl_defs import (
    I386,
    PTM_STATE_BLOB_SIZE,
    Abi,
    Part,
    PtmBlobType,
    PtmGetInfoRequest,
    PtmGetStateRequest,
    PtmInitRequest,
    PtmLocRequest,
    PtmResetEstRequest,
    PtmResult,
    PtmSetStateRequest,
    PtmStateFlag,
    by_name,
    host_abi,
)
from ioctl_defs.ioc import IocDir
from vtpm_cuse.control import Transport, capabilities
from vtpm_cuse.cuse.session import CuseOptions
from vtpm_cuse.device import READABLE, WRITABLE, VtpmDevice
from vtpm_cuse.vtpm import Vtpm

O_RDWR = os.O_RDWR
O_NONBLOCK_RW = os.O_RDWR | os.O_NONBLOCK
SHA256 = 0x000B
RC_INSUFFICIENT = 0x09A
RC_COMMAND_SIZE = 0x142
RC_FAILURE = 0x101
FATAL = bytes.fromhex("80010000000a00000101")


def tpm_cmd(code: int, body: bytes = b"", tag: int = 0x8001) -> bytes:
    return struct.pack(">HII", tag, 10 + len(body), code) + body


STARTUP_CLEAR = tpm_cmd(0x144, struct.pack(">H", 0))
GET_RANDOM_8 = tpm_cmd(0x17B, struct.pack(">H", 8))


def pcr_extend(pcr: int, digest: bytes) -> bytes:
    session = struct.pack(">IHBH", 0x40000009, 0, 0, 0)
    body = struct.pack(">I", pcr) + struct.pack(">I", len(session)) + session + struct.pack(">IH", 1, SHA256) + digest
    return tpm_cmd(0x182, body, tag=0x8002)


def rc(response: bytes) -> int:
    return struct.unpack_from(">I", response, 6)[0]


@dataclass
class Dev:
    """One open file on the simulated device."""

    h: Harness
    fh: int
    device: VtpmDevice
    vtpm: Vtpm
    terminated: trio.Event

    async def write(self, data: bytes, flags: int = O_RDWR) -> int:
        reply = await self.h.peer.reply_to(await self.h.peer.write(self.fh, data, flags))
        if reply.error:
            return reply.error
        return WRITE_OUT.unpack(reply.body)[0]

    async def read(self, size: int = 4096, flags: int = O_RDWR) -> bytes | int:
        reply = await self.h.peer.reply_to(await self.h.peer.read(self.fh, size, flags))
        return reply.error if reply.error else reply.body

    async def command(self, data: bytes) -> bytes:
        assert await self.write(data) == len(data)
        response = await self.read()
        assert isinstance(response, bytes)
        return response

    async def poll(self, events: int = READABLE, kh: int = 7, flags: int = 0) -> int:
        reply = await self.h.peer.reply_to(await self.h.peer.poll(self.fh, kh, flags, events))
        assert reply.error == 0, reply
        return POLL_OUT.unpack(reply.body)[0]

    async def raw_ioctl(self, cmd: int, in_data: bytes = b"", out_size: int = 0, flags: int = 0) -> Message:
        return await self.h.peer.reply_to(await self.h.peer.ioctl(self.fh, cmd, 0, in_data, out_size, flags))

    async def ioctl(self, name: str, request: Part | None = None, abi: Abi | None = None, flags: int = 0) -> Part:
        """An ioctl as the kernel forwards it in restricted mode (sizes from the number)."""
        abi = abi or host_abi()
        spec = by_name(name)
        size = spec.ioctl_size(abi)
        in_data = b""
        if spec.direction & IocDir.WRITE:
            in_data = (request or spec.request()).pack_ioctl(abi)
        reply = await self.raw_ioctl(spec.ioctl_number(abi), in_data, size, flags)
        assert reply.error == 0, f"{name}: errno {-reply.error}"
        result, _, _, _ = IOCTL_OUT.unpack_from(reply.body)
        assert result == 0
        body = reply.body[IOCTL_OUT.size :]
        assert len(body) == size, (name, len(body), size)
        return spec.response.unpack_ioctl(body, abi)


@asynccontextmanager
async def open_device(tmp_path: Path, *, init: bool = True, startup: bool = True) -> AsyncIterator[Dev]:
    vtpm = Vtpm(tmp_path / "state")
    terminated = trio.Event()
    async with trio.open_nursery() as background:
        device = VtpmDevice(vtpm, nursery=background, on_terminate=terminated.set)
        async with cuse_server(device, CuseOptions("vtpm-test")) as h:
            dev = Dev(h, await h.peer.call_open(), device, vtpm, terminated)
            if init:
                assert (await dev.ioctl("PTM_INIT", PtmInitRequest(0))).tpm_result == 0
                if startup:
                    assert rc(await dev.command(STARTUP_CLEAR)) == 0
            yield dev
        background.cancel_scope.cancel()


def gate_execute(vtpm: Vtpm) -> trio.Event:
    """Make vtpm.execute wait for the returned event: a command that 'runs' until set."""
    gate = trio.Event()
    real = vtpm.execute

    async def gated(command: bytes) -> bytes:
        await gate.wait()
        return await real(command)

    vtpm.execute = gated  # type: ignore[method-assign]
    vtpm.execute_inline = lambda command: None  # type: ignore[method-assign]  # a long command: never inline
    return gate


# --- open / release -----------------------------------------------------------------------


@trio_test
async def test_one_opener_at_a_time(tmp_path: Path) -> None:
    async with open_device(tmp_path, init=False) as dev:
        second = await dev.h.peer.reply_to(await dev.h.peer.open())
        assert second.error == -errno.EBUSY
        await dev.h.peer.reply_to(await dev.h.peer.release(dev.fh))
        fh = await dev.h.peer.call_open()
        assert fh != dev.fh


@trio_test
async def test_release_forgets_the_unread_response(tmp_path: Path) -> None:
    async with open_device(tmp_path) as dev:
        assert await dev.write(GET_RANDOM_8) == len(GET_RANDOM_8)
        await dev.h.peer.reply_to(await dev.h.peer.release(dev.fh))
        dev.fh = await dev.h.peer.call_open()
        assert await dev.read() == b""


# --- write / read ---------------------------------------------------------------------------


@trio_test
async def test_before_init_every_command_gets_the_fatal_error_response(tmp_path: Path) -> None:
    async with open_device(tmp_path, init=False) as dev:
        assert await dev.command(STARTUP_CLEAR) == FATAL
        assert (await dev.ioctl("PTM_GET_TPMESTABLISHED")).tpm_result == PtmResult.TPM_BAD_ORDINAL


@trio_test
async def test_partial_reads_then_eof(tmp_path: Path) -> None:
    async with open_device(tmp_path) as dev:
        assert await dev.write(GET_RANDOM_8) == len(GET_RANDOM_8)
        head = await dev.read(4)
        rest = await dev.read(6)
        tail = await dev.read(100)
        assert isinstance(head, bytes) and isinstance(rest, bytes) and isinstance(tail, bytes)
        response = head + rest + tail
        assert len(head) == 4 and len(rest) == 6
        assert struct.unpack_from(">HII", response) == (0x8001, 20, 0) and len(response) == 20
        assert await dev.read() == b""  # EOF once consumed
        assert await dev.read() == b""  # and again: never blocks


@trio_test
async def test_read_without_a_command_is_eof(tmp_path: Path) -> None:
    async with open_device(tmp_path) as dev:
        assert await dev.read() == b""
        assert await dev.read(flags=O_NONBLOCK_RW) == b""


@trio_test
async def test_a_new_write_discards_the_unread_tail(tmp_path: Path) -> None:
    async with open_device(tmp_path) as dev:
        assert await dev.write(GET_RANDOM_8) == len(GET_RANDOM_8)
        assert len(await dev.read(8)) == 8  # type: ignore[arg-type]
        response = await dev.command(tpm_cmd(0x17B, struct.pack(">H", 4)))
        assert struct.unpack_from(">HII", response) == (0x8001, 16, 0) and len(response) == 16


@trio_test
async def test_a_short_command_is_answered_with_insufficient(tmp_path: Path) -> None:
    async with open_device(tmp_path) as dev:
        response = await dev.command(b"\x80\x01\x00\x00")
        assert len(response) == 10 and rc(response) == RC_INSUFFICIENT


@trio_test
async def test_quirk_overlong_command_is_consumed_and_answered_command_size(tmp_path: Path) -> None:
    """swtpm cuts a write at 4096 bytes and returns a short count; we take it all."""
    async with open_device(tmp_path) as dev:
        big = tpm_cmd(0x17B, bytes(5000))
        assert await dev.write(big) == len(big)
        response = await dev.read()
        assert isinstance(response, bytes) and len(response) == 10 and rc(response) == RC_COMMAND_SIZE
        assert await dev.read() == b""
        # the device is not confused afterwards
        assert rc(await dev.command(GET_RANDOM_8)) == 0


# --- a running command: EBUSY, EAGAIN, blocking read, poll -----------------------------------


@trio_test
async def test_while_a_command_runs(tmp_path: Path) -> None:
    async with open_device(tmp_path) as dev:
        gate = gate_execute(dev.vtpm)
        assert await dev.poll(READABLE | WRITABLE) == WRITABLE  # nothing pending yet
        assert await dev.write(GET_RANDOM_8, O_NONBLOCK_RW) == len(GET_RANDOM_8)  # returns at once
        assert await dev.write(GET_RANDOM_8) == -errno.EBUSY
        assert await dev.read(flags=O_NONBLOCK_RW) == -errno.EAGAIN
        assert await dev.poll(READABLE, kh=9, flags=POLL_SCHEDULE_NOTIFY) == 0
        # ioctls that need no TPM are still answered
        assert (await dev.ioctl("PTM_GET_CAPABILITY")).caps == capabilities(Transport.CUSE)
        gate.set()
        notify = await dev.h.peer.recv()
        assert (notify.unique, notify.error) == (0, NOTIFY_POLL), notify
        assert NOTIFY_POLL_WAKEUP_OUT.unpack(notify.body) == (9,)
        assert await dev.poll(READABLE | WRITABLE) == READABLE | WRITABLE
        response = await dev.read(flags=O_NONBLOCK_RW)
        assert isinstance(response, bytes) and rc(response) == 0 and len(response) == 20
        assert await dev.poll(READABLE | WRITABLE) == WRITABLE


@trio_test
async def test_blocking_read_waits_for_the_command_and_interrupt_gives_eintr(tmp_path: Path) -> None:
    async with open_device(tmp_path) as dev:
        gate = gate_execute(dev.vtpm)
        assert await dev.write(GET_RANDOM_8, O_NONBLOCK_RW) == len(GET_RANDOM_8)
        waiting = await dev.h.peer.read(dev.fh, 4096)
        await dev.h.peer.expect_silence()
        await dev.h.peer.interrupt(waiting)
        assert (await dev.h.peer.reply_to(waiting)).error == -errno.EINTR
        blocked = await dev.h.peer.read(dev.fh, 4096)
        await dev.h.peer.expect_silence()
        gate.set()
        reply = await dev.h.peer.reply_to(blocked)
        assert reply.error == 0 and rc(reply.body) == 0 and len(reply.body) == 20


@trio_test
async def test_close_during_a_command_leaves_no_response_for_the_next_opener(tmp_path: Path) -> None:
    async with open_device(tmp_path) as dev:
        gate = gate_execute(dev.vtpm)
        assert await dev.write(GET_RANDOM_8, O_NONBLOCK_RW) == len(GET_RANDOM_8)
        await dev.h.peer.reply_to(await dev.h.peer.release(dev.fh))
        dev.fh = await dev.h.peer.call_open()
        assert await dev.write(GET_RANDOM_8) == -errno.EBUSY  # the old command still runs
        gate.set()
        assert await dev.read() == b""  # waited for it; its response went with the old file
        assert rc(await dev.command(GET_RANDOM_8)) == 0


@trio_test
async def test_blocking_write_returns_with_the_response_ready(tmp_path: Path) -> None:
    async with open_device(tmp_path) as dev:
        assert await dev.write(GET_RANDOM_8) == len(GET_RANDOM_8)
        assert await dev.poll(READABLE) == READABLE | WRITABLE


# --- ioctls -------------------------------------------------------------------------------------


@trio_test
async def test_get_capability_is_a_bare_u64(tmp_path: Path) -> None:
    async with open_device(tmp_path, init=False) as dev:
        spec = by_name("PTM_GET_CAPABILITY")
        reply = await dev.raw_ioctl(spec.ioctl_number(), b"", 8)
        assert reply.error == 0
        assert reply.body == IOCTL_OUT.pack(0, 0, 0, 0) + struct.pack("=Q", 0x16FFF)


@trio_test
async def test_set_datafd_and_unknown_ioctls_are_einval(tmp_path: Path) -> None:
    async with open_device(tmp_path, init=False) as dev:
        datafd = by_name("PTM_SET_DATAFD").ioctl_number()
        assert (await dev.raw_ioctl(datafd, b"", 4)).error == -errno.EINVAL
        assert (await dev.raw_ioctl(0x80085099, b"", 8)).error == -errno.EINVAL
        assert (await dev.raw_ioctl(0xC0045001, b"\x01", 4)).error == -errno.EINVAL  # INIT, short input


@trio_test
async def test_get_info_answers_both_abis(tmp_path: Path) -> None:
    async with open_device(tmp_path, init=False) as dev:
        native = await dev.ioctl("PTM_GET_INFO", PtmGetInfoRequest(flags=1, offset=0))
        compat = await dev.ioctl(
            "PTM_GET_INFO", PtmGetInfoRequest(flags=1, offset=0), abi=I386, flags=IOCTL_COMPAT | IOCTL_32BIT
        )
        assert native.tpm_result == compat.tpm_result == 0
        assert native.buffer == compat.buffer and b'"TPMSpecification"' in native.buffer


@trio_test
async def test_every_ptm_ioctl_is_answered(tmp_path: Path) -> None:
    async with open_device(tmp_path) as dev:
        assert (await dev.ioctl("PTM_SET_LOCALITY", PtmLocRequest(3))).tpm_result == 0
        assert (await dev.ioctl("PTM_SET_LOCALITY", PtmLocRequest(5))).tpm_result == PtmResult.TPM_BAD_LOCALITY
        assert (await dev.ioctl("PTM_SET_LOCALITY", PtmLocRequest(0))).tpm_result == 0
        for name in ("PTM_HASH_START", "PTM_HASH_END", "PTM_CANCEL_TPM_CMD", "PTM_STORE_VOLATILE"):
            assert (await dev.ioctl(name)).tpm_result == 0, name
        assert (await dev.ioctl("PTM_GET_TPMESTABLISHED")).bit == 1
        assert (await dev.ioctl("PTM_RESET_TPMESTABLISHED", PtmResetEstRequest(3))).tpm_result == 0
        assert (await dev.ioctl("PTM_GET_TPMESTABLISHED")).bit == 0
        assert (await dev.ioctl("PTM_GET_CONFIG")).flags == 0
        assert (await dev.ioctl("PTM_SET_BUFFERSIZE")).buffersize == 4096
        assert (await dev.ioctl("PTM_LOCK_STORAGE")).tpm_result == 0


@trio_test
async def test_quirk_reset_established_above_locality_4_answers_bad_locality(tmp_path: Path) -> None:
    """swtpm's CUSE server never replies to this; the caller hung."""
    async with open_device(tmp_path) as dev:
        reply = await dev.ioctl("PTM_RESET_TPMESTABLISHED", PtmResetEstRequest(5))
        assert reply.tpm_result == PtmResult.TPM_BAD_LOCALITY == 0x3D


@trio_test
async def test_quirk_read_after_stop_is_eof(tmp_path: Path) -> None:
    """swtpm frees the response at STOP but keeps its length: a read touched freed memory."""
    async with open_device(tmp_path) as dev:
        assert await dev.write(GET_RANDOM_8) == len(GET_RANDOM_8)
        assert len(await dev.read(4)) == 4  # type: ignore[arg-type]
        assert (await dev.ioctl("PTM_STOP")).tpm_result == 0
        assert await dev.read() == b""
        assert await dev.command(GET_RANDOM_8) == FATAL


@trio_test
async def test_shutdown_replies_then_terminates(tmp_path: Path) -> None:
    async with open_device(tmp_path) as dev:
        assert not dev.terminated.is_set()
        assert (await dev.ioctl("PTM_SHUTDOWN")).tpm_result == 0
        assert dev.terminated.is_set() and not dev.vtpm.running


# --- state blobs ---------------------------------------------------------------------------------


async def get_blob_by_ioctls(dev: Dev, kind: int) -> bytes:
    blob = b""
    while True:
        reply = await dev.ioctl(
            "PTM_GET_STATEBLOB",
            PtmGetStateRequest(state_flags=PtmStateFlag.PTM_STATE_FLAG_DECRYPTED, type=kind, offset=len(blob)),
        )
        assert reply.tpm_result == 0
        blob += reply.data
        if len(blob) >= reply.totlength:
            return blob


async def set_blob_by_ioctls(dev: Dev, kind: int, data: bytes) -> None:
    """Chunks of exactly 3072 bytes say "more follows"; the first shorter one commits."""
    for start in range(0, len(data) + 1, PTM_STATE_BLOB_SIZE):
        reply = await dev.ioctl(
            "PTM_SET_STATEBLOB",
            PtmSetStateRequest(state_flags=0, type=kind, data=data[start : start + PTM_STATE_BLOB_SIZE]),
        )
        assert reply.tpm_result == 0


async def get_blob_by_read(dev: Dev, kind: int, offset: int = 0, bufsize: int = 1000) -> tuple[bytes, int]:
    reply = await dev.ioctl(
        "PTM_GET_STATEBLOB",
        PtmGetStateRequest(state_flags=PtmStateFlag.PTM_STATE_FLAG_DECRYPTED, type=kind, offset=offset),
    )
    assert reply.tpm_result == 0
    data = reply.data
    while offset + len(data) < reply.totlength:
        chunk = await dev.read(bufsize)
        assert isinstance(chunk, bytes) and chunk, chunk
        data += chunk
    return data, reply.totlength


@trio_test
async def test_state_blobs_by_ioctl_chunks_and_by_read_write(tmp_path: Path) -> None:
    async with open_device(tmp_path) as dev:
        assert rc(await dev.command(pcr_extend(16, bytes(range(32))))) == 0
        permanent = PtmBlobType.PTM_BLOB_TYPE_PERMANENT
        by_ioctl = await get_blob_by_ioctls(dev, permanent)
        by_read, total = await get_blob_by_read(dev, permanent)
        # Two snapshots: the clock moves on between them, so their sizes may differ (the
        # clock is a decimal number in the blob); each transfer delivers its own total,
        # and both carry the same swtpm blob framing.
        assert len(by_read) == total and by_ioctl[:4] == by_read[:4]
        assert await dev.read() == b""  # the transfer ended with the blob
        volatile, _ = await get_blob_by_read(dev, PtmBlobType.PTM_BLOB_TYPE_VOLATILE, bufsize=700)
        assert (await dev.ioctl("PTM_STOP")).tpm_result == 0

        await set_blob_by_ioctls(dev, permanent, by_ioctl)
        # SET by write(): length-0 ioctl opens, writes append, length-0 ioctl commits
        kind = PtmBlobType.PTM_BLOB_TYPE_VOLATILE
        assert (await dev.ioctl("PTM_SET_STATEBLOB", PtmSetStateRequest(0, kind, b""))).tpm_result == 0
        for start in range(0, len(volatile), 500):
            assert await dev.write(volatile[start : start + 500]) == len(volatile[start : start + 500])
        assert (await dev.ioctl("PTM_SET_STATEBLOB", PtmSetStateRequest(0, kind, b""))).tpm_result == 0
        assert (await dev.ioctl("PTM_INIT", PtmInitRequest(0))).tpm_result == 0
        # resumed from the volatile blob: no Startup needed, PCR 16 kept
        assert rc(await dev.command(GET_RANDOM_8)) == 0


@trio_test
async def test_quirk_read_continuation_after_a_nonzero_offset(tmp_path: Path) -> None:
    """swtpm resumes read() at the chunk length, i.e. as if the ioctl had been at offset 0.
    All chunks of one transfer come from one snapshot (the volatile blob is > 3072 bytes)."""
    async with open_device(tmp_path) as dev:
        kind = PtmBlobType.PTM_BLOB_TYPE_VOLATILE

        async def chunk(offset: int) -> Part:
            reply = await dev.ioctl("PTM_GET_STATEBLOB", PtmGetStateRequest(0, kind, offset))
            assert reply.tpm_result == 0
            return reply

        first = await chunk(0)
        total = first.totlength
        assert total > 3 * PTM_STATE_BLOB_SIZE - 1000, total
        known = first.data + (await chunk(PTM_STATE_BLOB_SIZE)).data
        offset = 1000
        again = await chunk(offset)
        assert again.data == known[offset : offset + PTM_STATE_BLOB_SIZE]  # same snapshot
        resume = offset + len(again.data)
        rest = b""
        while resume + len(rest) < total:
            piece = await dev.read(1500)
            assert isinstance(piece, bytes) and piece
            rest += piece
        assert len(rest) == total - resume
        assert rest[: len(known) - resume] == known[resume:]
        assert await dev.read() == b""


def pcr_read(pcr: int) -> bytes:
    select_bits = bytearray(3)
    select_bits[pcr // 8] |= 1 << (pcr % 8)
    return tpm_cmd(0x17E, struct.pack(">IHB", 1, SHA256, 3) + bytes(select_bits))


async def read_pcr(dev: Dev, pcr: int) -> bytes:
    response = await dev.command(pcr_read(pcr))
    assert rc(response) == 0
    (size,) = struct.unpack_from(">H", response, 28)
    return response[30 : 30 + size]


@trio_test
async def test_quirk_no_stale_blob_cache(tmp_path: Path) -> None:
    """swtpm hands out the cached blob of an earlier GET of the same type; the second
    GET here must carry the PCR extended in between."""
    async with open_device(tmp_path) as dev:
        kind = PtmBlobType.PTM_BLOB_TYPE_VOLATILE
        await get_blob_by_ioctls(dev, kind)
        digest = bytes(range(32))
        assert rc(await dev.command(pcr_extend(16, digest))) == 0
        extended = await read_pcr(dev, 16)
        assert extended == hashlib.sha256(bytes(32) + digest).digest()
        second = await get_blob_by_ioctls(dev, kind)
        assert (await dev.ioctl("PTM_STOP")).tpm_result == 0
        await set_blob_by_ioctls(dev, kind, second)
        assert (await dev.ioctl("PTM_INIT", PtmInitRequest(0))).tpm_result == 0
        assert await read_pcr(dev, 16) == extended


@trio_test
async def test_wrong_direction_during_a_blob_transfer_is_eio(tmp_path: Path) -> None:
    async with open_device(tmp_path) as dev:
        kind = PtmBlobType.PTM_BLOB_TYPE_PERMANENT
        reply = await dev.ioctl("PTM_GET_STATEBLOB", PtmGetStateRequest(0, kind, 0))
        if len(reply.data) < reply.totlength:
            assert await dev.write(GET_RANDOM_8) == -errno.EIO
        assert rc(await dev.command(GET_RANDOM_8)) == 0
        assert (await dev.ioctl("PTM_STOP")).tpm_result == 0
        assert (await dev.ioctl("PTM_SET_STATEBLOB", PtmSetStateRequest(0, kind, b""))).tpm_result == 0
        assert await dev.read() == -errno.EIO
        assert await dev.read() == b""  # the transfer is over
