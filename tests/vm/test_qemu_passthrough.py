"""QEMU's ``passthrough`` TPM backend on /dev/vtpm-<uuid>, on the real kernel.

Runs INSIDE the cusevm guest (tests/test_vm_qemu.py boots it): a QEMU inside the
guest (the host's qemu-system-x86_64 through the shared root, TCG) opens the CUSE
device, and the guest side is played over qtest through tpm-tis and tpm-crb (QEMU
refuses tpm-crb passthrough for a TPM reporting 4096-byte commands, as libtpms does,
and accepts it once the buffer is set to CRB's 3968 bytes with vtpm-ioctl -b)
(tests/support/qtest_tpm.py, the same driver and vectors as the host's emulator
tests).  Paths: ``path=/dev/vtpm-<uuid>`` with ``cancel-path`` on the daemon's
``--cancel-fifo``; libvirt's fd passing (``-add-fd`` + ``/dev/fdset/N``, the
command line libvirt 9 builds for ``<backend type='passthrough'>``), by hand and
by Debian's libvirtd itself; a second QEMU on the same device refused with EBUSY
while the first keeps working; a long RSA CreatePrimary cancelled through TIS's
commandCancel (QEMU writes "-" to the cancel FIFO).

Tests run in file order and share one daemon (interpreter and QEMU starts are
slow under TCG); each prints ``VMLOG qemu-...: ...`` lines for the log.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.daemon import DAEMON, IOCTL, REPO, env_with_repo
from support.qemu_tpm_checks import (
    QEMU_PCR_VALUE,
    create_primary,
    malformed_then_valid,
    qemu_vectors,
    random_bytes,
    read_pcr_value,
    rsa_primary,
    startup,
)
from support.qtest_tpm import QEMU, Qemu, QtestChannel, QtestError, Tis, TisSts, interface, passthrough_args
from support.tpm_client import Response

pytestmark = pytest.mark.vm

START_TIMEOUT = 180.0
RC_CANCELED = 0x909
CANCEL_BITS = 4096
"""RSA-4096 CreatePrimary: minutes of prime search under TCG, so the cancel lands mid-way."""
CANCEL_DELAY = 0.25
"""Between cancels: short, because the prime search's length is luck (one RSA-4096 search
finished in under 2 s in the guest, before cancels sent 1 s apart took effect)."""
RELEASE_TIMEOUT = 20.0
BUSY = "Device or resource busy"
CRB_BUFFER = 3968
"""QEMU's CRB command/response buffer (4096 minus the control area)."""
CRB_REFUSAL = "Requested buffer size of 3968 is smaller than host TPM's fixed buffer size of 4096"


def vmlog(path: str, what: str) -> None:
    print(f"VMLOG {path}: {what} ok", flush=True)


@dataclass
class CuseTpm:
    name: str
    work: Path

    @property
    def node(self) -> str:
        return f"/dev/{self.name}"

    @property
    def cancel_fifo(self) -> Path:
        return self.work / "cancel.fifo"

    @property
    def pid(self) -> int:
        return int((self.work / "pid").read_text())


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CuseTpm]:
    if not Path("/dev/cuse").exists() or os.geteuid() != 0:
        pytest.fail("needs /dev/cuse and root: run inside the VM (tests/test_vm_qemu.py)")
    if not Path(f"/usr/bin/{QEMU}").exists():
        pytest.fail(f"{QEMU} missing (scripts/setup.sh installs qemu-system-x86)")
    work = tmp_path_factory.mktemp("qemu-pt")
    tpm = CuseTpm(f"vtpm-{uuid.uuid4()}", work)
    (work / "state").mkdir()
    # Nothing sends INIT on the passthrough path (spec §6.2): start the TPM at once.
    argv = [*DAEMON, "cuse", "-n", tpm.name, "--tpm2", "--tpmstate", f"dir={work / 'state'}"]
    argv += ["--flags", "not-need-init", "--cancel-fifo", str(tpm.cancel_fifo)]
    argv += ["--pid", f"file={work / 'pid'}", "--log", f"file={work / 'vtpm.log'},level=20"]
    result = subprocess.run(argv, cwd=REPO, env=env_with_repo(), capture_output=True, text=True, timeout=START_TIMEOUT)
    assert result.returncode == 0, f"vtpm-cuse cuse failed ({result.returncode}): {result.stderr}"
    assert stat.S_ISCHR(os.stat(tpm.node).st_mode)
    assert stat.S_ISFIFO(os.stat(tpm.cancel_fifo).st_mode)
    yield tpm
    subprocess.run(["kill", str(tpm.pid)], check=False)
    # The daemon removes its pid file last, after the node and the FIFO.
    deadline = time.monotonic() + 60
    while (work / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(tpm.node)
    assert not tpm.cancel_fifo.exists(), "the cancel FIFO outlived the daemon"
    print((work / "vtpm.log").read_text()[-3000:])


def by_path(device: CuseTpm, model: str) -> Qemu:
    """A started QEMU on ``path=/dev/vtpm-...``.  The previous QEMU's close reaches the
    daemon asynchronously (FUSE sends RELEASE after close() returned), and the device
    has one opener at a time (like swtpm's), so a start right after another QEMU ended
    may be refused with EBUSY: that, and only that, is retried."""
    deadline = time.monotonic() + RELEASE_TIMEOUT
    while True:
        qemu = Qemu(passthrough_args(device.node, str(device.cancel_fifo), model))
        try:
            return qemu.start()
        except QtestError as exc:
            qemu.quit()
            if BUSY not in str(exc) or time.monotonic() > deadline:
                raise


def open_when_released(node: str) -> int:
    """``os.open(node, O_RDWR)``, retried while the previous opener's release is in flight."""
    deadline = time.monotonic() + RELEASE_TIMEOUT
    while True:
        try:
            return os.open(node, os.O_RDWR)
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_tis_by_path_vectors_random_create_primary_malformed(device: CuseTpm) -> None:
    with by_path(device, "tpm-tis") as qemu:
        tpm = interface("tpm-tis", qemu)
        qemu_vectors(tpm)
        assert random_bytes(tpm) != random_bytes(tpm)
        device.work.joinpath("primary.pub").write_bytes(create_primary(tpm))
        malformed_then_valid(tpm)
    vmlog("qemu-passthrough tpm-tis by path", "Startup, PCR_Extend+Read, GetRandom, CreatePrimary, malformed")


def test_crb_passthrough_is_refused_by_qemu_for_a_4096_byte_tpm(device: CuseTpm) -> None:
    """QEMU's passthrough refuses tpm-crb when max(TPM_PT_MAX_COMMAND_SIZE,
    TPM_PT_MAX_RESPONSE_SIZE) exceeds CRB's 3968-byte buffer (tpm_passthrough_startup_tpm).
    Ours is 4096, the same answer libtpms gives (compared byte for byte on the host:
    tests/test_qemu_emulator.py::test_passthrough_buffer_size_probe_matches_swtpm), so
    CRB passthrough is refused for swtpm behind the vtpm proxy and for us alike."""
    deadline = time.monotonic() + RELEASE_TIMEOUT
    while True:
        qemu = Qemu(passthrough_args(device.node, str(device.cancel_fifo), "tpm-crb"))
        with pytest.raises(QtestError) as refusal:
            qemu.start()
        qemu.quit()
        message = str(refusal.value).strip().splitlines()[-1].split("QEMU exited: ", 1)[-1]
        if BUSY not in message or time.monotonic() > deadline:
            break
    assert message.endswith(CRB_REFUSAL), message
    vmlog("qemu-passthrough tpm-crb refused for 4096", repr(message))


def libvirt_passthrough_args(model: str) -> list[str]:
    """The TPM part of the command line libvirt 9 builds for
    ``<tpm model=...><backend type='passthrough'><device path=...>``: libvirt opens the
    device and the cancel path (/dev/null when sysfs has none, as for CUSE) and passes
    both as fd sets (qemu_command.c qemuBuildTPMBackendStr, qemuBuildTPMOpenBackendFDs)."""
    return [
        "-add-fd",
        "set=0,fd={tpm_fd},opaque=tpm0-tpm",
        "-add-fd",
        "set=1,fd={cancel_fd},opaque=tpm0-cancel",
        "-tpmdev",
        "passthrough,id=tpm-tpm0,path=/dev/fdset/0,cancel-path=/dev/fdset/1",
        "-device",
        json.dumps({"driver": model, "tpmdev": "tpm-tpm0", "id": "tpm0"}, separators=(",", ":")),
    ]


def test_by_fd_like_libvirt(device: CuseTpm) -> None:
    model = "tpm-tis"
    tpm_fd = open_when_released(device.node)
    cancel_fd = os.open("/dev/null", os.O_WRONLY)
    try:
        args = [
            a.replace("{tpm_fd}", str(tpm_fd)).replace("{cancel_fd}", str(cancel_fd))
            for a in libvirt_passthrough_args(model)
        ]
        qemu = Qemu(args, pass_fds=(tpm_fd, cancel_fd)).start()
    finally:
        os.close(tpm_fd)
        os.close(cancel_fd)
    try:
        assert qemu.proc is not None
        cmdline = Path(f"/proc/{qemu.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"passthrough,id=tpm-tpm0,path=/dev/fdset/0,cancel-path=/dev/fdset/1" in cmdline
        tpm = interface(model, qemu)
        assert read_pcr_value(tpm) == QEMU_PCR_VALUE, "PCR 10 as the by-path QEMU left it"
        assert create_primary(tpm) == device.work.joinpath("primary.pub").read_bytes()
        assert len(random_bytes(tpm)) == 32
    finally:
        qemu.quit()
    vmlog(f"qemu-passthrough {model} by fd (libvirt command line)", "/dev/fdset/0 + /dev/fdset/1, PCR 10, same primary")


def test_second_qemu_is_refused_while_the_first_works(device: CuseTpm) -> None:
    with by_path(device, "tpm-tis") as first:
        tpm = interface("tpm-tis", first)
        assert len(random_bytes(tpm)) == 32
        second = Qemu(passthrough_args(device.node, str(device.cancel_fifo), "tpm-tis"))
        with pytest.raises(QtestError) as refused:
            second.start()
        assert second.quit() != 0
        assert BUSY in str(refused.value), refused.value
        assert read_pcr_value(tpm) == QEMU_PCR_VALUE
        assert len(random_bytes(tpm)) == 32
    message = str(refused.value).strip().splitlines()[-1]
    vmlog("qemu-passthrough second opener", f"refused ({message!r}); the first QEMU kept working")


def test_cancel_through_the_cancel_fifo(device: CuseTpm) -> None:
    """TIS commandCancel during a long CreatePrimary: QEMU writes "-" to cancel-path
    (our FIFO), the daemon cancels, the guest reads TPM_RC_CANCELED."""
    with by_path(device, "tpm-tis") as qemu:
        tpm = interface("tpm-tis", qemu)
        assert isinstance(tpm, Tis)
        started = time.monotonic()
        tpm.send(rsa_primary(CANCEL_BITS))
        # A cancel that reaches the TPM before the command has started is dropped (by
        # design), and how long the prime search takes depends on the fresh seed: so
        # cancel again every CANCEL_DELAY until the response is there.
        while not tpm.sts() & TisSts.DATA_AVAILABLE:
            time.sleep(CANCEL_DELAY)
            tpm.cancel()
        response = Response(tpm.receive())
        elapsed = time.monotonic() - started
        assert response.rc == RC_CANCELED, f"CreatePrimary answered 0x{response.rc:x} after {elapsed:.1f}s"
        assert len(random_bytes(tpm)) == 32
    log = (device.work / "vtpm.log").read_text()
    assert "cancel FIFO" in log and "command cancelled" in log, log[-2000:]
    vmlog("qemu-passthrough cancel", f"RSA-{CANCEL_BITS} CreatePrimary cancelled after {elapsed:.1f}s: TPM_RC_CANCELED")


QEMU_CONF = """# written into the guest's throwaway overlay by tests/vm/test_qemu_passthrough.py
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
"""
LIBVIRT_ACCOUNTS = (("libvirt-qemu", 64055), ("swtpm", 64056))
"""Users libvirt resolves before reading qemu.conf (its built-in defaults); Debian's
libvirt-daemon-system package creates them, the guest's copy of the host root may not."""
DOMAIN_XML = """<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/{qemu}</emulator>
    <tpm model='tpm-tis'><backend type='passthrough'><device path='{node}'/></backend></tpm>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-qtest'/><qemu:arg value='unix:{qtest}'/>
    <qemu:arg value='-qtest-log'/><qemu:arg value='/dev/null'/>
  </qemu:commandline>
</domain>
"""
LIBVIRT_TIMEOUT = 300.0


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, timeout=LIBVIRT_TIMEOUT
    )
    assert not check or result.returncode == 0, f"virsh {args}: {result.stdout}{result.stderr}"
    return result


def configure_guest_libvirt(log: Path) -> None:
    """libvirt's system instance in the guest: root-run QEMU, no cgroups/namespaces/
    security driver/virtlogd (none exist in the busybox guest).  Only ever inside the
    cusevm guest, whose /etc is a tmpfs overlay thrown away at power-off."""
    assert os.environ.get("CUSEVM") == "1", "refusing to configure libvirt outside the cusevm guest"
    Path("/etc/libvirt").mkdir(exist_ok=True)
    Path("/etc/libvirt/qemu.conf").write_text(QEMU_CONF)
    Path("/etc/libvirt/libvirtd.conf").write_text(f'log_outputs = "3:file:{log}"\n')
    Path("/var/log/libvirt/qemu").mkdir(parents=True, exist_ok=True)
    for name, uid in LIBVIRT_ACCOUNTS:
        if subprocess.run(["getent", "passwd", name], capture_output=True).returncode != 0:
            with open("/etc/passwd", "a") as passwd:
                passwd.write(f"{name}:x:{uid}:{uid}:{name}:/nonexistent:/usr/sbin/nologin\n")
            with open("/etc/group", "a") as group:
                group.write(f"{name}:x:{uid}:\n")


def test_libvirt_domain_with_passthrough_on_the_cuse_device(device: CuseTpm) -> None:
    """Debian's libvirt 9 starts a TCG domain with ``<backend type='passthrough'>`` on
    /dev/vtpm-<uuid>: libvirt opens the device itself and hands QEMU the fd
    (``-add-fd`` + ``/dev/fdset/0``), and the TPM answers through that QEMU's TIS (qtest,
    added with ``<qemu:commandline>``; the domain stays paused, so no guest code runs)."""
    if shutil.which("libvirtd") is None or shutil.which("virsh") is None:
        pytest.fail("libvirtd/virsh missing (scripts/setup.sh installs libvirt-daemon-driver-qemu, libvirt-clients)")
    configure_guest_libvirt(device.work / "libvirtd.log")
    started = time.monotonic()
    subprocess.run(["libvirtd", "-d"], check=True, timeout=LIBVIRT_TIMEOUT)
    deadline = time.monotonic() + LIBVIRT_TIMEOUT
    while virsh("version", check=False).returncode != 0:
        assert time.monotonic() < deadline, "libvirtd never answered"
        time.sleep(0.5)
    libvirtd_up = time.monotonic() - started
    qtest_path = device.work / "libvirt-qtest.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(qtest_path))
    listener.listen(1)
    xml = device.work / "domain.xml"
    xml.write_text(DOMAIN_XML.format(name="vtpm-passthrough", qemu=QEMU, node=device.node, qtest=qtest_path))
    # libvirt opens the device itself: the previous QEMU's release may still be in
    # flight (see by_path), which libvirt reports as EBUSY: that alone is retried.
    deadline = time.monotonic() + RELEASE_TIMEOUT
    while (created := virsh("create", str(xml), "--paused", check=False)).returncode != 0:
        assert BUSY in created.stderr and time.monotonic() < deadline, created.stderr
        time.sleep(0.2)
    # QEMU connected to the listener while starting; the connection waits in the backlog.
    channel = QtestChannel.accept(listener, LIBVIRT_TIMEOUT)
    try:
        pid = int(Path("/run/libvirt/qemu/vtpm-passthrough.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"passthrough,id=tpm-tpm0,path=/dev/fdset/0,cancel-path=/dev/fdset/1" in cmdline, cmdline
        add_fds = [arg.decode() for arg in cmdline if arg.startswith(b"set=")]
        assert any(arg.endswith(",opaque=tpm0-tpm") for arg in add_fds), add_fds
        fd_dir = Path(f"/proc/{pid}/fd")
        assert device.node in {os.readlink(fd) for fd in fd_dir.iterdir()}, "QEMU holds no fd of the device"
        tpm = interface("tpm-tis", channel)
        assert read_pcr_value(tpm) == QEMU_PCR_VALUE
        assert create_primary(tpm) == device.work.joinpath("primary.pub").read_bytes()
        assert len(random_bytes(tpm)) == 32
        info = virsh("qemu-monitor-command", "vtpm-passthrough", "--hmp", "info tpm").stdout
        assert "type=passthrough,path=/dev/fdset/0" in info, info
    finally:
        channel.close()
        virsh("destroy", "vtpm-passthrough", check=False)
        listener.close()
        pidfile = Path("/run/libvirtd.pid")
        if pidfile.exists():
            subprocess.run(["kill", pidfile.read_text().strip()], check=False)
    vmlog(
        "libvirt passthrough",
        f"libvirtd up in {libvirtd_up:.0f}s, domain QEMU got {' '.join(add_fds)} (an fd on {device.node}), "
        "PCR 10, same primary, GetRandom",
    )


def vtpm_ioctl(device: CuseTpm, *args: str) -> str:
    result = subprocess.run([*IOCTL, *args, device.node], cwd=REPO, env=env_with_repo(), capture_output=True, text=True)
    assert result.returncode == 0, f"vtpm-ioctl {args}: {result.stdout}{result.stderr}"
    return result.stdout


def test_crb_passthrough_once_the_buffer_is_set_to_crb_size(device: CuseTpm) -> None:
    """What an administrator does for tpm-crb (and what works the same with swtpm's CUSE
    device and swtpm_ioctl): stop the TPM, set its buffer to CRB's 3968 bytes
    (PTM_SET_BUFFERSIZE, which TPM_PT_MAX_COMMAND/RESPONSE_SIZE follow), INIT it; then
    QEMU accepts tpm-crb passthrough and the guest's commands are answered through CRB.
    Last in the file: it restarts the TPM the other tests share."""
    vtpm_ioctl(device, "--stop")
    assert f"TPM buffersize: {CRB_BUFFER}" in vtpm_ioctl(device, "-b", str(CRB_BUFFER))
    vtpm_ioctl(device, "-i")
    # QEMU asks the TPM its buffer size (TPM2_GetCapability) before any guest code runs, so
    # the TPM must be started first, as a host's firmware does for a hardware TPM: without
    # it the answer is TPM_RC_INITIALIZE and QEMU falls back to assuming 4096.
    node = open_when_released(device.node)
    try:
        os.write(node, startup())
        assert os.read(node, 4096) == bytes.fromhex("80010000000a00000000")
    finally:
        os.close(node)
    with by_path(device, "tpm-crb") as qemu:
        tpm = interface("tpm-crb", qemu)
        assert tpm.transfer(startup())[6:10] == bytes.fromhex("00000100"), "already started: TPM_RC_INITIALIZE"
        assert random_bytes(tpm) != random_bytes(tpm)
        assert create_primary(tpm) == device.work.joinpath("primary.pub").read_bytes()
        malformed_then_valid(tpm)
    vmlog(
        "qemu-passthrough tpm-crb by path",
        f"buffer {CRB_BUFFER} (vtpm-ioctl -b), started before QEMU, GetRandom, same primary, malformed",
    )
