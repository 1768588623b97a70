"""The worker thread TPM commands run on, and how the event loop waits for it.

Why not ``trio.to_thread.run_sync``: on the virtual machines this project runs
on, each hand-off through it costs 145 us (measured: 3000 no-op jobs), ten
times the engine's own time for a GetRandom.  Waking the loop with one byte on
a pipe that the waiting task watches with ``wait_readable`` costs 47 us.  The
semantics stay the same as ``to_thread.run_sync`` with a CapacityLimiter(1):
jobs run one at a time in submission order, the event loop stays free while a
job runs, and a job that has started is waited for even if the caller is
cancelled (the engine must never be abandoned half-way through a command).
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


class Worker:
    """One thread running blocking jobs in order for the trio tasks that submit them."""

    def __init__(self, name: str = "vtpm-worker") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        # trio's fair Lock admits waiters in arrival order: that is the job order, and
        # it means only one task at a time waits on the pipe.
        self._turn = trio.Lock()
        self._done_r, self._done_w = os.pipe()
        os.set_blocking(self._done_r, False)
        self._slot = _ThreadSlot()
        weakref.finalize(self, _close_fds, self._done_r, self._done_w)

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the worker thread and return its result (or raise its exception)."""
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
                    target=_serve, args=(self._jobs, self._done_w, slot), name=self._name, daemon=True
                ).start()


class _ThreadSlot:
    """Whether a worker thread is serving; changed only under ``lock`` so that a
    thread retiring for idleness and a job being submitted cannot miss each other."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = False


def _serve(jobs: queue.SimpleQueue, done_w: int, slot: _ThreadSlot) -> None:
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
        box.append(outcome.capture(fn))
        os.write(done_w, b"\0")


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
