"""The CUSE session's data thread against the simulated kernel (tests/cuse_peer.py).

What the split between the data thread and trio promises a device (vtpm_cuse.cuse.device):
its ``*_now`` methods are tried first and never overlap its async methods; a device
without them is served entirely on trio; the thread ends with the session.
"""

from __future__ import annotations

import errno
import os
import select
import threading

import trio
from cuse_peer import (
    IN_HEADER,
    OP_OPEN,
    OP_WRITE,
    OPEN_IN,
    POLL_OUT,
    POLL_SCHEDULE_NOTIFY,
    WRITE_IN,
    WRITE_OUT,
    cuse_server,
    error_reply,
    ok_reply,
    trio_test,
)

from vtpm_cuse.cuse.device import CuseDevice, NotifyPoll, PollWaiters
from vtpm_cuse.cuse.echo import EchoDevice
from vtpm_cuse.cuse.protocol import PollFlags
from vtpm_cuse.cuse.session import CuseOptions

O_NONBLOCK_RW = os.O_RDWR | os.O_NONBLOCK


class AsyncOnlyDevice(CuseDevice):
    """A device that implements only the async interface: one shared byte buffer."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.changed = trio.Event()
        self.waiters = PollWaiters()

    async def open(self, flags: int) -> int:
        await trio.lowlevel.checkpoint()
        return 5

    async def read(self, fh: int, size: int, nonblock: bool) -> bytes:
        while not self.data:
            if nonblock:
                raise OSError(errno.EAGAIN, "empty")
            await self.changed.wait()
        out = bytes(self.data[:size])
        del self.data[:size]
        return out

    async def write(self, fh: int, data: bytes, nonblock: bool) -> int:
        self.data += data
        self.changed.set()
        self.changed = trio.Event()
        self.waiters.wake()
        return len(data)

    async def poll(self, fh: int, kh: int, flags: PollFlags, events: int, notify_poll: NotifyPoll) -> int:
        if self.data:
            return select.POLLIN
        if flags & PollFlags.SCHEDULE_NOTIFY:
            self.waiters.add(kh, notify_poll)
        return 0


@trio_test
async def test_a_device_without_fast_path_is_served_on_trio() -> None:
    async with cuse_server(AsyncOnlyDevice(), CuseOptions("vtpm-async-only")) as h:
        peer = h.peer
        fh = await peer.call_open()
        assert fh == 5
        assert (await peer.reply_to(await peer.read(fh, 16, O_NONBLOCK_RW))).error == -errno.EAGAIN
        p = await peer.poll(fh, kh=3, flags=POLL_SCHEDULE_NOTIFY, events=select.POLLIN)
        assert (await peer.reply_to(p)).raw == ok_reply(p, POLL_OUT.pack(0, 0))
        blocked = await peer.read(fh, 16)
        await peer.expect_silence()
        w = await peer.write(fh, b"abc")
        assert (await peer.reply_to(w)).raw == ok_reply(w, WRITE_OUT.pack(3, 0))
        assert (await peer.reply_to(blocked)).raw == ok_reply(blocked, b"abc")
        notify = await peer.recv()
        assert (notify.unique, notify.error) == (0, 1)
        r = await peer.release(fh)
        assert (await peer.reply_to(r)).raw == ok_reply(r)


class OverlapCheckingEcho(EchoDevice):
    """An echo device that records every ``*_now`` call made while an async call runs,
    and on which thread each kind of call ran."""

    def __init__(self) -> None:
        super().__init__()
        self.async_running = 0
        self.overlaps: list[str] = []
        self.threads: dict[str, set[str]] = {"now": set(), "async": set()}

    def _now(self, name: str) -> None:
        self.threads["now"].add(threading.current_thread().name)
        if self.async_running:
            self.overlaps.append(name)

    def read_now(self, fh: int, size: int, nonblock: bool) -> bytes | None:
        if threading.current_thread() is not threading.main_thread():
            self._now("read_now")
        return super().read_now(fh, size, nonblock)

    def write_now(self, fh: int, data: bytes, nonblock: bool) -> int | None:
        if threading.current_thread() is not threading.main_thread():
            self._now("write_now")
        return super().write_now(fh, data, nonblock)

    async def read(self, fh: int, size: int, nonblock: bool) -> bytes:
        self.threads["async"].add(threading.current_thread().name)
        self.async_running += 1
        try:
            return await super().read(fh, size, nonblock)
        finally:
            self.async_running -= 1

    async def write(self, fh: int, data: bytes, nonblock: bool) -> int:
        self.threads["async"].add(threading.current_thread().name)
        self.async_running += 1
        try:
            return await super().write(fh, data, nonblock)
        finally:
            self.async_running -= 1


@trio_test
async def test_fast_path_never_overlaps_a_request_served_on_trio() -> None:
    device = OverlapCheckingEcho()
    async with cuse_server(device, CuseOptions("vtpm-overlap")) as h:
        peer = h.peer
        reader, writer = await peer.call_open(), await peer.call_open()
        for round_ in range(20):
            w = await peer.write(writer, b"x")
            assert (await peer.reply_to(w)).error == 0
            r = await peer.read(reader, 1)
            assert (await peer.reply_to(r)).raw == ok_reply(r, b"x")
            # a read that waits goes to trio; everything after it follows it there
            blocked = await peer.read(reader, 8)
            nonblocking = await peer.read(writer, 8, O_NONBLOCK_RW)
            if round_ % 2:
                await peer.interrupt(blocked)
                assert (await peer.reply_to(blocked)).raw == error_reply(blocked, errno.EINTR)
                assert (await peer.reply_to(nonblocking)).raw == error_reply(nonblocking, errno.EAGAIN)
                continue
            w = await peer.write(writer, b"later")
            assert (await peer.reply_to(blocked)).raw == ok_reply(blocked, b"later")
            assert (await peer.reply_to(nonblocking)).raw == error_reply(nonblocking, errno.EAGAIN)
            assert (await peer.reply_to(w)).raw == ok_reply(w, WRITE_OUT.pack(5, 0))
    assert device.overlaps == []
    assert device.threads == {"now": {"cuse-data"}, "async": {threading.main_thread().name}}


def _data_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "cuse-data"]


@trio_test
async def test_the_data_thread_ends_with_the_session() -> None:
    before = len(_data_threads())
    async with cuse_server(EchoDevice(), CuseOptions("vtpm-thread-end")) as h:
        assert len(_data_threads()) == before + 1
        blocked = await h.peer.read(await h.peer.call_open(), 8)  # in flight when cancelled
        await h.peer.expect_silence()
        assert blocked
    assert len(_data_threads()) == before


@trio_test
async def test_requests_with_id_0_are_dropped_unanswered() -> None:
    """Id 0 is the notification id: a reply carrying it would be taken for a notification."""
    async with cuse_server(EchoDevice(), CuseOptions("vtpm-id-zero")) as h:
        peer = h.peer
        fh = await peer.call_open()
        data = b"never"
        write_in = WRITE_IN.pack(fh, 0, len(data), 0, 0, os.O_RDWR, 0) + data
        await peer.send_raw(IN_HEADER.pack(IN_HEADER.size + len(write_in), OP_WRITE, 0, 0, 0, 0, 1, 0, 0) + write_in)
        open_in = OPEN_IN.pack(os.O_RDWR, 0)
        await peer.send_raw(IN_HEADER.pack(IN_HEADER.size + len(open_in), OP_OPEN, 0, 0, 0, 0, 1, 0, 0) + open_in)
        await peer.expect_silence()
        r = await peer.read(fh, 16, O_NONBLOCK_RW)
        assert (await peer.reply_to(r)).raw == error_reply(r, errno.EAGAIN)  # the write did not happen
