"""The worker thread TPM commands run on, and how the event loop waits for it.

Why not ``trio.to_thread.run_sync``: on the virtual machines this project runs
on, each hand-off through it costs 145 us (measured: 3000 no-op jobs), ten
times the engine's own time for a GetRandom.  Waking the loop with one byte on
a pipe that the waiting task watches with ``wait_readable`` costs 47 us.  The
semantics stay the same as ``to_thread.run_sync`` with a CapacityLimiter(1):
jobs run one at a time in submission order, the event loop stays free while a
job runs, and a job that has started is waited for even if the caller is
cancelled (the engine must never be abandoned half-way through a command).

Jobs can also run *elsewhere*, without the hand-off, as long as they take their
turn: :class:`Turn` is the one ticket every job of a Worker holds while it runs.
The socket data thread runs its commands on itself with :meth:`Worker.run_here`
(it blocks anyway), and the event loop runs a short command inline with
:meth:`Worker.try_run_inline` when nothing is running or queued -- so a job never
overtakes an earlier one and two jobs never overlap, wherever they run.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

import outcome
import trio

T = TypeVar("T")

#: A worker thread with nothing to do for this long exits; the next job starts a new one.
IDLE_SECONDS = 30.0


class Turn:
    """A first-come-first-served lock across threads (a ticket lock).

    ``threading.Lock`` is not fair: a thread releasing and re-acquiring it in a
    loop (the data thread serving a busy client) could starve a control
    operation waiting on the worker.  Tickets are served in the order taken.

    The uncontended case -- nearly every command -- costs one acquire and release
    of a plain lock each way: the Condition (whose ``with`` and ``notify_all`` are
    Python code) is only entered by a thread that has to wait, and only woken when
    someone waits.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._next = 0
        self._serving = 0
        self._waiting = 0
        """Threads waiting for their ticket (under ``_mutex``)."""

    def acquire(self) -> None:
        with self._mutex:
            ticket = self._next
            self._next += 1
            if self._serving == ticket:
                return
            self._waiting += 1
            try:
                while self._serving != ticket:
                    self._cond.wait()
            finally:
                self._waiting -= 1

    def try_acquire(self) -> bool:
        """Take the turn only if nobody holds it or waits for it; never blocks on a job."""
        with self._mutex:
            if self._next != self._serving:
                return False
            self._next += 1
            return True

    def release(self) -> None:
        with self._mutex:
            self._serving += 1
            if self._waiting:
                self._cond.notify_all()

    @property
    def idle(self) -> bool:
        """Nobody holds or waits for the turn (a snapshot)."""
        return self._next == self._serving

    def __enter__(self) -> Turn:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Worker:
    """One thread running blocking jobs in order for the trio tasks that submit them."""

    def __init__(self, name: str = "vtpm-worker") -> None:
        self._name = name
        self.turn = Turn()
        self._queued = 0
        """Jobs submitted from the loop and not yet finished (loop thread only)."""
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        # trio's fair Lock admits waiters in arrival order: that is the job order, and
        # it means only one task at a time waits on the pipe.
        self._turn = trio.Lock()
        self._done_r, self._done_w = os.pipe()
        os.set_blocking(self._done_r, False)
        self._slot = _ThreadSlot()
        weakref.finalize(self, _close_fds, self._done_r, self._done_w)

    @property
    def idle(self) -> bool:
        """No job runs or waits (a snapshot; on the loop thread it holds until the next
        await, as long as no other thread submits)."""
        return not self._queued and self.turn.idle

    def run_here(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on the calling (non-loop) thread, in turn with the worker's jobs."""
        turn = self.turn
        turn.acquire()
        try:
            return fn(*args)
        finally:
            turn.release()

    def try_run_inline(self, fn: Callable[[], T]) -> outcome.Outcome | None:
        """Run a short ``fn()`` right here on the loop if no job runs or waits; else None.

        Saves the two thread hand-offs of :meth:`run` for commands known to be
        short; the loop is blocked meanwhile, so never use it for long jobs.
        """
        if self._queued or not self.turn.try_acquire():
            return None
        try:
            return outcome.capture(fn)
        finally:
            self.turn.release()

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the worker thread and return its result (or raise its exception)."""
        self._queued += 1
        try:
            return await self._run_queued(fn)
        finally:
            self._queued -= 1

    async def _run_queued(self, fn: Callable[[], T]) -> T:
        try:
            # The uncontended case skips a scheduler pass: waiting on the pipe is the checkpoint.
            self._turn.acquire_nowait()
        except trio.WouldBlock:
            await self._turn.acquire()
        try:
            box: list[outcome.Outcome] = []
            self._submit(fn, box)
            with trio.CancelScope(shield=True):
                while True:
                    await trio.lowlevel.wait_readable(self._done_r)
                    try:
                        os.read(self._done_r, 1)
                    except BlockingIOError:
                        continue
                    return box[0].unwrap()
        finally:
            self._turn.release()

    def _submit(self, fn: Callable[[], object], box: list) -> None:
        slot = self._slot
        with slot.lock:
            self._jobs.put((fn, box))
            if not slot.running:
                slot.running = True
                threading.Thread(
                    target=_serve, args=(self._jobs, self._done_w, slot, self.turn), name=self._name, daemon=True
                ).start()


class _ThreadSlot:
    """Whether a worker thread is serving; changed only under ``lock`` so that a
    thread retiring for idleness and a job being submitted cannot miss each other."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = False


def _serve(jobs: queue.SimpleQueue, done_w: int, slot: _ThreadSlot, turn: Turn) -> None:
    # A plain function, not a method: the thread must not keep its Worker alive.
    while True:
        try:
            fn, box = jobs.get(timeout=IDLE_SECONDS)
        except queue.Empty:
            with slot.lock:
                if jobs.empty():
                    slot.running = False
                    return
            continue
        with turn:
            box.append(outcome.capture(fn))
        os.write(done_w, b"\0")


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
