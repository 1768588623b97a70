"""The TPM data channel: commands in, responses out, served by one thread that blocks on it.

Why a thread: a command's round trip is dominated by hand-offs, not by the
engine (see README, "What runs where").  A thread that sleeps in ``poll()``,
reads a command, runs it in the engine itself and writes the response pays
four system calls and no scheduler; serving the same socket from trio costs
about 10 us more per round trip, and handing the command to the worker
thread 30-70 us more.  The thread takes the TPM's turn
(:meth:`vtpm_cuse.vtpm.Vtpm.execute_here`), so commands and control
operations still run one at a time in arrival order, and the control
channel -- served by trio -- stays responsive and can CANCEL a long command.

Clients: every connection from the listener (and one passed with
CMD_SET_DATAFD) is served until it closes (persistent connection) or --
with ``disconnect`` -- for exactly one command, so both client styles work:
the swtpm TCTI and QEMU keep one connection, ``-p`` style clients reconnect
for every command.  Unlike swtpm, which serves one connection at a time
behind a listen backlog of 1, up to :data:`MAX_CLIENTS` connections are
open at once and complete commands are executed one at a time in the order
they arrived, so an idle or slow client holds nobody up: of many clients
connecting at once, each is answered in turn, and further ones wait in the
kernel's listen queue (:data:`~.endpoints.LISTEN_BACKLOG`).

Framing as swtpm's (one read is one command; see :mod:`.data_framing`),
with two bounds against hostile clients: a command whose header announces
more than arrived is executed as it stands (the TPM answers with a size
error) once :data:`COMPLETION_TIMEOUT` has passed since its first byte, and
while the client table is full and more clients wait, a connection with no
command in progress for ``idle_timeout`` seconds is closed to make room.
A client that goes away mid-command or mid-response only loses its answer.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from vtpm_cuse.tpm.errors import TPM_RC
from vtpm_cuse.tpm.wire import error_response
from vtpm_cuse.vtpm import LocalityPolicy

from .data_framing import (
    COMPLETION_TIMEOUT,
    MAX_MESSAGE,
    DataMessage,
    expected_length,
    frame_response,
    parse_message,
)

__all__ = ["DEFAULT_IDLE_TIMEOUT", "MAX_CLIENTS", "SEND_TIMEOUT", "CommandExecutor", "DataChannel"]

log = logging.getLogger(__name__)

MAX_CLIENTS = 64
"""Data connections open at once; more wait in the listen queue (bounds our descriptors)."""
DEFAULT_IDLE_TIMEOUT = 10.0
"""Seconds a connection may sit without a command while the table is full and others wait.

Applies only then, so QEMU's and tpm2-tss' long-lived connections are never cut on a
TPM that is not overrun."""
SEND_TIMEOUT = 5.0
"""Seconds a client may take to accept a response before it is disconnected."""
ACCEPT_BACKOFF = 0.1
"""Seconds the listener is left alone after accept() failed for lack of resources
(EMFILE, ENFILE, ENOBUFS, ENOMEM): poll() is level-triggered, retrying at once would spin."""
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_READABLE = select.POLLIN | select.POLLPRI


class CommandExecutor(Protocol):
    """What the data channel needs from a Vtpm."""

    locality: int
    locality_policy: LocalityPolicy

    def execute_here(self, command: bytes) -> bytes: ...


@dataclass(eq=False, slots=True)
class _Client:
    """One data connection and the command it is sending."""

    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    started: float = 0.0
    """When the first byte of the command in ``received`` arrived (monotonic)."""
    last_active: float = field(default_factory=time.monotonic)
    queued: bool = False
    """Its command is complete and waits in the run queue (not polled meanwhile)."""


class DataChannel:
    """Serves TPM commands on a listener and/or handed-over connections.

    ``on_client_lost`` is called (on the trio thread) when a served connection
    ends; the daemon uses it for ``-t/--terminate``.
    """

    def __init__(
        self,
        vtpm: CommandExecutor,
        *,
        disconnect: bool = False,
        on_client_lost: Callable[[], None] | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout {idle_timeout!r} must be a positive number of seconds")
        if max_clients < 1:
            raise ValueError(f"max_clients {max_clients!r} must be at least 1")
        self._vtpm = vtpm
        self._disconnect = disconnect
        self._on_client_lost = on_client_lost
        self._idle_timeout = idle_timeout
        self._max_clients = max_clients
        self._lock = threading.Lock()
        self._adopted: list[socket.socket] = []
        self._open = 0
        """Connections being served or handed over and not yet picked up (under ``_lock``)."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopping = False
        self._accept_resume = 0.0
        """time.monotonic() before which the listener is not polled (after a resource error)."""
        self._accept_failing = False
        self._token: trio.lowlevel.TrioToken | None = None
        self._partial: set[_Client] = set()
        """Clients with part of a command received (data thread only): the only ones
        with a completion deadline, so an idle loop iteration looks at nobody."""

    @property
    def in_use(self) -> bool:
        """Whether a data connection is being served (CMD_SET_DATAFD is refused then)."""
        return self._open > 0

    async def run(
        self,
        listener: socket.socket | None = None,
        connected: socket.socket | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled.  Connections from :meth:`adopt` are served too.

        The sockets stay owned by the caller (the data thread closes only the
        connections it accepted or was handed).
        """
        self._token = trio.lowlevel.current_trio_token()
        if connected is not None:
            self._hand_over(connected)
        finished = trio.Event()
        failure: list[BaseException] = []

        def thread_main() -> None:
            try:
                self._serve(listener)
            except BaseException as exc:  # reported on the trio side
                failure.append(exc)
            finally:
                self._call_soon(finished.set)

        thread = threading.Thread(target=thread_main, name="vtpm-data", daemon=True)
        thread.start()
        task_status.started()
        try:
            await finished.wait()
            if failure:
                raise RuntimeError("the data channel thread failed") from failure[0]
        finally:
            self._stopping = True
            self._wake()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(thread.join)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def adopt(self, sock: socket.socket) -> bool:
        """Serve a connected socket received with CMD_SET_DATAFD; False if one is in use."""
        if self._open or self._token is None or self._stopping:
            return False
        self._hand_over(sock)
        return True

    # --- trio side helpers ----------------------------------------------------------------

    def _hand_over(self, sock: socket.socket) -> None:
        with self._lock:
            self._open += 1
            self._adopted.append(sock)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is pending already (or we are closing)

    def _call_soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the trio thread (from the data thread)."""
        if self._token is None:
            return
        try:
            self._token.run_sync_soon(fn)
        except trio.RunFinishedError:
            pass

    # --- the data thread -----------------------------------------------------------------

    def _serve(self, listener: socket.socket | None) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        clients: dict[int, _Client] = {}
        run_queue: collections.deque[_Client] = collections.deque()
        self._partial.clear()
        listening = False
        if listener is not None:
            listener.setblocking(False)
        try:
            while not self._stopping:
                want_listen = (
                    listener is not None
                    and len(clients) < self._max_clients
                    and time.monotonic() >= self._accept_resume
                )
                if want_listen != listening:
                    if want_listen:
                        poller.register(listener, select.POLLIN)
                    else:
                        poller.unregister(listener)
                    listening = want_listen
                full = listener is not None and not listening
                timeout = 0 if run_queue else self._poll_timeout(clients, full)
                for fd, _events in poller.poll(timeout):
                    if fd == self._wake_r:
                        self._take_adopted(poller, clients)
                    elif listener is not None and fd == listener.fileno():
                        self._accept(listener, poller, clients)
                    elif (client := clients.get(fd)) is not None:
                        self._receive(client, poller, clients, run_queue)
                self._expire(poller, clients, run_queue, listener if full else None)
                if run_queue:
                    self._run_one(run_queue.popleft(), poller, clients)
        finally:
            for client in list(clients.values()):
                self._close(client, poller, clients, notify=False)
            with self._lock:
                for sock in self._adopted:
                    sock.close()
                self._adopted.clear()
                self._open = 0

    def _poll_timeout(self, clients: dict[int, _Client], full: bool) -> int | None:
        """Milliseconds until the next completion deadline or idle check; None: none pending."""
        deadlines = [c.started + COMPLETION_TIMEOUT for c in self._partial]
        if self._accept_resume > time.monotonic():
            deadlines.append(self._accept_resume)
        if full:  # someone may be waiting to get in
            deadlines.extend(c.last_active + self._idle_timeout for c in clients.values() if not c.queued)
        if not deadlines:
            return None
        return max(0, int((min(deadlines) - time.monotonic()) * 1000) + 1)

    def _take_adopted(self, poller: select.poll, clients: dict[int, _Client]) -> None:
        try:
            while os.read(self._wake_r, 64):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            adopted, self._adopted = self._adopted, []
        for sock in adopted:
            self._add(sock, poller, clients)

    def _accept(self, listener: socket.socket, poller: select.poll, clients: dict[int, _Client]) -> None:
        """One connection per readiness: poll is level-triggered, so the next loop takes
        the next one, and the usual lone client costs no second, failing accept()."""
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # e.g. EMFILE, or the peer reset before accept
            if exc.errno in _RESOURCE_ERRNOS:
                self._accept_resume = time.monotonic() + ACCEPT_BACKOFF
                if not self._accept_failing:  # once per burst, not ten lines a second
                    log.warning("accepting a data connection failed: %s; retrying every %.1f s", exc, ACCEPT_BACKOFF)
                self._accept_failing = True
            else:
                log.warning("accepting a data connection failed: %s", exc)
            return
        self._accept_failing = False
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._open += 1
        self._add(sock, poller, clients)

    def _add(self, sock: socket.socket, poller: select.poll, clients: dict[int, _Client]) -> None:
        sock.setblocking(False)
        clients[sock.fileno()] = _Client(sock)
        poller.register(sock, _READABLE)

    def _receive(
        self,
        client: _Client,
        poller: select.poll,
        clients: dict[int, _Client],
        run_queue: collections.deque[_Client],
    ) -> None:
        try:
            data = client.sock.recv(MAX_MESSAGE - len(client.received))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.info("data connection lost: %s", exc)
            data = b""
        if not data:
            self._close(client, poller, clients)
            return
        now = time.monotonic()
        received = client.received
        if not received:
            client.started = now
        received += data
        client.last_active = now
        if len(received) >= expected_length(received):
            self._queue(client, poller, run_queue)
        else:
            self._partial.add(client)

    def _queue(self, client: _Client, poller: select.poll, run_queue: collections.deque[_Client]) -> None:
        """The command is complete (or its time is up): stop reading, wait for its turn."""
        client.queued = True
        self._partial.discard(client)
        poller.unregister(client.sock)
        run_queue.append(client)

    def _expire(
        self,
        poller: select.poll,
        clients: dict[int, _Client],
        run_queue: collections.deque[_Client],
        full_listener: socket.socket | None,
    ) -> None:
        now = time.monotonic()
        for client in [c for c in self._partial if now - c.started >= COMPLETION_TIMEOUT]:
            self._queue(client, poller, run_queue)  # incomplete: the TPM names the size error
        if full_listener is None:
            return
        idle = [c for c in clients.values() if not c.queued and not c.received]
        idle = [c for c in idle if now - c.last_active >= self._idle_timeout]
        if idle and _has_waiting_connection(full_listener):
            for client in idle:
                log.info("closing a data connection idle for %.0f s: other clients wait", now - client.last_active)
                self._close(client, poller, clients)

    def _run_one(self, client: _Client, poller: select.poll, clients: dict[int, _Client]) -> None:
        data = bytes(client.received)
        client.received.clear()
        client.queued = False
        message = parse_message(data)
        if message.session_end:
            self._close(client, poller, clients, registered=False)
            return
        response = frame_response(self._execute(message), message)
        if not _send_all(client.sock, response, SEND_TIMEOUT):
            self._close(client, poller, clients, registered=False)
            return
        if self._disconnect:
            self._close(client, poller, clients, registered=False)
            return
        client.last_active = time.monotonic()
        poller.register(client.sock, _READABLE)

    def _execute(self, message: DataMessage) -> bytes:
        if message.locality is not None:
            if not self._vtpm.locality_policy.allows(message.locality):
                return error_response(TPM_RC.LOCALITY)
            # swtpm lets the header's locality replace the current one (it is
            # the same variable CMD_SET_LOCALITY sets), so it stays in effect.
            self._vtpm.locality = message.locality
        try:
            return self._vtpm.execute_here(message.command)
        except Exception:
            log.exception("TPM command failed unexpectedly")
            return error_response(TPM_RC.FAILURE)

    def _close(
        self,
        client: _Client,
        poller: select.poll,
        clients: dict[int, _Client],
        *,
        registered: bool | None = None,
        notify: bool = True,
    ) -> None:
        fd = client.sock.fileno()
        if registered if registered is not None else not client.queued:
            poller.unregister(fd)
        clients.pop(fd, None)
        self._partial.discard(client)
        client.sock.close()
        with self._lock:
            self._open -= 1
        if notify and self._on_client_lost is not None:
            self._call_soon(self._on_client_lost)


def _has_waiting_connection(listener: socket.socket) -> bool:
    """Whether a client waits in the listen queue (the listener is readable)."""
    probe = select.poll()
    probe.register(listener, select.POLLIN)
    return bool(probe.poll(0))


def _send_all(sock: socket.socket, data: bytes, timeout: float) -> bool:
    """Send ``data`` whole within ``timeout`` seconds; False if the client is gone or too slow.

    One send() is the whole job nearly always (a response fits the socket buffer); the
    deadline and the poll for writability are set up only when it was not."""
    sent = _send_once(sock, data)
    if sent is None:
        return False
    if sent == len(data):
        return True
    return _send_rest(sock, memoryview(data)[sent:], timeout)


def _send_rest(sock: socket.socket, view: memoryview, timeout: float) -> bool:
    """The rest of :func:`_send_all`, waiting for the client to make room."""
    deadline = time.monotonic() + timeout
    probe = select.poll()
    probe.register(sock, select.POLLOUT)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log.info("data client did not take its response within %.0f s; disconnecting", timeout)
            return False
        probe.poll(int(remaining * 1000) + 1)
        sent = _send_once(sock, view)
        if sent is None:
            return False
        view = view[sent:]
    return True


def _send_once(sock: socket.socket, data: bytes | memoryview) -> int | None:
    """One non-blocking send(): the bytes it took (0 when the buffer is full), None when
    the client is gone."""
    try:
        return sock.send(data)
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError as exc:
        log.info("data connection lost while answering: %s", exc)
        return None
