"""The CUSE protocol layer against a simulated kernel (tests/cuse_peer.py).

Replies are compared byte for byte with layouts written out independently in
cuse_peer, so a wrong struct in vtpm_cuse.cuse.protocol shows up here.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct

import pytest
import trio
from cuse_peer import (
    CUSE_INIT_OUT,
    IN_HEADER,
    IOCTL_32BIT,
    IOCTL_COMPAT,
    IOCTL_OUT,
    NOTIFY_POLL_WAKEUP_OUT,
    OP_CUSE_INIT,
    OP_GETATTR,
    OP_INIT,
    OP_OPEN,
    OP_READ,
    OPEN_OUT,
    OUT_HEADER,
    POLL_OUT,
    POLL_SCHEDULE_NOTIFY,
    READ_IN,
    WRITE_OUT,
    KernelPeer,
    cuse_server,
    error_reply,
    ok_reply,
    trio_test,
)

from ioctl_defs.ioc import IocDir, IocFields, decode, io, ior, iow, iowr
from vtpm_cuse.cuse import protocol
from vtpm_cuse.cuse.device import CuseDevice, NotifyPoll
from vtpm_cuse.cuse.echo import ECHO_IOC_CLEAR, ECHO_IOC_COUNTER, ECHO_IOC_INCREMENT, EchoDevice
from vtpm_cuse.cuse.protocol import CuseProtocolError, IoctlFlags, PollFlags
from vtpm_cuse.cuse.session import MAX_IDLE_WORKERS, CuseOptions, CuseSession

U64 = struct.Struct("=Q")
READY_IN_OUT = select.POLLIN | select.POLLRDNORM | select.POLLOUT | select.POLLWRNORM
READY_OUT = select.POLLOUT | select.POLLWRNORM


def echo_options(**kwargs: int) -> CuseOptions:
    return CuseOptions("vtpm-echo-test", **kwargs)


# --- wire layout -------------------------------------------------------------------------


def test_struct_sizes_match_the_kernel_abi() -> None:
    sizes = {
        protocol.InHeader: 40,
        protocol.OutHeader: 16,
        protocol.CuseInitIn: 16,
        protocol.CuseInitOut: 72,
        protocol.OpenIn: 8,
        protocol.OpenOut: 16,
        protocol.ReadIn: 40,
        protocol.WriteIn: 40,
        protocol.WriteOut: 8,
        protocol.ReleaseIn: 24,
        protocol.FlushIn: 24,
        protocol.FsyncIn: 16,
        protocol.InterruptIn: 8,
        protocol.IoctlIn: 32,
        protocol.IoctlOut: 16,
        protocol.PollIn: 24,
        protocol.PollOut: 8,
        protocol.NotifyPollWakeupOut: 8,
    }
    assert {cls.__name__: cls.SIZE for cls in sizes} == {cls.__name__: n for cls, n in sizes.items()}


def test_opcodes_and_flags_have_the_kernel_values() -> None:
    op = protocol.Opcode
    assert (
        op.CUSE_INIT,
        op.OPEN,
        op.READ,
        op.WRITE,
        op.RELEASE,
        op.FSYNC,
        op.FLUSH,
        op.INTERRUPT,
        op.DESTROY,
        op.IOCTL,
        op.POLL,
    ) == (4096, 14, 15, 16, 18, 20, 25, 36, 38, 39, 40)
    assert (
        protocol.FUSE_IOCTL_COMPAT,
        protocol.FUSE_IOCTL_UNRESTRICTED,
        protocol.FUSE_IOCTL_RETRY,
        protocol.FUSE_IOCTL_32BIT,
        protocol.FUSE_IOCTL_DIR,
        protocol.FUSE_IOCTL_COMPAT_X32,
    ) == (1, 2, 4, 8, 16, 32)
    assert protocol.FUSE_POLL_SCHEDULE_NOTIFY == 1
    assert protocol.FUSE_NOTIFY_POLL == 1
    assert protocol.CUSE_UNRESTRICTED_IOCTL == 1


def test_ioctl_numbers_follow_the_generic_ioc_encoding() -> None:
    assert ior("E", 0, 8) == 0x80084500
    assert iow("E", 1, 4) == 0x40044501
    assert iowr("E", 1, 8) == 0xC0084501
    assert io("E", 2) == 0x4502
    # PTM_GET_CAPABILITY from swtpm's tpm_ioctl.h is _IOR('P', 0, ptm_cap) with an 8-byte ptm_cap
    assert ior("P", 0, 8) == 0x80085000
    assert decode(0xC0084501) == IocFields(IocDir.READ | IocDir.WRITE, ord("E"), 1, 8)
    with pytest.raises(ValueError, match="16384"):
        ior("E", 0, 16384)


def test_parse_request_refuses_bad_framing_with_named_values() -> None:
    good = IN_HEADER.pack(48, OP_OPEN, 6, 0, 0, 0, 1, 0, 0) + struct.pack("=II", 2, 0)
    assert protocol.parse_request(good).body == protocol.OpenIn(flags=2, open_flags=0)
    with pytest.raises(protocol.MalformedRequest, match="header len 99 but 48") as bad_len:
        protocol.parse_request(IN_HEADER.pack(99, OP_OPEN, 6, 0, 0, 0, 1, 0, 0) + bytes(8))
    assert (bad_len.value.unique, bad_len.value.errno) == (6, errno.EIO)
    with pytest.raises(protocol.MalformedRequest, match="ReadIn needs 40") as short:
        protocol.parse_request(IN_HEADER.pack(50, OP_READ, 8, 0, 0, 0, 1, 0, 0) + bytes(10))
    assert (short.value.unique, short.value.errno) == (8, errno.EINVAL)
    with pytest.raises(protocol.MalformedRequest) as tiny:
        protocol.parse_request(b"\x01\x02")
    assert tiny.value.unique is None


def test_error_replies_outside_the_kernel_range_are_refused() -> None:
    assert protocol.encode_error(10, errno.ENOSYS) == error_reply(10, errno.ENOSYS)
    with pytest.raises(ValueError, match="errno 512"):
        protocol.encode_error(10, 512)


def test_options_validate_names_and_size_the_read_buffer() -> None:
    with pytest.raises(ValueError, match="'a/b'"):
        CuseOptions("a/b")
    with pytest.raises(ValueError, match="dev_major 5000"):
        CuseOptions("x", dev_major=5000)
    assert CuseOptions("x", max_write=131072).read_buffer_size == 40 + 40 + 131072
    # max_write is raised to 4096 by the kernel; a 16 KiB ioctl must still fit
    assert CuseOptions("x", max_write=100).read_buffer_size == max(8192, 40 + 32 + 16383)
    assert CuseOptions("vtpm0").devinfo == b"DEVNAME=vtpm0\0"


# --- handshake ---------------------------------------------------------------------------


@trio_test
async def test_cuse_init_reply_is_exact() -> None:
    options = CuseOptions("vtpm-x", dev_major=240, dev_minor=7, max_read=65536, max_write=32768)
    async with cuse_server(EchoDevice(), options) as h:
        reply = h.init_reply
        assert reply is not None
        devinfo = b"DEVNAME=vtpm-x\0"
        init_out = CUSE_INIT_OUT.pack(7, 38, 0, 0, 65536, 32768, 240, 7)
        assert reply.raw == OUT_HEADER.pack(16 + 72 + len(devinfo), 0, 2) + init_out + devinfo
        assert h.session.kernel_version == (7, 38)


@pytest.mark.parametrize(("offered", "replied"), [(11, 11), (31, 31), (38, 38), (45, 38)])
@trio_test
async def test_cuse_init_replies_with_the_lower_minor(offered: int, replied: int) -> None:
    async with cuse_server(EchoDevice(), echo_options(), kernel_minor=offered) as h:
        assert h.init_reply is not None
        major, minor, _unused, flags = struct.unpack_from("=IIII", h.init_reply.body)
        assert (major, minor, flags) == (7, replied, 0)


async def _handshake_against(first_message: bytes) -> tuple[bytes, BaseException | None]:
    server_sock, kernel_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with server_sock, kernel_sock:
        kernel_sock.send(first_message)
        session = CuseSession(server_sock.fileno(), EchoDevice(), echo_options())
        failure: BaseException | None = None
        try:
            with trio.fail_after(5):
                await session.run()
        except CuseProtocolError as exc:
            failure = exc
        kernel_sock.setblocking(False)
        return kernel_sock.recv(4096), failure


@pytest.mark.parametrize(("major", "minor"), [(8, 38), (6, 38), (7, 10)])
@trio_test
async def test_cuse_init_refuses_unusable_kernel_versions(major: int, minor: int) -> None:
    init = IN_HEADER.pack(56, OP_CUSE_INIT, 2, 0, 0, 0, 0, 0, 0) + struct.pack("=IIII", major, minor, 0, 1)
    reply, failure = await _handshake_against(init)
    assert reply == error_reply(2, errno.EPROTO)
    assert failure is not None and f"{major}.{minor}" in str(failure)


@trio_test
async def test_first_request_must_be_cuse_init() -> None:
    reply, failure = await _handshake_against(IN_HEADER.pack(48, OP_OPEN, 2, 0, 0, 0, 0, 0, 0) + bytes(8))
    assert reply == error_reply(2, errno.EPROTO)
    assert failure is not None and "OPEN (14)" in str(failure)


# --- open / write / read / release ----------------------------------------------------------


@trio_test
async def test_open_write_read_release_bytes() -> None:
    async with cuse_server(EchoDevice(), echo_options()) as h:
        peer = h.peer
        u = await peer.open(os.O_RDWR)
        reply = await peer.reply_to(u)
        assert reply.raw == ok_reply(u, OPEN_OUT.pack(1, 0, 0))

        u = await peer.write(1, b"hello tpm")
        assert (await peer.reply_to(u)).raw == ok_reply(u, WRITE_OUT.pack(9, 0))

        u = await peer.read(1, 5)  # partial read: the rest stays buffered
        assert (await peer.reply_to(u)).raw == ok_reply(u, b"hello")
        u = await peer.read(1, 4096)
        assert (await peer.reply_to(u)).raw == ok_reply(u, b" tpm")

        u = await peer.release(1)
        assert (await peer.reply_to(u)).raw == ok_reply(u)
        u = await peer.read(1, 10)
        assert (await peer.reply_to(u)).raw == error_reply(u, errno.EBADF)


@trio_test
async def test_nonblocking_read_of_empty_device_is_eagain() -> None:
    async with cuse_server(EchoDevice(), echo_options()) as h:
        fh = await h.peer.call_open()
        u = await h.peer.read(fh, 100, flags=os.O_RDWR | os.O_NONBLOCK)
        assert (await h.peer.reply_to(u)).raw == error_reply(u, errno.EAGAIN)


@trio_test
async def test_max_write_request_is_received_whole() -> None:
    async with cuse_server(EchoDevice(), echo_options(max_write=65536)) as h:
        fh = await h.peer.call_open()
        data = bytes(range(256)) * 256
        u = await h.peer.write(fh, data)
        assert (await h.peer.reply_to(u)).raw == ok_reply(u, WRITE_OUT.pack(65536, 0))
        u = await h.peer.read(fh, 65536)
        assert (await h.peer.reply_to(u)).body == data


@trio_test
async def test_request_larger_than_the_buffer_is_refused_and_serving_continues() -> None:
    options = echo_options(max_write=4096)
    async with cuse_server(EchoDevice(), options) as h:
        fh = await h.peer.call_open()
        # A real kernel never sends this; over SEQPACKET it arrives truncated to the buffer.
        u = await h.peer.write(fh, bytes(options.read_buffer_size + 100))
        assert (await h.peer.reply_to(u)).raw == error_reply(u, errno.EIO)
        u = await h.peer.write(fh, b"ok")
        assert (await h.peer.reply_to(u)).raw == ok_reply(u, WRITE_OUT.pack(2, 0))


# --- blocking, interrupts, concurrency ------------------------------------------------------


@trio_test
async def test_interrupt_of_blocked_read_answers_eintr_while_ioctls_still_work() -> None:
    async with cuse_server(EchoDevice(), echo_options()) as h:
        peer = h.peer
        fh = await peer.call_open()
        blocked = await peer.read(fh, 64)
        await peer.expect_silence()

        # the device keeps answering ioctls and polls while the read waits
        u = await peer.ioctl(fh, ECHO_IOC_COUNTER, out_size=8)
        assert (await peer.reply_to(u)).raw == ok_reply(u, IOCTL_OUT.pack(0, 0, 0, 0) + U64.pack(1))
        u = await peer.poll(fh, kh=5)
        assert (await peer.reply_to(u)).raw == ok_reply(u, POLL_OUT.pack(READY_OUT, 0))

        await peer.interrupt(blocked)
        reply = await peer.recv()
        assert reply.raw == error_reply(blocked, errno.EINTR)
        await peer.expect_silence()  # the INTERRUPT itself gets no reply

        u = await peer.write(fh, b"still alive")
        assert (await peer.reply_to(u)).raw == ok_reply(u, WRITE_OUT.pack(11, 0))


@trio_test
async def test_forget_and_batch_forget_get_no_reply() -> None:
    """fuse.h: FORGET and BATCH_FORGET are never answered (found by tests/fuzz/target_cuse.py:
    the session answered ENOSYS, a reply for an id the kernel does not wait on)."""
    async with cuse_server(EchoDevice(), echo_options()) as h:
        peer = h.peer
        await peer.send(2, struct.pack("=Q", 1))  # FORGET(nlookup=1)
        await peer.send(42, struct.pack("=II", 0, 0))  # BATCH_FORGET(count=0)
        await peer.expect_silence()
        fh = await peer.call_open()  # and the session still serves
        assert fh


@trio_test
async def test_blocked_read_completes_when_another_opener_writes() -> None:
    async with cuse_server(EchoDevice(), echo_options()) as h:
        peer = h.peer
        reader = await peer.call_open()
        writer = await peer.call_open()
        assert writer != reader
        blocked = await peer.read(reader, 64)
        await peer.expect_silence()
        w = await peer.write(writer, b"wake up")
        assert (await peer.reply_to(blocked)).raw == ok_reply(blocked, b"wake up")
        assert (await peer.reply_to(w)).raw == ok_reply(w, WRITE_OUT.pack(7, 0))


@trio_test
async def test_more_blocked_requests_than_pooled_workers() -> None:
    async with cuse_server(EchoDevice(), echo_options()) as h:
        peer = h.peer
        reader = await peer.call_open()
        writer = await peer.call_open()
        count = MAX_IDLE_WORKERS + 4
        blocked = [await peer.read(reader, 1) for _ in range(count)]
        await peer.expect_silence()
        u = await peer.ioctl(writer, ECHO_IOC_COUNTER, out_size=8)
        assert (await peer.reply_to(u)).error == 0
        await peer.interrupt(blocked[0])
        assert (await peer.reply_to(blocked[0])).raw == error_reply(blocked[0], errno.EINTR)
        u = await peer.write(writer, bytes(range(count - 1)))
        got = sorted([(await peer.reply_to(b)).body for b in blocked[1:]])
        assert got == [bytes([i]) for i in range(count - 1)]
        assert (await peer.reply_to(u)).raw == ok_reply(u, WRITE_OUT.pack(count - 1, 0))
        assert len(h.session._idle_workers) <= MAX_IDLE_WORKERS


@trio_test
async def test_interrupt_for_an_unknown_request_is_ignored() -> None:
    async with cuse_server(EchoDevice(), echo_options()) as h:
        fh = await h.peer.call_open()
        await h.peer.interrupt(1000)
        await h.peer.expect_silence()
        u = await h.peer.ioctl(fh, ECHO_IOC_COUNTER, out_size=8)
        assert (await h.peer.reply_to(u)).error == 0


@trio_test
async def test_pipelined_requests_all_get_replies() -> None:
    async with cuse_server(EchoDevice(), echo_options()) as h:
        fh = await h.peer.call_open()
        uniques = [await h.peer.write(fh, bytes([i]) * 10) for i in range(50)]
        for u in uniques:
            assert (await h.peer.reply_to(u)).raw == ok_reply(u, WRITE_OUT.pack(10, 0))
        u = await h.peer.read(fh, 1000)
        assert (await h.peer.reply_to(u)).body == b"".join(bytes([i]) * 10 for i in range(50))


# --- ioctl -------------------------------------------------------------------------------


@trio_test
async def test_echo_ioctls_in_out_and_result() -> None:
    async with cuse_server(EchoDevice(), echo_options()) as h:
        peer = h.peer
        fh = await peer.call_open()
        for expected in (1, 2):
            u = await peer.ioctl(fh, ECHO_IOC_COUNTER, out_size=8)
            assert (await peer.reply_to(u)).raw == ok_reply(u, IOCTL_OUT.pack(0, 0, 0, 0) + U64.pack(expected))
        u = await peer.ioctl(fh, ECHO_IOC_INCREMENT, in_data=U64.pack(41), out_size=8)
        assert (await peer.reply_to(u)).raw == ok_reply(u, IOCTL_OUT.pack(0, 0, 0, 0) + U64.pack(42))
        await peer.reply_to(await peer.write(fh, b"12345"))
        u = await peer.ioctl(fh, ECHO_IOC_CLEAR)
        assert (await peer.reply_to(u)).raw == ok_reply(u, IOCTL_OUT.pack(5, 0, 0, 0))
        u = await peer.ioctl(fh, ior("E", 9, 4), out_size=4)
        assert (await peer.reply_to(u)).raw == error_reply(u, errno.ENOTTY)
        u = await peer.ioctl(fh, ECHO_IOC_COUNTER, out_size=4)
        assert (await peer.reply_to(u)).raw == error_reply(u, errno.EINVAL)


class RecordingDevice(CuseDevice):
    """Records ioctl arguments and misbehaves on request, to test the session's checks."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    async def open(self, flags: int) -> int:
        return {0o10: -1}.get(flags & 0o10, 7)

    async def read(self, fh: int, size: int, nonblock: bool) -> bytes:
        if size == 1:
            raise OSError(9999, "errno beyond the kernel's range")
        if size == 2:
            raise RuntimeError("device bug")
        if size == 3:
            raise OSError("no errno at all")
        return bytes(size + 1)  # always one byte too many

    async def write(self, fh: int, data: bytes, nonblock: bool) -> int:
        self.calls.append(("write", fh, data, nonblock))
        return len(data) + 1 if data == b"lie" else len(data)

    async def ioctl(
        self, fh: int, cmd: int, arg: int, in_data: bytes, out_size: int, flags: IoctlFlags
    ) -> tuple[int, bytes]:
        self.calls.append(("ioctl", fh, cmd, arg, in_data, out_size, flags))
        return -3 if cmd == 1 else 0, bytes(out_size + (1 if cmd == 2 else 0))


@trio_test
async def test_ioctl_arguments_reach_the_device_unchanged() -> None:
    device = RecordingDevice()
    async with cuse_server(device, echo_options()) as h:
        cmd = iowr("T", 3, 4)
        u = await h.peer.ioctl(
            7, cmd, arg=0xDEADBEEF00, in_data=b"\x01\x02\x03\x04", out_size=4, flags=IOCTL_COMPAT | IOCTL_32BIT
        )
        assert (await h.peer.reply_to(u)).raw == ok_reply(u, IOCTL_OUT.pack(0, 0, 0, 0) + bytes(4))
        assert device.calls[-1] == (
            "ioctl",
            7,
            cmd,
            0xDEADBEEF00,
            b"\x01\x02\x03\x04",
            4,
            IoctlFlags.COMPAT | IoctlFlags.IS_32BIT,
        )
        u = await h.peer.ioctl(7, 1)  # negative result values pass through
        assert (await h.peer.reply_to(u)).raw == ok_reply(u, IOCTL_OUT.pack(-3, 0, 0, 0))
        u = await h.peer.write(7, b"data", flags=os.O_WRONLY | os.O_NONBLOCK)
        await h.peer.reply_to(u)
        assert device.calls[-1] == ("write", 7, b"data", True)


@trio_test
async def test_device_failures_become_errno_replies_and_serving_continues() -> None:
    async with cuse_server(RecordingDevice(), echo_options()) as h:
        peer = h.peer
        for size in (1, 2, 3, 10):  # bad errno, exception, errno None, too many bytes
            u = await peer.read(7, size)
            assert (await peer.reply_to(u)).raw == error_reply(u, errno.EIO), size
        u = await peer.ioctl(7, 2, out_size=4)  # more output than the caller takes
        assert (await peer.reply_to(u)).raw == error_reply(u, errno.EIO)
        u = await peer.write(7, b"lie")  # claims to have taken more than it got
        assert (await peer.reply_to(u)).raw == error_reply(u, errno.EIO)
        u = await peer.open(0o10)  # returns a negative file handle
        assert (await peer.reply_to(u)).raw == error_reply(u, errno.EIO)
        assert await peer.call_open() == 7


# --- poll --------------------------------------------------------------------------------


@trio_test
async def test_poll_reports_readiness_and_notifies_when_data_arrives() -> None:
    async with cuse_server(EchoDevice(), echo_options()) as h:
        peer = h.peer
        fh = await peer.call_open()
        u = await peer.poll(fh, kh=0x1234, flags=POLL_SCHEDULE_NOTIFY, events=select.POLLIN)
        assert (await peer.reply_to(u)).raw == ok_reply(u, POLL_OUT.pack(READY_OUT, 0))
        await peer.expect_silence()

        w = await peer.write(fh, b"x")
        notify = await peer.recv()  # sent before the write is answered
        assert notify.raw == OUT_HEADER.pack(24, 1, 0) + NOTIFY_POLL_WAKEUP_OUT.pack(0x1234)
        assert (await peer.reply_to(w)).error == 0

        u = await peer.poll(fh, kh=0x1234, events=select.POLLIN)
        assert (await peer.reply_to(u)).raw == ok_reply(u, POLL_OUT.pack(READY_IN_OUT, 0))
        # without SCHEDULE_NOTIFY nothing is remembered, so nothing is sent later
        await peer.reply_to(await peer.write(fh, b"y"))
        await peer.expect_silence()


@trio_test
async def test_notify_poll_can_be_sent_by_anyone_holding_the_session() -> None:
    async with cuse_server(EchoDevice(), echo_options()) as h:
        await h.session.notify_poll(99)
        assert (await h.peer.recv()).raw == OUT_HEADER.pack(24, 1, 0) + NOTIFY_POLL_WAKEUP_OUT.pack(99)


class NoPollDevice(EchoDevice):
    def poll_now(self, fh: int, kh: int, flags: PollFlags, events: int, notify_poll: NotifyPoll) -> int | None:
        return CuseDevice.poll_now(self, fh, kh, flags, events, notify_poll)  # None: ask poll() on trio

    async def poll(self, fh: int, kh: int, flags: PollFlags, events: int, notify_poll: NotifyPoll) -> int:
        return await CuseDevice.poll(self, fh, kh, flags, events, notify_poll)


@trio_test
async def test_poll_flush_fsync_default_to_enosys() -> None:
    async with cuse_server(NoPollDevice(), echo_options()) as h:
        fh = await h.peer.call_open()
        for send in (h.peer.flush(fh), h.peer.fsync(fh), h.peer.poll(fh, kh=1)):
            u = await send
            assert (await h.peer.reply_to(u)).raw == error_reply(u, errno.ENOSYS)


# --- malformed and unknown requests --------------------------------------------------------


@pytest.mark.parametrize("opcode", [OP_GETATTR, OP_INIT, 1, 50, 2016, 9999])
@trio_test
async def test_unknown_opcodes_get_enosys(opcode: int) -> None:
    async with cuse_server(EchoDevice(), echo_options()) as h:
        u = await h.peer.send(opcode, bytes(16))
        assert (await h.peer.recv()).raw == error_reply(u, errno.ENOSYS)


@trio_test
async def test_malformed_requests_get_error_replies_and_serving_continues() -> None:
    async with cuse_server(EchoDevice(), echo_options()) as h:
        peer = h.peer
        fh = await peer.call_open()
        # header len disagrees with the message size
        await peer.send_raw(IN_HEADER.pack(100, OP_READ, 50, 0, 0, 0, 0, 0, 0) + READ_IN.pack(fh, 0, 8, 0, 0, 0, 0))
        assert (await peer.recv()).raw == error_reply(50, errno.EIO)
        # READ whose fuse_read_in is cut short
        await peer.send_raw(IN_HEADER.pack(50, OP_READ, 52, 0, 0, 0, 0, 0, 0) + bytes(10))
        assert (await peer.recv()).raw == error_reply(52, errno.EINVAL)
        # shorter than an in header, but the unique is readable
        await peer.send_raw(struct.pack("=IIQ", 24, OP_READ, 54) + bytes(8))
        assert (await peer.recv()).raw == error_reply(54, errno.EIO)
        # too short to name a request: nothing can be answered
        await peer.send_raw(b"\x07" * 12)
        await peer.expect_silence()
        # WRITE declaring more data than it carries; IOCTL likewise
        u = await peer.write(fh, b"abc", size=10)
        assert (await peer.recv()).raw == error_reply(u, errno.EINVAL)
        u = await peer.send(39, struct.pack("=QIIQII", fh, 0, ECHO_IOC_INCREMENT, 0, 8, 8) + b"\x01")
        assert (await peer.recv()).raw == error_reply(u, errno.EINVAL)
        # extensions longer than the message
        u = await peer.send(OP_OPEN, bytes(8), extlen=10)
        assert (await peer.recv()).raw == error_reply(u, errno.EINVAL)
        # a second CUSE_INIT
        u = await peer.cuse_init()
        assert (await peer.recv()).raw == error_reply(u, errno.EPROTO)

        u = await peer.write(fh, b"fine")
        assert (await peer.reply_to(u)).raw == ok_reply(u, WRITE_OUT.pack(4, 0))
        u = await peer.read(fh, 10)
        assert (await peer.reply_to(u)).raw == ok_reply(u, b"fine")


# --- the end of a session ----------------------------------------------------------------


@trio_test
async def test_destroy_is_answered_and_ends_the_session() -> None:
    device = EchoDevice()
    server_sock, kernel_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with server_sock, kernel_sock:
        peer = KernelPeer(trio.socket.from_stdlib_socket(kernel_sock))
        session = CuseSession(server_sock.fileno(), device, echo_options())
        async with trio.open_nursery() as nursery:
            await peer.cuse_init()
            await nursery.start(session.run)
            await peer.recv()
            fh = await peer.call_open()
            blocked = await peer.read(fh, 10)
            u = await peer.destroy()
            with trio.fail_after(5):
                while True:  # the blocked read dies with the session; no reply for it
                    reply = await peer.recv()
                    assert reply.unique != blocked
                    if reply.unique == u:
                        break
            assert reply.raw == ok_reply(u)
        assert device.destroyed


@trio_test
async def test_session_ends_when_the_kernel_side_closes() -> None:
    device = EchoDevice()
    server_sock, kernel_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with server_sock:
        peer = KernelPeer(trio.socket.from_stdlib_socket(kernel_sock))
        session = CuseSession(server_sock.fileno(), device, echo_options())
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                await peer.cuse_init()
                await nursery.start(session.run)
                await peer.recv()
                await peer.read(await peer.call_open(), 10)  # leave a read blocked
                kernel_sock.close()
        assert device.destroyed
