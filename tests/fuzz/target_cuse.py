"""Fuzz target: the CUSE request parser, session and /dev/vtpm device state machine.

Input format: records (:mod:`tests.fuzz.records`); each payload is one message the
simulated kernel (tests/cuse_peer.py) writes to the channel after the CUSE_INIT
handshake -- a ``fuse_in_header`` + body as the kernel would send it, or any bytes
at all.  Without the record's flag the peer waits for the reply before it sends
the next request (one syscall after the other); with it, the next request follows
at once, so requests overlap as they do from a multi-threaded guest (a blocking
READ behind a running command, an INTERRUPT for it).

Everything runs in this process: a fresh Vtpm on an empty state directory for
every input, the real :class:`~vtpm_cuse.device.VtpmDevice` behind the real
:class:`~vtpm_cuse.cuse.session.CuseSession`, served over a SOCK_SEQPACKET
socketpair.  The target only talks to the session through the channel, so it does
not depend on how the session serves requests internally.

Oracles (the reply model is <linux/fuse.h>'s, written out here from the header):

* every request with a readable ``unique`` gets exactly one reply with that id --
  an errno in 1..4095 or a payload of the opcode's shape -- except those the
  protocol never answers (INTERRUPT, FORGET, BATCH_FORGET); a message shorter than
  the id gets none, and id 0 (the notification id, never used by the kernel) is
  not tracked; nothing else arrives;
* every reply arrives within :data:`INPUT_BOUND` seconds (the session never wedges)
  and the session keeps running until DESTROY, which it answers and then ends;
* afterwards a fresh OPEN succeeds (on a new session after DESTROY), and a
  GetRandom written to it is answered with a well-formed TPM response (the fatal
  error response only while the TPM is stopped, never TPM_RC_FAILURE when running).
"""

from __future__ import annotations

import itertools
import os
import struct
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import trio

from ioctl_defs import (
    PtmBlobType,
    PtmGetStateRequest,
    PtmInitRequest,
    PtmLocRequest,
    PtmSetStateRequest,
    PtmStateFlag,
    by_name,
    host_abi,
)
from ioctl_defs.ioc import IocDir
from tests.cuse_peer import (
    CUSE_INIT_IN,
    CUSE_UNRESTRICTED_IOCTL,
    FLUSH_IN,
    FSYNC_IN,
    IN_HEADER,
    INT_REQ_BIT,
    INTERRUPT_IN,
    IOCTL_IN,
    OP_CUSE_INIT,
    OP_DESTROY,
    OP_FLUSH,
    OP_FSYNC,
    OP_GETATTR,
    OP_INTERRUPT,
    OP_IOCTL,
    OP_OPEN,
    OP_POLL,
    OP_READ,
    OP_RELEASE,
    OP_WRITE,
    OPEN_IN,
    OPEN_OUT,
    OUT_HEADER,
    POLL_IN,
    POLL_SCHEDULE_NOTIFY,
    READ_IN,
    RELEASE_IN,
    WRITE_IN,
    KernelPeer,
    Message,
    cuse_server,
)
from tests.fuzz.logged_errors import no_internal_errors, unwrapped
from tests.fuzz.records import Record, decode, encode
from tests.fuzz.vtpm_inputs import GET_RANDOM_8, FreshVtpms, check_get_random_answer
from vtpm_cuse.cuse.session import CuseOptions
from vtpm_cuse.device import READABLE, WRITABLE, VtpmDevice
from vtpm_cuse.vtpm import Vtpm

__all__ = ["fuzz_one", "seeds"]

MAX_LEN: Final = 16384
"""Room for a few state-blob chunks (a PTM_SET_STATEBLOB ioctl alone is 3 KB)."""
TIMEOUT_SECONDS: Final = 30
"""libFuzzer's -timeout: above INPUT_BOUND, so that a hang is reported by the oracle with its message."""

INPUT_BOUND: Final = 20.0
"""Real seconds any reply may take (the slowest request, an INIT, takes milliseconds)."""
MAX_ERRNO: Final = 4095
OP_FORGET: Final = 2
OP_BATCH_FORGET: Final = 42
_NO_REPLY: Final = frozenset({OP_INTERRUPT, OP_FORGET, OP_BATCH_FORGET})
"""Requests the kernel never waits for an answer to (fuse_dev_do_write would refuse one)."""
_UNIQUE = struct.Struct("=Q")
_OPCODE = struct.Struct("=I")
_NOTIFY_POLL: Final = 1
STARTUP_CLEAR: Final = bytes.fromhex("80010000000c000001440000")

_VTPMS = FreshVtpms("fuzz-cuse-")


# --- the reply model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """What the kernel side expects back for one message it sent."""

    unique: int | None
    """None: no reply (too short to carry an id, or a request that is never answered)."""
    opcode: int | None = None
    size: int = 0
    """READ: the most bytes the reply may carry; IOCTL: out_size."""


_BODIES: Final = {
    OP_CUSE_INIT: CUSE_INIT_IN,
    OP_OPEN: OPEN_IN,
    OP_READ: READ_IN,
    OP_WRITE: WRITE_IN,
    OP_RELEASE: RELEASE_IN,
    OP_FSYNC: FSYNC_IN,
    OP_FLUSH: FLUSH_IN,
    OP_INTERRUPT: INTERRUPT_IN,
    OP_IOCTL: IOCTL_IN,
    OP_POLL: POLL_IN,
}
"""The fixed struct after the header of each request a CUSE server handles."""


def expectation(message: bytes) -> Expectation:
    """The reply a message must get: none, an errno only (``opcode`` None: a malformed
    request), or an errno or the opcode's payload (READ/IOCTL: at most ``size`` bytes)."""
    if len(message) < 16:
        return Expectation(None)
    (unique,) = _UNIQUE.unpack_from(message, 8)
    if unique == 0:
        return Expectation(None)  # id 0 is the notification channel: the kernel never sends it
    if len(message) < IN_HEADER.size:
        return Expectation(unique)  # EIO: a header cut short
    length, opcode, _unique, _node, _uid, _gid, _pid, extlen, _pad = IN_HEADER.unpack_from(message)
    body_end = len(message) - 8 * extlen
    if length != len(message) or body_end < IN_HEADER.size:
        return Expectation(unique)  # EIO / EINVAL: the framing is wrong
    layout = _BODIES.get(opcode)
    if layout is None:
        return Expectation(None) if opcode in _NO_REPLY else Expectation(unique, opcode)
    if body_end < IN_HEADER.size + layout.size:
        return Expectation(unique)  # EINVAL: the struct does not fit
    fields = layout.unpack_from(message, IN_HEADER.size)
    payload = body_end - IN_HEADER.size - layout.size
    if opcode == OP_INTERRUPT:
        return Expectation(None)
    if (opcode == OP_WRITE and fields[2] != payload) or (opcode == OP_IOCTL and fields[4] != payload):
        return Expectation(unique)  # EINVAL: the declared data length is not what came
    size = fields[2] if opcode == OP_READ else fields[5] if opcode == OP_IOCTL else 0
    return Expectation(unique, opcode, size)


_FIXED_REPLY: Final = {OP_OPEN: OPEN_OUT.size, OP_WRITE: 8, OP_POLL: 8, OP_RELEASE: 0, OP_FLUSH: 0, OP_FSYNC: 0}
_IOCTL_OUT_SIZE: Final = 16


def check_reply(expected: Expectation, reply: Message) -> None:
    """An errno, or a payload of the opcode's shape."""
    assert reply.len == len(reply.raw), f"reply length field {reply.len} != {len(reply.raw)} bytes"
    if reply.error:
        assert -MAX_ERRNO <= reply.error < 0, f"reply error {reply.error} is not a negative errno"
        assert not reply.body, f"error reply {reply.error} carries {len(reply.body)} bytes"
        return
    opcode = expected.opcode
    assert opcode is not None, f"a malformed request {expected.unique} was answered with success"
    if opcode in _FIXED_REPLY:
        assert len(reply.body) == _FIXED_REPLY[opcode], f"opcode {opcode}: success reply of {len(reply.body)} bytes"
    elif opcode == OP_READ:
        assert len(reply.body) <= expected.size, f"READ of {expected.size} answered {len(reply.body)} bytes"
    elif opcode == OP_IOCTL:
        assert _IOCTL_OUT_SIZE <= len(reply.body) <= _IOCTL_OUT_SIZE + expected.size, (
            f"IOCTL with out_size {expected.size} answered {len(reply.body)} bytes"
        )
    elif opcode == OP_DESTROY:
        assert not reply.body, f"DESTROY answered {len(reply.body)} bytes"
    else:
        raise AssertionError(f"opcode {opcode} answered with success: {reply.raw[:32].hex()}")


def _fits(expected: Expectation, reply: Message) -> bool:
    try:
        check_reply(expected, reply)
    except AssertionError:
        return False
    return True


def check_replies(requests: list[Expectation], replies: list[Message]) -> None:
    """All replies to the requests that share one id: each request got one that fits it.

    A fuzzed input may reuse an id while an earlier request with it is in flight (the
    kernel never does), and the replies can then come in either order, so a request
    and its reply are paired only once all have arrived."""
    assert len(requests) == len(replies)
    if len(requests) == 1:
        check_reply(requests[0], replies[0])
        return
    if len(requests) <= 6 and any(
        all(_fits(e, r) for e, r in zip(order, replies, strict=True)) for order in itertools.permutations(requests)
    ):
        return
    unmatched = list(requests)  # many duplicates: pair greedily
    for reply in replies:
        expected = next((e for e in unmatched if _fits(e, reply)), None)
        if expected is None:
            check_reply(unmatched[0], reply)  # raises with the first request's complaint
        unmatched.remove(expected)  # type: ignore[arg-type]


# --- driving the session --------------------------------------------------------------------------


@dataclass
class _Peer:
    """The simulated kernel with the bookkeeping of the oracles."""

    kernel: KernelPeer
    outstanding: dict[int, list[Expectation]] = field(default_factory=lambda: defaultdict(list))
    """Unanswered requests by id (a fuzzed input may reuse an id; the kernel never does)."""
    arrived: dict[int, list[Message]] = field(default_factory=lambda: defaultdict(list))
    """Replies to the ids in ``outstanding`` so far."""
    opens: int = 0
    """OPEN requests sent, answered or not (the most handles the device gave out)."""
    destroyed: bool = False

    async def send(self, message: bytes) -> Expectation:
        expected = expectation(message)
        if len(message) >= 8 and _OPCODE.unpack_from(message, 4)[0] == OP_OPEN:
            self.opens += 1
        if expected.unique is not None:
            self.outstanding[expected.unique].append(expected)
        await self.kernel.send_raw(message)
        return expected

    async def next_message(self) -> Message:
        with trio.move_on_after(INPUT_BOUND) as scope:
            raw = await self.kernel.sock.recv(1 << 20)
        assert not scope.cancelled_caught, f"no reply within {INPUT_BOUND} s: the session wedged"
        assert raw, "the session closed the channel"
        assert len(raw) >= OUT_HEADER.size, f"a message of {len(raw)} bytes from the session"
        return Message.parse(raw)

    async def collect(self, unique: int | None = None) -> None:
        """Take messages until ``unique`` was answered (None: until nothing is outstanding)."""
        while self.outstanding[unique] if unique is not None else any(self.outstanding.values()):
            message = await self.next_message()
            if message.unique == 0:
                continue  # a poll wakeup notification (or whatever answers a request with id 0)
            requests, replies = self.outstanding[message.unique], self.arrived[message.unique]
            assert len(replies) < len(requests), (
                f"reply for {message.unique}, which was not asked or was answered already: {message.raw[:32].hex()}"
            )
            replies.append(message)
            if any(e.opcode == OP_DESTROY for e in requests) and not message.error and not message.body:
                self.destroyed = True
            if len(replies) == len(requests):
                check_replies(requests, replies)
                del self.outstanding[message.unique], self.arrived[message.unique]

    async def call(self, opcode: int, body: bytes = b"") -> Message:
        unique = self.kernel.next_unique
        self.kernel.next_unique += 2
        await self.send(_request(opcode, body, unique))
        while True:
            message = await self.next_message()
            if message.unique == unique:
                del self.outstanding[unique]
                return message
            assert message.unique == 0, f"unexpected message {message}"  # 0: see collect()


async def _drive(peer: _Peer, records: list[Record]) -> None:
    for record in records:
        expected = await peer.send(record.payload)
        if expected.opcode == OP_DESTROY:
            # The last request of a channel: answered once the session has wound down;
            # requests still in flight die with it (the kernel has given up on them).
            await peer.collect(expected.unique)
            assert peer.destroyed, "DESTROY was answered with an error"
            peer.outstanding.clear()
            peer.arrived.clear()
            return
        if expected.unique is not None and not record.flag:
            await peer.collect(expected.unique)
    await peer.collect()


async def _check_still_works(peer: _Peer, vtpm: Vtpm) -> None:
    # The device numbers its opens 1, 2, ...: release whichever the input left open
    # (one opened with request id 0 has no reply to learn its handle from).
    for fh in range(1, peer.opens + 1):
        reply = await peer.call(OP_RELEASE, RELEASE_IN.pack(fh, os.O_RDWR, 0, 0))
        assert reply.error == 0, f"RELEASE of {fh}: errno {-reply.error}"
    reply = await peer.call(OP_OPEN, OPEN_IN.pack(os.O_RDWR, 0))
    assert reply.error == 0, f"a fresh OPEN after the input fails with errno {-reply.error}"
    fh = OPEN_OUT.unpack_from(reply.body)[0]
    # A command the input left running (O_NONBLOCK write) finishes first: a blocking
    # READ waits for it, as a client's poll() would.
    reply = await peer.call(OP_READ, READ_IN.pack(fh, 0, 4096, 0, 0, os.O_RDWR, 0))
    assert reply.error == 0, f"READ on the fresh open fails with errno {-reply.error}"
    reply = await peer.call(OP_WRITE, WRITE_IN.pack(fh, 0, len(GET_RANDOM_8), 0, 0, os.O_RDWR, 0) + GET_RANDOM_8)
    assert reply.error == 0, f"WRITE of GetRandom fails with errno {-reply.error}"
    reply = await peer.call(OP_READ, READ_IN.pack(fh, 0, 4096, 0, 0, os.O_RDWR, 0))
    assert reply.error == 0, f"READ of the GetRandom response fails with errno {-reply.error}"
    check_get_random_answer(reply.body, vtpm)


async def _serve_input(vtpm: Vtpm, records: list[Record]) -> None:
    async with trio.open_nursery() as background:
        device = VtpmDevice(vtpm, nursery=background)
        async with cuse_server(device, CuseOptions("vtpm-fuzz")) as harness:
            assert harness.init_reply is not None and harness.init_reply.error == 0, harness.init_reply
            peer = _Peer(harness.peer)
            await _drive(peer, records)
            if not peer.destroyed:
                await _check_still_works(peer, vtpm)
        if peer.destroyed:  # the device is gone; a new one on the same TPM must work
            async with cuse_server(VtpmDevice(vtpm, nursery=background), CuseOptions("vtpm-fuzz")) as harness:
                await _check_still_works(_Peer(harness.peer), vtpm)
        background.cancel_scope.cancel()


async def _run(records: list[Record]) -> None:
    vtpm = _VTPMS.new()
    try:
        await _serve_input(vtpm, records)
    finally:
        with trio.CancelScope(shield=True):
            await vtpm.shutdown()  # let go of the lock for the next input


def fuzz_one(data: bytes) -> None:
    """Run one input; AssertionError when an oracle fails, anything else is a bug found."""
    with unwrapped(), no_internal_errors():
        trio.run(_run, list(decode(data)))


# --- seeds ----------------------------------------------------------------------------------------


def _request(opcode: int, body: bytes, unique: int, *, pid: int = 4242, extlen: int = 0) -> bytes:
    return IN_HEADER.pack(IN_HEADER.size + len(body), opcode, unique, 0, 0, 0, pid, extlen, 0) + body


class _Script:
    """Builds a request sequence the way the kernel numbers it (unique ids in steps of 2)."""

    def __init__(self) -> None:
        self.unique = 2
        self.records: list[Record] = []

    def add(self, opcode: int, body: bytes = b"", *, overlap: bool = False) -> int:
        unique = self.unique
        self.unique += 2
        self.records.append(Record(_request(opcode, body, unique), overlap))
        return unique

    def raw(self, message: bytes, *, overlap: bool = False) -> None:
        self.records.append(Record(message, overlap))

    def open(self) -> None:
        self.add(OP_OPEN, OPEN_IN.pack(os.O_RDWR, 0))

    def write(self, fh: int, data: bytes, flags: int = os.O_RDWR, *, overlap: bool = False) -> None:
        self.add(OP_WRITE, WRITE_IN.pack(fh, 0, len(data), 0, 0, flags, 0) + data, overlap=overlap)

    def read(self, fh: int, size: int = 4096, flags: int = os.O_RDWR, *, overlap: bool = False) -> int:
        return self.add(OP_READ, READ_IN.pack(fh, 0, size, 0, 0, flags, 0), overlap=overlap)

    def ioctl(self, fh: int, name: str, request: object = None) -> None:
        abi = host_abi()
        spec = by_name(name)
        in_data = b""
        if spec.direction & IocDir.WRITE:
            in_data = (request or spec.request()).pack_ioctl(abi)
        size = spec.ioctl_size(abi)
        self.add(OP_IOCTL, IOCTL_IN.pack(fh, 0, spec.ioctl_number(abi), 0, len(in_data), size) + in_data)

    def poll(self, fh: int, kh: int = 7, flags: int = POLL_SCHEDULE_NOTIFY, events: int = READABLE) -> None:
        self.add(OP_POLL, POLL_IN.pack(fh, kh, flags, events))

    def release(self, fh: int) -> None:
        self.add(OP_RELEASE, RELEASE_IN.pack(fh, os.O_RDWR, 0, 0))

    def encoded(self) -> bytes:
        return encode(self.records)


def seeds() -> Iterable[bytes]:
    """Realistic kernel request sequences (what tpm2-tools, QEMU passthrough and
    swtpm_ioctl cause) and the malformed and out-of-order shapes around them."""
    fh = 1  # the device numbers its opens from 1
    # A TPM session: open, PTM_INIT, Startup, GetRandom read in pieces, poll, release.
    s = _Script()
    s.open()
    s.ioctl(fh, "PTM_GET_CAPABILITY")
    s.ioctl(fh, "PTM_INIT", PtmInitRequest(0))
    s.write(fh, STARTUP_CLEAR)
    s.read(fh)
    s.poll(fh, events=WRITABLE)
    s.write(fh, GET_RANDOM_8)
    s.poll(fh)
    s.read(fh, 4)
    s.read(fh, 4096)
    s.read(fh)
    s.ioctl(fh, "PTM_SET_LOCALITY", PtmLocRequest(3))
    s.ioctl(fh, "PTM_GET_TPMESTABLISHED")
    s.ioctl(fh, "PTM_HASH_START")
    s.ioctl(fh, "PTM_HASH_END")
    s.ioctl(fh, "PTM_STORE_VOLATILE")
    s.release(fh)
    yield s.encoded()
    # Non-blocking write, a blocking read behind it and an INTERRUPT for the read.
    s = _Script()
    s.open()
    s.ioctl(fh, "PTM_INIT", PtmInitRequest(0))
    s.write(fh, STARTUP_CLEAR, os.O_RDWR | os.O_NONBLOCK)
    target = s.read(fh, overlap=True)
    s.raw(_request(OP_INTERRUPT, INTERRUPT_IN.pack(target), target | INT_REQ_BIT))
    s.write(fh, GET_RANDOM_8, os.O_RDWR | os.O_NONBLOCK, overlap=True)
    s.read(fh, flags=os.O_RDWR | os.O_NONBLOCK)
    s.read(fh)
    s.ioctl(fh, "PTM_CANCEL_TPM_CMD")
    s.release(fh)
    yield s.encoded()
    # State blobs through ioctl + read()/write() (swtpm_ioctl --save/--load on the device).
    s = _Script()
    s.open()
    s.ioctl(fh, "PTM_INIT", PtmInitRequest(0))
    s.ioctl(
        fh,
        "PTM_GET_STATEBLOB",
        PtmGetStateRequest(PtmStateFlag.PTM_STATE_FLAG_DECRYPTED, PtmBlobType.PTM_BLOB_TYPE_PERMANENT, 0),
    )
    s.read(fh, 4096)
    s.ioctl(fh, "PTM_STOP")
    s.ioctl(fh, "PTM_SET_STATEBLOB", PtmSetStateRequest(0, PtmBlobType.PTM_BLOB_TYPE_VOLATILE, b""))
    s.write(fh, bytes(100))
    s.ioctl(fh, "PTM_SET_STATEBLOB", PtmSetStateRequest(0, PtmBlobType.PTM_BLOB_TYPE_VOLATILE, b""))
    s.ioctl(fh, "PTM_INIT", PtmInitRequest(1))
    s.ioctl(fh, "PTM_GET_CONFIG")
    s.ioctl(fh, "PTM_SHUTDOWN")
    yield s.encoded()
    # Out of order and malformed: before OPEN, double OPEN, wrong fh, unknown opcodes,
    # FORGET, a second CUSE_INIT, garbage and cut headers, bad lengths, DESTROY.
    s = _Script()
    s.write(fh, GET_RANDOM_8)
    s.read(fh)
    s.open()
    s.open()
    s.read(99)
    s.ioctl(fh, "PTM_SET_DATAFD")
    s.add(OP_IOCTL, IOCTL_IN.pack(fh, 0, 0xDEADBEEF, 0, 0, 0))
    s.add(OP_GETATTR, bytes(16))
    s.add(OP_FORGET, struct.pack("=Q", 1))
    s.add(OP_FLUSH, FLUSH_IN.pack(fh, 0, 0, 0))
    s.add(OP_FSYNC, FSYNC_IN.pack(fh, 1, 0))
    s.add(OP_CUSE_INIT, CUSE_INIT_IN.pack(7, 38, 0, CUSE_UNRESTRICTED_IOCTL))
    s.add(OP_INTERRUPT, INTERRUPT_IN.pack(12345))
    s.raw(b"\xff" * 12)
    s.raw(bytes(24))
    s.raw(_request(OP_READ, bytes(8), 300))
    s.raw(_request(OP_WRITE, WRITE_IN.pack(fh, 0, 50, 0, 0, 2, 0) + bytes(10), 302))
    s.raw(_request(OP_OPEN, OPEN_IN.pack(2, 0), 304, extlen=9))
    s.raw(IN_HEADER.pack(999, OP_OPEN, 306, 0, 0, 0, 0, 0, 0) + OPEN_IN.pack(2, 0))
    s.poll(fh, flags=0, events=0)
    s.release(fh)
    s.release(fh)
    s.add(OP_DESTROY)
    yield s.encoded()
    # A command bigger than the buffer, then a tiny-buffer reader.
    s = _Script()
    s.open()
    s.ioctl(fh, "PTM_INIT", PtmInitRequest(0))
    s.write(fh, STARTUP_CLEAR[:6] + (5000).to_bytes(4, "big") + bytes(4990))
    s.read(fh, 1)
    s.read(fh, 1)
    s.read(fh, 0)
    s.read(fh)
    yield s.encoded()
