"""Fuzz target: the socket control channel (CMD_* framing and dispatch) and the PTM structs.

Input format: records (:mod:`tests.fuzz.records`); a record's flag attaches a
descriptor (one end of a socketpair) to the message, as QEMU does for
CMD_SET_DATAFD.  Each payload is one ``send`` on the control connection -- a
``u32 cmd`` + body as a client would write it, or any bytes at all -- and is
answered before the next is sent, like swtpm_ioctl, QEMU and libvirt do.

Everything runs in this process: a fresh :class:`~vtpm_cuse.vtpm.Vtpm` on an empty
state directory (in /dev/shm when there is one) for every input, the real
:class:`~vtpm_cuse.sockets.ctrl_channel.ControlChannel` on one end of a Unix
socketpair, and this module as the client on the other.  A trio MockClock with
autojump lets the framing's body timeouts expire at once (a short body is answered
TPM_BAD_PARAMETER without waiting half a second of real time); real time is bounded
by a watchdog thread instead.

Oracles:

* every message gets exactly one reply that unpacks as the command's response
  half (``ptm_res`` first); unknown or short commands get a bare non-zero result;
* the channel closes only where documented: after an oversized SET_STATEBLOB /
  HASH_DATA (TPM_FAIL) and after a successful CMD_SHUTDOWN, which also stops the
  TPM and asks the daemon to exit (the rest of the input is then not sent);
* no input takes longer than :data:`INPUT_BOUND` seconds of real time (a hang);
* nothing logs an internal error (a handler exception caught by the channel);
* afterwards CMD_GET_CAPABILITY still answers on the channel (unless it was shut
  down) and the TPM behind it answers a GetRandom (the fatal-error response only
  while it is stopped);
* for every payload, the PTM request and response structs of its command decode
  from it or refuse it with MalformedMessage only, on the socket and the ioctl
  paths (both ABIs), and what decodes re-encodes to bytes that decode to the same value.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import struct
import threading
from collections.abc import Iterable, Iterator
from typing import Final

import trio
import trio.testing

from ioctl_defs import (
    I386,
    KNOWN_ABIS,
    X86_64,
    MalformedMessage,
    Part,
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
    PtmResult,
    PtmSetBufferSizeRequest,
    PtmSetStateRequest,
    PtmStateFlag,
    SwtpmInfo,
    UnknownCommand,
    by_cmd,
    pack_socket_command,
)
from tests.fuzz.logged_errors import no_internal_errors, unwrapped
from tests.fuzz.records import Record, decode, encode
from tests.fuzz.vtpm_inputs import GET_RANDOM_8, FreshVtpms, check_get_random_answer
from vtpm_cuse.sockets import ctrl_framing
from vtpm_cuse.sockets.ctrl_channel import ControlChannel
from vtpm_cuse.vtpm import Vtpm

__all__ = ["fuzz_one", "seeds"]

MAX_LEN: Final = 8192
"""Room for a few state-blob chunks (a PTM_SET_STATEBLOB ioctl alone is 3 KB)."""
TIMEOUT_SECONDS: Final = 30
"""libFuzzer's -timeout: above INPUT_BOUND, so that a hang is reported by the oracle with its message."""

INPUT_BOUND: Final = 20.0
"""Real seconds one input may take (its messages take milliseconds each, an INIT well under 1 s)."""
_RESULT = struct.Struct(">I")

_VTPMS = FreshVtpms("fuzz-control-")


# --- oracles on the structs -------------------------------------------------------------------


def _check_socket_round_trip(part: type[Part], body: bytes) -> None:
    try:
        value = part.unpack_socket(body)
    except MalformedMessage:
        return
    again = part.unpack_socket(value.pack_socket())
    assert again == value, f"{part.describe()}: socket {value!r} re-encodes to {again!r}"


def _check_ioctl_round_trip(part: type[Part], body: bytes) -> None:
    for abi in KNOWN_ABIS:
        size = part.ioctl_size(abi)
        for buf in (body, body[:size].ljust(size, b"\0")):
            try:
                value = part.unpack_ioctl(buf, abi)
            except MalformedMessage:
                continue
            packed = value.pack_ioctl(abi)
            assert len(packed) == size, f"{part.describe()}: {abi.name} packs {len(packed)} bytes, not {size}"
            again = part.unpack_ioctl(packed, abi)
            assert again == value, f"{part.describe()}: {abi.name} {value!r} re-encodes to {again!r}"


def check_structs(payload: bytes) -> None:
    """decode(encode(x)) == x for every half of the payload's command, on both paths."""
    if len(payload) < 4:
        return
    (cmd,) = _RESULT.unpack_from(payload)
    try:
        spec = by_cmd(cmd)
    except UnknownCommand:
        return
    body = payload[4:]
    for part in {spec.request, spec.response, spec.socket_request, spec.socket_response}:
        _check_socket_round_trip(part, body)
        _check_ioctl_round_trip(part, body)


# --- the channel ------------------------------------------------------------------------------


@contextlib.contextmanager
def _watchdog(seconds: float) -> Iterator[None]:
    """Fail the input if it is not done within ``seconds`` of real time (trio runs on a mock clock).

    Cancelling the whole run turns a hang into a trio.Cancelled that :func:`fuzz_one` reports."""
    token = trio.lowlevel.current_trio_token()
    scope = trio.CancelScope()
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(scope.cancel, trio_token=token)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        with scope:
            yield
    finally:
        timer.cancel()
    assert not fired.is_set(), f"no reply within {seconds} s of real time: the control channel hangs"


def _expected_reply_size(cmd: int | None, prefix: bytes) -> int:
    if cmd is None:
        return 4
    return by_cmd(cmd).socket_response.socket_wanted(prefix)


def _known_cmd(payload: bytes) -> int | None:
    if len(payload) < 4:
        return None
    (cmd,) = _RESULT.unpack_from(payload)
    try:
        return by_cmd(cmd).cmd
    except UnknownCommand:
        return None


def _one_message(payload: bytes) -> bytes:
    """What reaches the server as one message: the framing's first read takes at most
    FIRST_READ_SIZE bytes, and only the rest the command asks for is read on."""
    cmd = _known_cmd(payload)
    limit = ctrl_framing.FIRST_READ_SIZE
    if cmd is not None:
        limit = max(limit, 4 + by_cmd(cmd).socket_request.socket_wanted(payload[4:]))
    return payload[:limit]


def _oversized(cmd: int | None, payload: bytes) -> bool:
    """An announced payload above the framing's limit: refused, then the channel closes."""
    limits = {PtmCmd.CMD_SET_STATEBLOB: ctrl_framing.MAX_STATE_BLOB, PtmCmd.CMD_HASH_DATA: ctrl_framing.MAX_HASH_DATA}
    if cmd not in limits:
        return False
    request = by_cmd(cmd).socket_request
    body = payload[4:]
    if len(body) < request.LAYOUT.header_size:
        return False
    return request.socket_wanted(body) > limits[cmd] + request.LAYOUT.header_size


class _Client:
    """The client end of one control connection, with the server task serving the other."""

    def __init__(self, channel: ControlChannel, nursery: trio.Nursery) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock = trio.socket.from_stdlib_socket(ours)
        nursery.start_soon(functools.partial(channel.run, connected=trio.socket.from_stdlib_socket(theirs)))

    async def send(self, record: Record) -> None:
        if record.flag:
            left, right = socket.socketpair()
            with left, right:
                await self.sock.sendmsg(
                    [record.payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", right.fileno()))]
                )
        else:
            await self.sock.send(record.payload)

    async def reply(self, cmd: int | None) -> bytes | None:
        """One whole reply, or None if the server closed the connection instead."""
        data = b""
        while len(data) < (wanted := _expected_reply_size(cmd, data)):
            chunk = await self.sock.recv(wanted - len(data))
            if not chunk:
                assert not data, f"connection closed after {len(data)} bytes of a reply: {data.hex()}"
                return None
            data += chunk
        return data

    async def closed(self) -> bool:
        return await self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()


def _check_reply(cmd: int | None, payload: bytes, reply: bytes) -> int:
    """The reply is the command's response half with a ptm_res; returns the result."""
    assert len(reply) >= 4, f"reply {reply.hex()} has no ptm_res"
    (result,) = _RESULT.unpack_from(reply)
    if cmd is None:
        assert result != PtmResult.TPM_SUCCESS and len(reply) == 4, (
            f"message {payload[:16].hex()}...: not a known command, but answered {reply.hex()}"
        )
        return result
    spec = by_cmd(cmd)
    try:
        spec.socket_response.unpack_socket(reply)
    except MalformedMessage as exc:
        raise AssertionError(
            f"{spec.cmd_name}: reply {reply[:32].hex()} is not a {spec.name} response: {exc}"
        ) from None
    return result


async def _exchange(vtpm: Vtpm, records: list[Record]) -> None:
    exited = False

    def request_exit() -> None:
        nonlocal exited
        exited = True

    channel = ControlChannel(vtpm, None, request_exit=request_exit)
    async with trio.open_nursery() as nursery:
        client = _Client(channel, nursery)
        try:
            for record in records:
                record = Record(_one_message(record.payload), record.flag)
                cmd = _known_cmd(record.payload)
                await client.send(record)
                reply = await client.reply(cmd)
                assert reply is not None, f"no reply to {record.payload[:16].hex()}...: the channel closed"
                result = _check_reply(cmd, record.payload, reply)
                shutdown = cmd == PtmCmd.CMD_SHUTDOWN and result == PtmResult.TPM_SUCCESS
                if shutdown or (_oversized(cmd, record.payload) and result == PtmResult.TPM_FAIL):
                    assert await client.closed(), f"{by_cmd(cmd).cmd_name} answered, but the channel stays open"
                    client.close()
                    if shutdown:  # the daemon exits now: nothing more reaches it
                        assert exited, "CMD_SHUTDOWN answered, but the daemon was not asked to exit"
                        assert not vtpm.running, "CMD_SHUTDOWN answered, but the TPM still runs"
                        break
                    client = _Client(channel, nursery)
            else:
                # The channel still answers.
                probe = pack_socket_command(PtmCmd.CMD_GET_CAPABILITY)
                await client.send(Record(probe))
                reply = await client.reply(PtmCmd.CMD_GET_CAPABILITY)
                assert reply is not None and _check_reply(PtmCmd.CMD_GET_CAPABILITY, probe, reply) == 0, reply
        finally:
            client.close()
        await _check_tpm_answers(vtpm)  # and so does the TPM behind it
        nursery.cancel_scope.cancel()


async def _check_tpm_answers(vtpm: Vtpm) -> None:
    check_get_random_answer(await vtpm.execute(GET_RANDOM_8), vtpm)


async def _run(records: list[Record]) -> None:
    vtpm = _VTPMS.new()
    try:
        with _watchdog(INPUT_BOUND):
            await _exchange(vtpm, records)
    finally:
        with trio.CancelScope(shield=True):
            await vtpm.shutdown()  # let go of the lock for the next input


def fuzz_one(data: bytes) -> None:
    """Run one input; AssertionError when an oracle fails, anything else is a bug found."""
    records = list(decode(data))
    for record in records:
        check_structs(record.payload)
    with unwrapped(), no_internal_errors():
        trio.run(_run, records, clock=trio.testing.MockClock(autojump_threshold=0))


# --- seeds --------------------------------------------------------------------------------------


def _msg(cmd: PtmCmd, request: Part | None = None) -> bytes:
    return by_cmd(cmd).pack_socket_request(request)


def _raw(cmd: int, body: bytes = b"") -> bytes:
    return pack_socket_command(cmd, body)


def seeds() -> Iterable[bytes]:
    """Every CMD_* request swtpm_ioctl, QEMU and libvirt send, in their usual sequences,
    and the malformed shapes the framing must answer (short, long, trailing, unknown)."""
    init = _msg(PtmCmd.CMD_INIT, PtmInitRequest(0))
    stop = _msg(PtmCmd.CMD_STOP)
    getcap = _msg(PtmCmd.CMD_GET_CAPABILITY)
    blobs = [
        _msg(PtmCmd.CMD_GET_STATEBLOB, PtmGetStateRequest(PtmStateFlag.PTM_STATE_FLAG_DECRYPTED, kind, 0))
        for kind in PtmBlobType
    ]
    # QEMU: SET_DATAFD, GET_CAPABILITY, STOP + SET_BUFFERSIZE, INIT, SET_LOCALITY (padded), RESET_EST.
    yield encode(
        [
            Record(_msg(PtmCmd.CMD_SET_DATAFD), flag=True),
            getcap,
            stop,
            _msg(PtmCmd.CMD_SET_BUFFERSIZE, PtmSetBufferSizeRequest(0)),
            stop,
            _msg(PtmCmd.CMD_SET_BUFFERSIZE, PtmSetBufferSizeRequest(4096)),
            init,
            _raw(PtmCmd.CMD_SET_LOCALITY, bytes([3, 0, 0, 0])),
            _msg(PtmCmd.CMD_GET_TPMESTABLISHED),
            _msg(PtmCmd.CMD_RESET_TPMESTABLISHED, PtmResetEstRequest(3)),
            _msg(PtmCmd.CMD_CANCEL_TPM_CMD),
            _msg(PtmCmd.CMD_SHUTDOWN),
        ]
    )
    # QEMU migration: source saves the three blobs, then the destination restores them.
    yield encode([init, *blobs, _msg(PtmCmd.CMD_LOCK_STORAGE, PtmLockStorageRequest(300))])
    yield encode(
        [
            init,
            _msg(PtmCmd.CMD_STORE_VOLATILE),
            stop,
            _msg(PtmCmd.CMD_SET_STATEBLOB, PtmSetStateRequest(0, PtmBlobType.PTM_BLOB_TYPE_VOLATILE, b"\0" * 64)),
            _msg(PtmCmd.CMD_INIT, PtmInitRequest(PtmInitFlag.PTM_INIT_FLAG_DELETE_VOLATILE)),
        ]
    )
    # swtpm_ioctl: -c, -i, -e, -l, -h data, -C, -v, --save/--load, -g, -b, --info, --lock-storage, -s.
    yield encode(
        [
            getcap,
            init,
            _msg(PtmCmd.CMD_GET_TPMESTABLISHED),
            _msg(PtmCmd.CMD_SET_LOCALITY, PtmLocRequest(2)),
            _msg(PtmCmd.CMD_HASH_START),
            _msg(PtmCmd.CMD_HASH_DATA, PtmHdataRequest(b"measured boot code" * 8)),
            _msg(PtmCmd.CMD_HASH_END),
            _msg(PtmCmd.CMD_CANCEL_TPM_CMD),
            _msg(PtmCmd.CMD_STORE_VOLATILE),
            _msg(PtmCmd.CMD_GET_CONFIG),
            _msg(PtmCmd.CMD_SET_BUFFERSIZE, PtmSetBufferSizeRequest(0)),
            _msg(PtmCmd.CMD_GET_INFO, PtmGetInfoRequest(SwtpmInfo.SWTPM_INFO_TPMSPECIFICATION, 0)),
            _msg(PtmCmd.CMD_GET_INFO, PtmGetInfoRequest(SwtpmInfo.SWTPM_INFO_TPMATTRIBUTES, 10)),
            _msg(PtmCmd.CMD_LOCK_STORAGE, PtmLockStorageRequest(0)),
            stop,
            _msg(PtmCmd.CMD_SHUTDOWN),
        ]
    )
    # Save a blob and load it back (swtpm_ioctl --save / --load, libvirt's migration).
    yield encode([init, blobs[0], stop, _msg(PtmCmd.CMD_SET_STATEBLOB, PtmSetStateRequest(0, 1, bytes(300))), init])
    # libvirt: GET_CAPABILITY right after start, then --terminate on SHUTDOWN.
    yield encode([getcap, _msg(PtmCmd.CMD_GET_CONFIG), init, _msg(PtmCmd.CMD_SHUTDOWN), getcap])
    # Malformed: unknown, short code, short/long/trailing bodies, oversized blob, fd everywhere.
    yield encode(
        [
            _raw(0xFFFF),
            b"\x00\x00",
            _raw(PtmCmd.CMD_INIT),
            _raw(PtmCmd.CMD_INIT, bytes(5)),
            _raw(PtmCmd.CMD_STOP, b"x"),
            _raw(PtmCmd.CMD_LOCK_STORAGE, bytes(8)),
            _raw(PtmCmd.CMD_GET_STATEBLOB, bytes(12) + b"trailing"),
            _raw(PtmCmd.CMD_SET_BUFFERSIZE, bytes(5)),
            _raw(PtmCmd.CMD_GET_INFO, (1).to_bytes(8, "big") + (100000).to_bytes(4, "big") + bytes(4)),
            Record(_msg(PtmCmd.CMD_GET_CAPABILITY), flag=True),
            getcap,
        ]
    )
    yield encode([_raw(PtmCmd.CMD_SET_STATEBLOB, bytes(8) + (1 << 30).to_bytes(4, "big")), getcap])
    yield encode([_raw(PtmCmd.CMD_HASH_DATA, (1 << 31).to_bytes(4, "big")), init])
    yield encode([init, _raw(PtmCmd.CMD_HASH_DATA, (10).to_bytes(4, "big") + b"abc"), _msg(PtmCmd.CMD_HASH_END)])
    for kind in (I386, X86_64):  # the ioctl layouts: same bodies, both ABIs' union sizes
        size = by_cmd(PtmCmd.CMD_GET_INFO).ioctl_size(kind)
        yield encode([_raw(PtmCmd.CMD_GET_INFO, bytes(size))])
