"""The worker thread: order, results, errors, a free event loop, and no
abandoned jobs."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from vtpm_cuse import worker as worker_module
from vtpm_cuse.worker import Worker


def test_results_and_exceptions_come_back():
    async def main():
        w = Worker()
        assert await w.run(lambda: 41 + 1) == 42
        with pytest.raises(ZeroDivisionError):
            await w.run(lambda: 1 / 0)
        assert await w.run(threading.get_ident) != threading.get_ident()

    trio.run(main)


def test_jobs_run_one_at_a_time_in_submission_order():
    order: list[int] = []
    active = [0]

    def job(i: int) -> None:
        active[0] += 1
        assert active[0] == 1, "two jobs overlapped"
        time.sleep(0.002)
        order.append(i)
        active[0] -= 1

    async def main():
        w = Worker()
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(w.run, lambda i=i: job(i))
                await trio.sleep(0)  # submit in this order

    trio.run(main)
    assert order == list(range(20))


def test_event_loop_stays_free_while_a_job_runs():
    async def main():
        w = Worker()
        ticks = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run, lambda: time.sleep(0.3))
            deadline = trio.current_time() + 0.2
            while trio.current_time() < deadline:
                await trio.sleep(0.01)
                ticks += 1
        assert ticks >= 10

    trio.run(main)


def test_a_started_job_is_waited_for_even_when_cancelled():
    finished = threading.Event()

    async def main():
        w = Worker()
        with trio.move_on_after(0.05):
            await w.run(lambda: (time.sleep(0.2), finished.set()))
        # The cancel scope could only end once the job had finished.
        assert finished.is_set()

    trio.run(main)


def test_idle_thread_retires_and_a_new_job_starts_another(monkeypatch):
    monkeypatch.setattr(worker_module, "IDLE_SECONDS", 0.05)

    async def main():
        w = Worker(name="retiring-worker")
        await w.run(threading.get_ident)
        await trio.sleep(0.3)
        assert not any(t.name == "retiring-worker" for t in threading.enumerate())
        assert await w.run(lambda: "still serving") == "still serving"

    trio.run(main)


def test_a_job_run_here_on_another_thread_takes_its_turn_after_the_running_job():
    order: list[str] = []
    started = threading.Event()

    def slow() -> None:
        started.set()
        time.sleep(0.3)
        order.append("worker job")

    async def main():
        w = Worker()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run, slow)
            await trio.to_thread.run_sync(started.wait)
            ran_on = await trio.to_thread.run_sync(
                lambda: w.run_here(lambda: (order.append("here"), threading.get_ident())[1])
            )
            assert ran_on != threading.get_ident()

    trio.run(main)
    assert order == ["worker job", "here"]


def test_inline_runs_only_when_nothing_runs_or_waits():
    release = threading.Event()

    async def main():
        w = Worker()
        done = w.try_run_inline(threading.get_ident)
        assert done is not None and done.unwrap() == threading.get_ident()  # idle: right here
        assert w.idle
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run, release.wait)
            await trio.sleep(0.05)
            assert not w.idle
            assert w.try_run_inline(lambda: "overtaken") is None  # would overtake the job
            release.set()
        assert w.idle
        assert w.try_run_inline(lambda: 7).unwrap() == 7

    trio.run(main)


def test_turn_serves_threads_in_arrival_order():
    turn = worker_module.Turn()
    order: list[int] = []
    turn.acquire()
    threads = []
    for i in range(5):
        t = threading.Thread(target=lambda i=i: (turn.acquire(), order.append(i), turn.release()))
        t.start()
        threads.append(t)
        time.sleep(0.05)  # each has taken its ticket before the next starts
    assert not turn.try_acquire()
    turn.release()
    for t in threads:
        t.join(10)
    assert order == list(range(5))
    assert turn.idle
