"""/dev/vtpm-<uuid> under a hostile guest process, on the real kernel's CUSE.

Runs INSIDE the cusevm guest, in the boot of tests/test_vm_vtpm.py (or
scripts/cusevm/pytest-in-vm.sh tests/vm/test_cuse_hostile.py).  Each test is a
loop of what a broken or malicious opener does -- garbage of every size,
headers lying about the size, close and reopen while a command runs, signals
to a reader or writer blocked in the device (the kernel turns them into
FUSE_INTERRUPT), tiny and non-blocking reads -- and after each loop the device
must still answer TPM2_GetRandom and the PTM ioctls.  Loop counts are small:
the guest runs 10-30x slower than native and the whole file must stay under
about a minute there.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ioctl_defs import PtmEstResponse, by_name
from support.object_templates import create_primary_cmd, rsa_template

pytestmark = pytest.mark.vm

VENV_BIN = Path(sys.executable).parent
VTPM_CUSE = VENV_BIN / "vtpm-cuse"
START_TIMEOUT = 180.0
ANSWER_TIMEOUT_MS = 60_000
"""A response must be readable this long after a command (TCG guest, RSA key generation)."""
REOPEN_TIMEOUT = 30.0
"""A released file must free the one-opener slot within this many seconds."""
GET_RANDOM_8 = struct.pack(">HIIH", 0x8001, 12, 0x17B, 8)
SEED = 14
GARBAGE_ROUNDS = 40
CHURN_ROUNDS = 18
SIGNAL_ROUNDS = 2


def vmlog(what: str) -> None:
    print(f"VMLOG cuse-hostile: {what} ok", flush=True)


def slow_command() -> bytes:
    """CreatePrimary of an RSA-2048 key no cache holds (a fresh ``unique``): key generation."""
    return create_primary_cmd(rsa_template(unique=os.urandom(32)))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path("/dev/cuse").exists() or os.geteuid() != 0:
        pytest.fail("needs /dev/cuse and root: run inside the VM (tests/test_vm_vtpm.py)")
    work = tmp_path_factory.mktemp("hostile")
    name = f"vtpm-{uuid.uuid4()}"
    result = subprocess.run(
        [str(VTPM_CUSE), "cuse", "-n", name, "--tpm2", "--tpmstate", f"dir={work / 'state'}"]
        + ["--pid", f"file={work / 'pid'}", "--flags", "not-need-init,startup-clear"],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert result.returncode == 0, f"vtpm-cuse cuse failed ({result.returncode}): {result.stderr}"
    path = f"/dev/{name}"
    yield path
    if os.path.exists(path):
        subprocess.run(["swtpm_ioctl", "-s", path], capture_output=True, timeout=120)


def open_device(path: str, flags: int = os.O_RDWR) -> int:
    """Open, retrying EBUSY while the kernel delivers the previous opener's RELEASE."""
    deadline = time.monotonic() + REOPEN_TIMEOUT
    while True:
        try:
            return os.open(path, flags)
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def wait_for(fd: int, event: int) -> None:
    """POLLIN: a response is ready; POLLOUT: no command runs (a previous opener's may)."""
    poller = select.poll()
    poller.register(fd, event)
    assert dict(poller.poll(ANSWER_TIMEOUT_MS)).get(fd, 0) & event, f"poll event {event:#x} never came"


def wait_readable(fd: int) -> None:
    wait_for(fd, select.POLLIN)


def write_command(fd: int, command: bytes) -> None:
    """Write once no command runs: a released opener's command still finishes first."""
    wait_for(fd, select.POLLOUT)
    assert os.write(fd, command) == len(command)


def read_response(fd: int, chunk: int = 4096) -> bytes:
    """One whole TPM response, in reads of ``chunk`` bytes."""
    data = b""
    while len(data) < 10 or len(data) < int.from_bytes(data[2:6], "big"):
        part = os.read(fd, chunk)
        assert part, f"EOF after {len(data)} bytes of a response"
        data += part
    assert len(data) == int.from_bytes(data[2:6], "big"), data[:10].hex()
    return data


def ioctl(fd: int, name: str) -> bytes:
    """A PTM ioctl without input; the whole union back."""
    spec = by_name(name)
    buf = bytearray(spec.ioctl_size())
    fcntl.ioctl(fd, spec.ioctl_number(), buf)
    return bytes(buf)


def assert_device_answers(path: str) -> None:
    """GetRandom on a fresh opener, and the PTM_GET_TPMESTABLISHED / PTM_GET_CAPABILITY ioctls."""
    fd = open_device(path)
    try:
        write_command(fd, GET_RANDOM_8)
        response = read_response(fd)
        assert response[6:10] == bytes(4) and len(response) == 20, response.hex()
        assert PtmEstResponse.unpack_ioctl(ioctl(fd, "PTM_GET_TPMESTABLISHED")).tpm_result == 0
        assert int.from_bytes(ioctl(fd, "PTM_GET_CAPABILITY"), sys.byteorder) != 0  # a u64 ptm_cap
    finally:
        os.close(fd)


def garbage(rng: random.Random) -> bytes:
    """Random bytes 0..9000 long, half of them behind a TPM header whose size lies."""
    size = rng.choice([0, 1, 5, 9, 10, rng.randrange(11, 4096), 4096, 4097, rng.randrange(4098, 9000)])
    data = bytearray(rng.randbytes(size))
    if size >= 10 and rng.random() < 0.5:
        claimed = rng.choice([0, 10, size - 1, size + 1, 0xFFFFFFFF, rng.randrange(1 << 32)])
        data[0:6] = struct.pack(">HI", rng.choice([0x8001, 0x8002, 0xC4]), claimed)
    return bytes(data)


def test_garbage_of_every_size(node: str) -> None:
    rng = random.Random(SEED)
    fd = open_device(node)
    try:
        for _ in range(GARBAGE_ROUNDS):
            message = garbage(rng)
            wait_for(fd, select.POLLOUT)
            try:
                written = os.write(fd, message)
            except OSError as exc:  # a refusal is an errno, never a wedge
                assert exc.errno in (errno.EINVAL, errno.EBUSY, errno.EIO, errno.EFBIG), exc
                continue
            if not message:
                continue
            assert written == len(message)
            wait_readable(fd)
            response = read_response(fd, rng.choice([1, 9, 4096]))
            assert response[6:10] != bytes(4) or message[:2] in (b"\x80\x01", b"\x80\x02"), response.hex()
    finally:
        os.close(fd)
    assert_device_answers(node)
    vmlog(f"{GARBAGE_ROUNDS} garbage writes (0..9000 bytes, lying headers), read back in 1/9/4096-byte reads")


def test_close_and_reopen_while_commands_run(node: str) -> None:
    for round_ in range(CHURN_ROUNDS):
        fd = open_device(node, os.O_RDWR | os.O_NONBLOCK)
        try:
            if round_ % 3 == 0:  # closed while it runs
                write_command(fd, slow_command() if round_ % 6 == 0 else GET_RANDOM_8)
            elif round_ % 3 == 1:
                write_command(fd, GET_RANDOM_8)
                wait_readable(fd)
                os.read(fd, 3)  # closed with most of the response unread
        finally:
            os.close(fd)
    assert_device_answers(node)
    vmlog(f"{CHURN_ROUNDS} open/close rounds, closing mid-command and mid-response")


def test_nonblocking_reads_and_polls(node: str) -> None:
    fd = open_device(node, os.O_RDWR | os.O_NONBLOCK)
    try:
        wait_for(fd, select.POLLOUT)
        assert os.read(fd, 100) == b""  # nothing pending: EOF
        write_command(fd, slow_command())
        try:
            early = os.read(fd, 100)
        except BlockingIOError:
            early = None
        assert early is None or len(early) > 0  # EAGAIN while it runs (or already done)
        with pytest.raises(OSError) as busy:
            os.write(fd, GET_RANDOM_8)
        assert busy.value.errno == errno.EBUSY
        wait_readable(fd)
        response = read_response(fd, 9)
        assert response[6:10] == bytes(4), response[:10].hex()
    finally:
        os.close(fd)
    assert_device_answers(node)
    vmlog("O_NONBLOCK: EOF when idle, EAGAIN/EBUSY while running, poll then 9-byte reads")


def _blocked_child(path: str, blocked_in: str, how: signal.Signals) -> tuple[int, int]:
    """A child blocked in the device (a read of, or a blocking write of, a slow command),
    then hit by ``how``; returns its pid and wait status."""
    command = slow_command()
    pid = os.fork()
    if pid == 0:  # the child: exits on the signal (handler raises) or by being killed
        code = 3
        try:
            signal.signal(signal.SIGUSR1, lambda *_: os._exit(0))
            fd = open_device(path, os.O_RDWR | (os.O_NONBLOCK if blocked_in == "read" else 0))
            wait_for(fd, select.POLLOUT)
            if blocked_in == "read":
                os.write(fd, command)  # runs in the background
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
                os.read(fd, 4096)
            else:
                os.write(fd, command)
            code = 2  # the command finished before the signal came
        finally:
            os._exit(code)
    time.sleep(0.3)  # let it block
    os.kill(pid, how)
    _, status = os.waitpid(pid, 0)
    return pid, status


@pytest.mark.parametrize("blocked_in", ["read", "write"])
def test_signals_to_a_blocked_caller(node: str, blocked_in: str) -> None:
    for round_ in range(SIGNAL_ROUNDS):
        how = signal.SIGUSR1 if round_ % 2 == 0 else signal.SIGKILL
        _, status = _blocked_child(node, blocked_in, how)
        assert os.WIFSIGNALED(status) or os.WEXITSTATUS(status) in (0, 2), status
        assert_device_answers(node)
    vmlog(f"{SIGNAL_ROUNDS} signals (SIGUSR1, SIGKILL) to a caller blocked in {blocked_in}()")
