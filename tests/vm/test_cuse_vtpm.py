"""/dev/vtpm-<uuid> on the real kernel, driven by real clients.

Runs INSIDE the cusevm guest (tests/test_vm_vtpm.py boots it; or
scripts/cusevm/pytest-in-vm.sh tests/vm/test_cuse_vtpm.py).  The daemon is started
the way libvirt would start swtpm: ``vtpm-cuse cuse -n vtpm-<uuid> --tpm2 --tpmstate
dir=...``, daemonized, the command returning once the node exists.  Clients:
Debian's swtpm_ioctl, our vtpm-ioctl (in-process through its ``run()`` to spare
interpreter starts, plus one real process), tpm2-tools with ``-T device:``, and a
Python client doing what the kernel's TPM selftests check.

Tests run in file order and share the daemon (Python starts are slow under TCG);
each prints ``VMLOG <client>: <what> ok`` lines for the log.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import select
import stat
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vtpm_cuse.cli import ioctl_tool

pytestmark = pytest.mark.vm

PROJECT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
VTPM_CUSE = VENV_BIN / "vtpm-cuse"
VTPM_IOCTL = VENV_BIN / "vtpm-ioctl"
START_TIMEOUT = 180.0
TOOL_TIMEOUT = 120.0
PCR = 16
DIGEST = hashlib.sha256(b"vtpm-cuse in the guest").digest()
EXTENDED = hashlib.sha256(bytes(32) + DIGEST).digest()
GET_RANDOM_8 = struct.pack(">HIIH", 0x8001, 12, 0x17B, 8)
RC_INSUFFICIENT = 0x9A


def vmlog(client: str, what: str) -> None:
    print(f"VMLOG {client}: {what} ok", flush=True)


def require_cuse() -> None:
    if not Path("/dev/cuse").exists() or os.geteuid() != 0:
        pytest.fail("needs /dev/cuse and root: run inside the VM (tests/test_vm_vtpm.py)")


@dataclass
class Daemon:
    name: str
    state: Path
    pidfile: Path

    @property
    def node(self) -> str:
        return f"/dev/{self.name}"

    @property
    def pid(self) -> int:
        return int(self.pidfile.read_text())


def start_daemon(name: str, state: Path, *extra: str) -> Daemon:
    pidfile = state.parent / f"{state.name}.pid"
    started = time.monotonic()
    result = subprocess.run(
        [
            str(VTPM_CUSE),
            "cuse",
            "-n",
            name,
            "--tpm2",
            "--tpmstate",
            f"dir={state}",
            "--pid",
            f"file={pidfile}",
            "--log",
            f"file={state.parent / (state.name + '.log')},level=1",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert result.returncode == 0, f"vtpm-cuse cuse failed ({result.returncode}): {result.stderr}"
    # the parent returns only once the node exists
    assert stat.S_ISCHR(os.stat(f"/dev/{name}").st_mode)
    print(f"daemon up in {time.monotonic() - started:.1f}s", flush=True)
    return Daemon(name, state, pidfile)


def wait_gone(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} still exists"
        time.sleep(0.05)


def swtpm_ioctl(daemon: Daemon, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    result = subprocess.run(
        ["swtpm_ioctl", *args, daemon.node],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        env=dict(os.environ, **(env or {})),
    )
    if check:
        assert result.returncode == 0, f"swtpm_ioctl {args}: {result.stdout}{result.stderr}"
    return result.stdout + result.stderr


def vtpm_ioctl(daemon: Daemon, *args: str, env: dict[str, str] | None = None) -> str:
    """Our tool in-process (same code path as the console script, no interpreter start)."""
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        rc = ioctl_tool.run([*args, daemon.node], out=out, err=err)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert rc == 0, f"vtpm-ioctl {args}: {out.getvalue()}{err.getvalue()}"
    return out.getvalue()


def tpm2(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, TPM2TOOLS_TCTI=f"device:{daemon.node}")
    result = subprocess.run(["tpm2_" + args[0], *args[1:]], env=env, capture_output=True, timeout=TOOL_TIMEOUT)
    assert result.returncode == 0, f"tpm2_{' '.join(args)}: {result.stderr.decode()}"
    return result


def read_pcr(daemon: Daemon, tmp: Path) -> bytes:
    out = tmp / "pcr.bin"
    tpm2(daemon, "pcrread", f"sha256:{PCR}", "-o", str(out))
    return out.read_bytes()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vtpm")


@pytest.fixture(scope="module")
def daemon(work: Path) -> Iterator[Daemon]:
    require_cuse()
    d = start_daemon(f"vtpm-{uuid.uuid4()}", work / "state-a", "--flags", "not-need-init")
    yield d
    if os.path.exists(d.node):
        subprocess.run(["swtpm_ioctl", "-s", d.node], capture_output=True, timeout=TOOL_TIMEOUT)


# --- the daemon ------------------------------------------------------------------------------


def test_daemon_detaches_once_the_node_exists(daemon: Daemon) -> None:
    cmdline = Path(f"/proc/{daemon.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    assert cmdline[-1].decode() == daemon.name, cmdline
    ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(daemon.pid)], capture_output=True, text=True)
    assert ps.stdout.strip().endswith(daemon.name), ps.stdout
    vmlog("vtpm-cuse", f"daemonized, node {daemon.node}, ps shows '... {daemon.name}'")


def test_an_existing_device_name_is_a_clear_error(daemon: Daemon, work: Path) -> None:
    result = subprocess.run(
        [str(VTPM_CUSE), "cuse", "-n", daemon.name, "--tpm2", "--tpmstate", f"dir={work / 'other'}"],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert result.returncode != 0 and "already exists" in result.stderr, result.stderr
    vmlog("vtpm-cuse", "second daemon with the same name refused")


# --- swtpm_ioctl and vtpm-ioctl ------------------------------------------------------------------


def test_swtpm_ioctl_commands(daemon: Daemon) -> None:
    assert "ptm capability is 0x16fff" in swtpm_ioctl(daemon, "-c")
    swtpm_ioctl(daemon, "-i")
    assert "tpmEstablished is 0" in swtpm_ioctl(daemon, "-e")
    swtpm_ioctl(daemon, "-l", "3")
    swtpm_ioctl(daemon, "-l", "0")
    swtpm_ioctl(daemon, "-h", "1234")
    assert "tpmEstablished is 1" in swtpm_ioctl(daemon, "-e")
    assert "TPM result from PTM_RESET_TPMESTABLISHED: 0x3d" in swtpm_ioctl(daemon, "-r", "0", check=False)
    swtpm_ioctl(daemon, "-r", "3")
    assert "tpmEstablished is 0" in swtpm_ioctl(daemon, "-e")
    swtpm_ioctl(daemon, "-v")
    swtpm_ioctl(daemon, "-C")
    assert "ptm configuration flags: 0x0" in swtpm_ioctl(daemon, "-g")
    assert "TPM buffersize: 4096" in swtpm_ioctl(daemon, "-b", "0")
    assert '"TPMSpecification"' in swtpm_ioctl(daemon, "--info", "1")
    assert '"RuntimeCommands"' in swtpm_ioctl(daemon, "--info", "0x10")
    vmlog("swtpm_ioctl", "-c -i -e -l -h -r -v -C -g -b --info")


def test_vtpm_ioctl_commands(daemon: Daemon) -> None:
    assert "ptm capability is 0x16fff" in vtpm_ioctl(daemon, "-c")
    vtpm_ioctl(daemon, "-i")
    vtpm_ioctl(daemon, "-l", "0")
    vtpm_ioctl(daemon, "-h", "5678")
    assert "tpmEstablished is 1" in vtpm_ioctl(daemon, "-e")
    vtpm_ioctl(daemon, "-r", "4")
    assert "tpmEstablished is 0" in vtpm_ioctl(daemon, "-e")
    vtpm_ioctl(daemon, "-v")
    vtpm_ioctl(daemon, "-C")
    assert "ptm configuration flags: 0x0" in vtpm_ioctl(daemon, "-g")
    out = vtpm_ioctl(daemon, "-b", "0")
    assert "TPM buffersize: 4096" in out and "minimum size  : 2832" in out
    assert '"TPMAttributes"' in vtpm_ioctl(daemon, "--info", "2")
    assert '"RuntimeCommands"' in vtpm_ioctl(daemon, "--info", "0x10")
    vtpm_ioctl(daemon, "--lock-storage", "0")
    # the console script as a process, once
    result = subprocess.run([str(VTPM_IOCTL), "-c", daemon.node], capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    assert result.returncode == 0 and "ptm capability is 0x16fff" in result.stdout, result
    vmlog("vtpm-ioctl", "-c -i -l -h -e -r -v -C -g -b --info --lock-storage, and as a process")


# --- tpm2-tools -----------------------------------------------------------------------------------


def test_tpm2_tools(daemon: Daemon, work: Path) -> None:
    tpm2(daemon, "startup", "-c")
    vmlog("tpm2-tools", "tpm2_startup -c")
    out = work / "random.bin"
    tpm2(daemon, "getrandom", "16", "-o", str(out))
    assert len(out.read_bytes()) == 16
    vmlog("tpm2-tools", "tpm2_getrandom 16")
    assert read_pcr(daemon, work) == bytes(32)
    tpm2(daemon, "pcrextend", f"{PCR}:sha256={DIGEST.hex()}")
    assert read_pcr(daemon, work) == EXTENDED
    vmlog("tpm2-tools", "tpm2_pcrread / tpm2_pcrextend")
    assert b"TPM2_PT_MANUFACTURER" in tpm2(daemon, "getcap", "properties-fixed").stdout
    vmlog("tpm2-tools", "tpm2_getcap properties-fixed")
    data = work / "data.bin"
    data.write_bytes(os.urandom(3000))
    digest = work / "digest.bin"
    tpm2(daemon, "hash", "-g", "sha256", "-C", "o", "-o", str(digest), str(data))
    assert digest.read_bytes() == hashlib.sha256(data.read_bytes()).digest()
    vmlog("tpm2-tools", "tpm2_hash")


# --- a Python client: what the kernel's TPM selftests check ---------------------------------------


def test_python_client_like_the_kernel_selftests(daemon: Daemon) -> None:
    fd = os.open(daemon.node, os.O_RDWR)
    try:
        with pytest.raises(OSError) as busy:
            os.open(daemon.node, os.O_RDWR)
        assert busy.value.errno == errno.EBUSY
        vmlog("python", "second opener gets EBUSY")

        assert os.write(fd, GET_RANDOM_8) == len(GET_RANDOM_8)
        head = os.read(fd, 4)
        rest = os.read(fd, 6)
        body = os.read(fd, 100)
        response = head + rest + body
        assert len(head) == 4 and len(rest) == 6 and len(response) == 20
        assert struct.unpack_from(">HII", response) == (0x8001, 20, 0)
        vmlog("python", "partial reads 4+6+10 bytes")
        assert os.read(fd, 100) == b""
        vmlog("python", "EOF after the response")

        assert os.write(fd, b"\x80\x01\x00\x00") == 4
        short = os.read(fd, 100)
        assert len(short) == 10 and struct.unpack_from(">I", short, 6)[0] == RC_INSUFFICIENT
        vmlog("python", "short command answered with TPM_RC_INSUFFICIENT")

        big = struct.pack(">HII", 0x8001, 5000, 0x17B) + bytes(4990)
        assert os.write(fd, big) == 5000
        assert struct.unpack_from(">I", os.read(fd, 100), 6)[0] == 0x142
        vmlog("python", "over-long command answered with TPM_RC_COMMAND_SIZE")
    finally:
        os.close(fd)

    fd = os.open(daemon.node, os.O_RDWR | os.O_NONBLOCK)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLOUT)
        assert dict(poller.poll(0)).get(fd, 0) & select.POLLIN == 0
        assert os.read(fd, 100) == b""  # nothing pending: EOF, not EAGAIN
        vmlog("python", "poll not readable before a command")
        assert os.write(fd, GET_RANDOM_8) == len(GET_RANDOM_8)
        readable = select.poll()
        readable.register(fd, select.POLLIN)
        events = dict(readable.poll(30_000)).get(fd, 0)
        assert events & select.POLLIN, events
        response = os.read(fd, 4096)
        assert len(response) == 20 and struct.unpack_from(">I", response, 6)[0] == 0
        assert dict(readable.poll(0)).get(fd, 0) & select.POLLIN == 0
        vmlog("python", "O_NONBLOCK write, poll readable only once the response is ready")
    finally:
        os.close(fd)


def test_read_after_stop_is_eof(daemon: Daemon) -> None:
    fd = os.open(daemon.node, os.O_RDWR)
    try:
        os.write(fd, GET_RANDOM_8)
        assert len(os.read(fd, 4)) == 4
    finally:
        os.close(fd)
    swtpm_ioctl(daemon, "--stop")
    fd = os.open(daemon.node, os.O_RDWR)
    try:
        assert os.read(fd, 100) == b""
        os.write(fd, GET_RANDOM_8)
        assert os.read(fd, 100) == bytes.fromhex("80010000000a00000101")  # stopped: fatal error
    finally:
        os.close(fd)
    swtpm_ioctl(daemon, "-i")  # INIT from the permanent state: TPM2_Startup is due again
    vmlog("swtpm_ioctl", "--stop, then read() is EOF and commands get the fatal error response")


# --- NV indices through the device, kept across a daemon restart --------------------------------------


def test_nv_indices_survive_a_daemon_restart(work: Path) -> None:
    require_cuse()
    name, state = f"vtpm-{uuid.uuid4()}", work / "state-nv"
    data = work / "nv-data.bin"
    data.write_bytes(b"kept across a restart")
    first = start_daemon(name, state, "--flags", "not-need-init")
    try:
        tpm2(first, "startup", "-c")
        tpm2(first, "nvdefine", "0x1500020", "-C", "o", "-s", "32", "-a", "ownerread|ownerwrite|authread|authwrite")
        tpm2(first, "nvwrite", "0x1500020", "-C", "o", "-i", str(data))
        tpm2(first, "nvdefine", "0x1500021", "-C", "o", "-s", "8", "-a", "nt=counter|ownerread|ownerwrite")
        tpm2(first, "nvincrement", "0x1500021", "-C", "o")
        tpm2(first, "nvincrement", "0x1500021", "-C", "o")
        counter = tpm2(first, "nvread", "0x1500021", "-C", "o").stdout
    finally:
        swtpm_ioctl(first, "-s")
        wait_gone(first.node)
    second = start_daemon(name, state, "--flags", "not-need-init")
    try:
        tpm2(second, "startup", "-c")
        assert (
            tpm2(second, "nvread", "0x1500020", "-C", "o", "-s", str(len(data.read_bytes()))).stdout
            == data.read_bytes()
        )
        assert tpm2(second, "nvread", "0x1500021", "-C", "o").stdout == counter
        assert int.from_bytes(counter, "big") >= 2
    finally:
        swtpm_ioctl(second, "-s")
        wait_gone(second.node)
    vmlog("tpm2-tools", "nvdefine/nvwrite/nvincrement/nvread on the device, kept across a daemon restart")


# --- state across a daemon restart ----------------------------------------------------------------


def test_save_and_load_state_across_a_restart(daemon: Daemon, work: Path) -> None:
    tpm2(daemon, "startup", "-c")
    tpm2(daemon, "pcrextend", f"{PCR}:sha256={DIGEST.hex()}")
    assert read_pcr(daemon, work) == EXTENDED
    saved = work / "saved"
    saved.mkdir()
    # swtpm_ioctl with SWTPM_IOCTL_BUFFERSIZE: first chunk by ioctl, the rest by read()
    swtpm_ioctl(daemon, "--save", "permanent", str(saved / "perm-read"), env={"SWTPM_IOCTL_BUFFERSIZE": "256"})
    swtpm_ioctl(daemon, "--save", "volatile", str(saved / "vol-read"), env={"SWTPM_IOCTL_BUFFERSIZE": "1000"})
    # vtpm-ioctl with 3072-byte ioctl chunks
    vtpm_ioctl(daemon, "--save", "permanent", str(saved / "perm-ioctl"))
    vtpm_ioctl(daemon, "--save", "volatile", str(saved / "vol-ioctl"))
    for name in ("perm-read", "vol-read", "perm-ioctl", "vol-ioctl"):
        assert (saved / name).stat().st_size > 100, name
    assert (saved / "vol-read").stat().st_size > 3072  # the read() path really ran
    vmlog("swtpm_ioctl", "--save permanent/volatile with SWTPM_IOCTL_BUFFERSIZE (read())")
    vmlog("vtpm-ioctl", "--save permanent/volatile by ioctl chunks")

    swtpm_ioctl(daemon, "-s")
    wait_gone(daemon.node)
    vmlog("swtpm_ioctl", "-s: daemon exited, node removed")

    for perm, vol, loader in (("perm-ioctl", "vol-ioctl", "swtpm_ioctl"), ("perm-read", "vol-read", "vtpm-ioctl")):
        fresh = start_daemon(daemon.name, work / f"state-{loader}")
        try:
            assert "0x16fff" in swtpm_ioctl(fresh, "-c")
            if loader == "swtpm_ioctl":
                swtpm_ioctl(fresh, "--load", "permanent", str(saved / perm))
                swtpm_ioctl(fresh, "--load", "volatile", str(saved / vol), env={"SWTPM_IOCTL_BUFFERSIZE": "700"})
            else:
                vtpm_ioctl(fresh, "--load", "permanent", str(saved / perm), env={"SWTPM_IOCTL_BUFFERSIZE": "300"})
                vtpm_ioctl(fresh, "--load", "volatile", str(saved / vol))
            swtpm_ioctl(fresh, "-i")
            assert read_pcr(fresh, work) == EXTENDED  # resumed without TPM2_Startup
            vmlog(loader, "--load permanent (ioctl chunks / write()) + volatile after restart, PCR kept")
        finally:
            swtpm_ioctl(fresh, "-s", check=False)
            wait_gone(fresh.node)
