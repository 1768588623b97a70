"""The CUSE protocol layer against the real kernel: the echo device as /dev/<name>.

Runs INSIDE the cusevm guest (scripts/cusevm/pytest-in-vm.sh, or tests/test_vm_echo.py
from the host), where /dev/cuse exists and we are root. Outside such a kernel these
tests fail on purpose instead of skipping: a green run must mean the kernel was really
exercised.

The guest runs 10-30x slower than native and starting Python there takes seconds,
so one echo server process is shared by the tests and restarted only when a test
stopped it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import signal
import stat
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ioctl_defs.ioc import ior
from vtpm_cuse.cuse.echo import ECHO_IOC_CLEAR, ECHO_IOC_COUNTER, ECHO_IOC_INCREMENT

pytestmark = pytest.mark.vm

PROJECT = Path(__file__).resolve().parents[2]
CUSE = Path("/dev/cuse")
START_TIMEOUT = 120.0  # python + trio import under TCG takes seconds
U64 = struct.Struct("=Q")


def require_cuse() -> None:
    if not CUSE.exists():
        pytest.fail(
            "/dev/cuse does not exist: these tests need a kernel with CUSE. Run them in the VM: "
            "scripts/cusevm/pytest-in-vm.sh tests/vm/ (or tests/test_vm_echo.py from the host)"
        )
    if os.geteuid() != 0:
        pytest.fail("/dev/cuse is root-only: run these tests as root (the VM harness does)")


@dataclass
class EchoServer:
    name: str
    process: subprocess.Popen[str]

    @property
    def node(self) -> Path:
        return Path("/dev") / self.name

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def start_echo(name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vtpm_cuse.cuse.echo", name],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(process: subprocess.Popen[str], name: str) -> None:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
    line = process.stdout.readline() if ready else ""
    if line.strip() != f"ready /dev/{name}":
        process.kill()
        _, err = process.communicate(timeout=30)
        pytest.fail(f"echo server for {name!r} did not come up (stdout {line!r}, stderr {err!r})")


class EchoServers:
    """Starts the shared echo server on demand (again if a test stopped it)."""

    def __init__(self) -> None:
        self.current: EchoServer | None = None
        self.generation = 0

    def running(self) -> EchoServer:
        if self.current is None or self.current.process.poll() is not None:
            self.generation += 1
            name = f"vtpm-echo{os.getpid()}-{self.generation}"
            process = start_echo(name)
            wait_ready(process, name)
            self.current = EchoServer(name, process)
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.stop()


@pytest.fixture(scope="module")
def servers() -> Iterator[EchoServers]:
    require_cuse()
    manager = EchoServers()
    yield manager
    manager.close()


@pytest.fixture
def echo(servers: EchoServers) -> Iterator[EchoServer]:
    server = servers.running()
    yield server
    if server.process.poll() is None:  # leave the FIFO empty for the next test
        fd = os.open(server.node, os.O_RDWR)
        try:
            fcntl.ioctl(fd, ECHO_IOC_CLEAR, 0)
        finally:
            os.close(fd)


@pytest.fixture
def dev(echo: EchoServer) -> Iterator[int]:
    fd = os.open(echo.node, os.O_RDWR)
    yield fd
    os.close(fd)


# --- tests --------------------------------------------------------------------------------


def test_node_appears_as_a_character_device(echo: EchoServer) -> None:
    st = os.stat(echo.node)
    assert stat.S_ISCHR(st.st_mode)
    assert Path("/sys/class/cuse", echo.name).exists()


def test_write_then_read_returns_the_bytes(dev: int) -> None:
    assert os.write(dev, b"hello through the kernel") == 24
    assert os.read(dev, 4096) == b"hello through the kernel"


def test_reads_are_split_at_the_callers_size(dev: int) -> None:
    os.write(dev, b"0123456789")
    assert os.read(dev, 4) == b"0123"
    assert os.read(dev, 100) == b"456789"


def test_large_transfers_are_split_into_max_read_write_requests(dev: int) -> None:
    data = os.urandom(300_000)  # > max_write (128 KiB): the kernel sends several WRITEs
    assert os.write(dev, data) == len(data)
    got = b""
    while len(got) < len(data):
        got += os.read(dev, len(data) - len(got))
    assert got == data


def test_second_opener_feeds_a_reader(echo: EchoServer, dev: int) -> None:
    other = os.open(echo.node, os.O_WRONLY)
    try:
        os.write(other, b"from the second open")
    finally:
        os.close(other)
    assert os.read(dev, 100) == b"from the second open"


def test_restricted_ioctls_move_data_in_and_out(dev: int) -> None:
    first = bytearray(8)
    assert fcntl.ioctl(dev, ECHO_IOC_COUNTER, first) == 0
    second = bytearray(8)
    fcntl.ioctl(dev, ECHO_IOC_COUNTER, second)
    assert U64.unpack(second)[0] == U64.unpack(first)[0] + 1

    buf = bytearray(U64.pack(41))
    assert fcntl.ioctl(dev, ECHO_IOC_INCREMENT, buf) == 0
    assert U64.unpack(buf)[0] == 42

    os.write(dev, b"12345")
    assert fcntl.ioctl(dev, ECHO_IOC_CLEAR, 0) == 5  # the ioctl() return value is the result

    with pytest.raises(OSError) as unknown:
        fcntl.ioctl(dev, ior("E", 9, 4), bytearray(4))
    assert unknown.value.errno == errno.ENOTTY


def test_nonblocking_read_of_an_empty_device(echo: EchoServer) -> None:
    fd = os.open(echo.node, os.O_RDWR | os.O_NONBLOCK)
    try:
        with pytest.raises(BlockingIOError):
            os.read(fd, 10)
    finally:
        os.close(fd)


def test_poll_reports_readiness_and_wakes_on_data(echo: EchoServer, dev: int) -> None:
    poller = select.poll()
    poller.register(dev, select.POLLIN | select.POLLOUT)
    # poll(2) masks the device's answer (POLLOUT|POLLWRNORM) with what was asked for
    assert poller.poll(0) == [(dev, select.POLLOUT)]

    # A poll() sleeping for POLLIN must be woken by FUSE_NOTIFY_POLL when data arrives.
    sleeper = select.poll()
    sleeper.register(dev, select.POLLIN)
    result: list[tuple[float, list[tuple[int, int]]]] = []
    thread = threading.Thread(target=lambda: result.append((time.monotonic(), sleeper.poll(20_000))))
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive(), f"poll returned before data was written: {result}"
    writer = os.open(echo.node, os.O_WRONLY)
    written_at = time.monotonic()
    os.write(writer, b"x")
    os.close(writer)
    thread.join(30)
    assert result, "poll() never returned"
    woke_at, events = result[0]
    assert events and events[0][1] & select.POLLIN
    assert woke_at - written_at < 10, "poll woke only at its timeout: no notify"
    assert os.read(dev, 10) == b"x"


def test_signal_interrupts_a_blocked_read(echo: EchoServer, dev: int) -> None:
    """A signal makes the kernel send FUSE_INTERRUPT; the server must answer EINTR, or
    read() would never return (after an interrupt the kernel still waits for a reply)."""

    class Interrupted(Exception):
        pass

    def on_alarm(signum: int, frame: object) -> None:
        raise Interrupted

    # Safety net: if INTERRUPT were ignored, data written after 30 s ends the read, and
    # the assertion below fails instead of the whole run hanging.
    rescue = threading.Timer(30, lambda: os.write(os.open(echo.node, os.O_WRONLY), b"rescued"))
    previous = signal.signal(signal.SIGALRM, on_alarm)
    rescue.start()
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        started = time.monotonic()
        with pytest.raises(Interrupted):
            os.read(dev, 10)
        assert time.monotonic() - started < 25
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        rescue.cancel()
    os.write(dev, b"after")
    assert os.read(dev, 10) == b"after"


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _round_trips(write_fd: int, read_fd: int, size: int, count: int) -> list[float]:
    payload = bytes(size)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        os.write(write_fd, payload)
        got = os.read(read_fd, size)
        times.append(time.perf_counter() - start)
        assert len(got) == size
    return times


def test_round_trip_latency(dev: int) -> None:
    """write+read through the echo device, next to an os.pipe baseline measured in the
    same (emulated) machine: only the ratio carries over to real hardware."""
    report: dict[str, dict[str, float]] = {}
    pipe_r, pipe_w = os.pipe()
    try:
        for size in (32, 4096):
            _round_trips(dev, dev, size, 20)  # warm up
            echo_times = _round_trips(dev, dev, size, 300)
            pipe_times = _round_trips(pipe_w, pipe_r, size, 300)
            report[f"echo_{size}B"] = {
                "median_ms": statistics.median(echo_times) * 1e3,
                "p90_ms": _percentile(echo_times, 0.9) * 1e3,
                "mean_ms": statistics.fmean(echo_times) * 1e3,
            }
            report[f"pipe_{size}B"] = {"median_ms": statistics.median(pipe_times) * 1e3}
    finally:
        os.close(pipe_r)
        os.close(pipe_w)
    print("echo round trips:", json.dumps(report, indent=1))
    share = os.environ.get("CUSEVM_SHARE")
    if share:
        Path(share, "echo-rtt.json").write_text(json.dumps(report, indent=1))
    assert report["echo_32B"]["median_ms"] < 100


def test_duplicate_device_name_is_refused(echo: EchoServer) -> None:
    process = start_echo(echo.name)
    try:
        _, err = process.communicate(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 1
    assert "already taken" in err, err
    assert os.path.exists(echo.node)  # the first device is unharmed


def test_stopping_the_server_removes_the_node(echo: EchoServer) -> None:
    holder = os.open(echo.node, os.O_RDWR)
    try:
        assert echo.stop() == 0
        deadline = time.monotonic() + 10
        while echo.node.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not echo.node.exists()
        with pytest.raises(OSError) as gone:  # a file still open on the old node is dead
            os.read(holder, 10)
        assert gone.value.errno == errno.ENOTCONN, gone.value  # the aborted connection
    finally:
        os.close(holder)
