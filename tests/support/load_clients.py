"""Many clients at once against a socket daemon, and what the daemon costs meanwhile.

Shared by ``scripts/load_sockets.py`` (figures, ours beside swtpm) and
``tests/test_sockets_hostile.py`` (the same bursts as assertions).  A burst is
what tpm2-tss' swtpm TCTI does per command, times N, all at once: connect, send
one request, read one response, close.  Every client is served by one
selector loop in the calling thread, so the order in which requests left and
answers came back is known exactly.
"""

from __future__ import annotations

import errno
import os
import resource
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

GET_RANDOM_8 = bytes.fromhex("80010000000c0000017b0008")
GET_RANDOM_8_RESPONSE_SIZE = 20
CMD_GET_CAPABILITY = (0x01).to_bytes(4, "big")
GET_CAPABILITY_RESPONSE_SIZE = 8
FD_HEADROOM = 64
"""Descriptors kept free beyond one per client (stdio, the test's own sockets)."""


@dataclass(frozen=True)
class Request:
    """One kind of per-command client: where it connects, what it sends, how long the answer is."""

    port: int
    message: bytes
    response_size: int

    @property
    def is_tpm_command(self) -> bool:
        return self.message[:1] == b"\x80"

    def complete(self, response: bytes) -> bool:
        """A whole answer: a TPM response as long as its header says, a control one of
        ``response_size`` bytes, or its 4-byte result when that is an error."""
        if self.is_tpm_command:
            return len(response) >= 10 and len(response) >= int.from_bytes(response[2:6], "big")
        return len(response) >= self.response_size or (len(response) >= 4 and response[:4] != bytes(4))

    def answered(self, response: bytes) -> bool:
        """A success: TPM responses carry the code at 6..10, control responses at 0..4."""
        code = response[6:10] if self.is_tpm_command else response[:4]
        return code == bytes(4) and len(response) == self.response_size


@dataclass
class _Client:
    request: Request
    sock: socket.socket
    index: int
    started: float
    sent_at: int = -1
    received: bytes = b""


@dataclass
class BurstResult:
    """What a burst observed; ``overtaken`` is per request kind (the channels have no common order)."""

    clients: int
    answered: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    duration: float = 0.0
    slowest: float = 0.0
    max_overtaken: dict[bytes, int] = field(default_factory=dict)
    """Most later-sent clients of the same kind answered before one client."""

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def ensure_fd_limit(needed: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to ``needed`` + headroom (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < wanted:
        top = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if top < wanted:
            raise RuntimeError(f"RLIMIT_NOFILE hard limit {hard} is below the {wanted} descriptors a burst needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


def burst(requests: list[Request], timeout: float = 60.0) -> BurstResult:
    """Connect one client per entry of ``requests``, in that order, all before any is answered.

    Each sends its message once connected and counts as answered when a
    complete success response arrives; no answer within ``timeout`` seconds,
    a refused or reset connection, or an early EOF are errors by kind.
    """
    ensure_fd_limit(len(requests))
    result = BurstResult(clients=len(requests))
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, _Client] = {}
    send_seq = 0
    answers: list[_Client] = []
    start = time.monotonic()

    def finish(client: _Client, error: str | None) -> None:
        selector.unregister(client.sock)
        client.sock.close()
        del pending[client.sock]
        if error is not None:
            result.error(error)
            return
        result.answered += 1
        result.slowest = max(result.slowest, time.monotonic() - client.started)
        answers.append(client)

    for index, request in enumerate(requests):
        sock = socket.socket()
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", request.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            result.error(f"connect: {os.strerror(code)}")
            continue
        client = _Client(request, sock, index, time.monotonic())
        pending[sock] = client
        selector.register(sock, selectors.EVENT_WRITE)
    while pending:
        for key, events in selector.select(timeout=0.2):
            client = pending[key.fileobj]  # type: ignore[index]
            try:
                if events & selectors.EVENT_WRITE:
                    failure = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if failure:
                        finish(client, f"connect: {os.strerror(failure)}")
                        continue
                    client.sock.sendall(client.request.message)
                    client.sent_at = send_seq
                    send_seq += 1
                    selector.modify(client.sock, selectors.EVENT_READ)
                    continue
                chunk = client.sock.recv(4096)
            except OSError as exc:
                finish(client, type(exc).__name__)
                continue
            client.received += chunk
            if not chunk:
                finish(client, "closed without answer")
            elif client.request.complete(client.received):
                ok = client.request.answered(client.received)
                finish(client, None if ok else f"failed: {client.received[:10].hex()}")
        now = time.monotonic()
        for client in [c for c in pending.values() if now - c.started > timeout]:
            finish(client, f"no answer within {timeout:.0f} s")
    selector.close()
    result.duration = time.monotonic() - start
    result.max_overtaken = _max_overtaken(answers)
    return result


def _max_overtaken(answers: list[_Client]) -> dict[bytes, int]:
    """Per request kind: the most clients sent later but answered earlier than one client."""
    worst: dict[bytes, int] = {}
    by_kind: dict[bytes, list[int]] = {}
    for client in answers:  # in answer order
        by_kind.setdefault(client.request.message, []).append(client.sent_at)
    for kind, sent in by_kind.items():
        overtaken = 0
        for position, sent_at in enumerate(sent):
            overtaken = max(overtaken, sum(1 for earlier in sent[:position] if earlier > sent_at))
        worst[kind] = overtaken
    return worst


@dataclass
class ProcessUsage:
    """Peak resident memory and open descriptors of a process, sampled from /proc."""

    pid: int
    peak_rss_kib: int = 0
    peak_fds: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> tuple[int, int]:
        """(RSS in KiB, open descriptors) now."""
        rss = 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.peak_fds = max(self.peak_fds, fds)
        return rss, fds

    def cpu_seconds(self) -> float:
        """User + system CPU time the process used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> ProcessUsage:
        """Sample every 20 ms until exit; peaks restart from zero."""
        self.peak_rss_kib = self.peak_fds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.sample()
            except OSError:
                return


# -- clients that go away in the middle ------------------------------------------------

GET_CAPABILITY_COMMANDS = bytes.fromhex("8001000000160000017a000000020000011f00000400")
"""TPM2_GetCapability(TPM_CAP_COMMANDS, TPM_CC_FIRST, 1024): the longest answer a fresh TPM gives."""
CMD_GET_STATEBLOB_PERMANENT = (0x0C).to_bytes(4, "big") + bytes(4) + (1).to_bytes(4, "big") + bytes(4)
SET_STATEBLOB_ANNOUNCED = 64 * 1024
SMALL_RCVBUF = 256
"""Receive buffer of a client that reads a few bytes of a long answer, so the server's send is partial."""


def _connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def vanish_mid_command(data_port: int) -> None:
    """Half a TPM command, then gone."""
    with _connect(data_port) as s:
        s.sendall(GET_RANDOM_8[:5])


def vanish_mid_response(data_port: int) -> None:
    """A long answer asked for, four bytes of it read, then gone (the rest unread: a reset)."""
    with _connect(data_port, SMALL_RCVBUF) as s:
        s.sendall(GET_CAPABILITY_COMMANDS)
        s.recv(4)


def vanish_mid_control_message(ctrl_port: int) -> None:
    """Two bytes of a command code, then gone."""
    with _connect(ctrl_port) as s:
        s.sendall(CMD_GET_CAPABILITY[:2])


def vanish_mid_set_stateblob(ctrl_port: int) -> None:
    """A SET_STATEBLOB announcing 64 KiB, an eighth of it sent, then gone between chunks."""
    header = (0x0D).to_bytes(4, "big") + bytes(4) + (2).to_bytes(4, "big") + SET_STATEBLOB_ANNOUNCED.to_bytes(4, "big")
    with _connect(ctrl_port) as s:
        s.sendall(header + bytes(SET_STATEBLOB_ANNOUNCED // 8))


def vanish_mid_get_stateblob(ctrl_port: int) -> None:
    """The permanent state blob asked for, four bytes of it read, then gone."""
    with _connect(ctrl_port, SMALL_RCVBUF) as s:
        s.sendall(CMD_GET_STATEBLOB_PERMANENT)
        s.recv(4)


VANISHING_DATA = (vanish_mid_command, vanish_mid_response)
VANISHING_CONTROL = (vanish_mid_control_message, vanish_mid_set_stateblob, vanish_mid_get_stateblob)


def vanishing_rounds(data_port: int, ctrl_port: int, rounds: int) -> int:
    """``rounds`` times each vanishing client, interleaved; returns the connections made."""
    made = 0
    for _ in range(rounds):
        for data_client in VANISHING_DATA:
            data_client(data_port)
            made += 1
        for ctrl_client in VANISHING_CONTROL:
            ctrl_client(ctrl_port)
            made += 1
    return made
