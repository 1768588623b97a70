"""Drive a TPM through QEMU's TIS or CRB registers with QEMU's qtest protocol.

One driver for every QEMU path the project checks (the emulator backend on
``vtpm-cuse socket``, the passthrough backend on the CUSE device, by path and by
fd, and the benchmark): QEMU runs stopped (``-S``: Debian's QEMU has no qtest
accelerator, so this is how no guest code, not even the firmware's TPM driver, ever
runs), and the test plays the guest's TPM driver itself, register by register, as
QEMU's own tests/qtest/tpm-tis-util.c and tpm-util.c do: locality request,
command-ready, FIFO writes, go, data-available, response read (TIS), or the
command buffer, start bit and response buffer (CRB).

The qtest protocol is line based (``readl ADDR`` → ``OK 0x..``): on the stdio of a
QEMU we start (:class:`Qemu`), or on the Unix socket a QEMU started by libvirt connects
to with ``-qtest unix:PATH`` (:meth:`QtestChannel.accept`).  QMP, needed for migration
and savevm, is a second Unix socket QEMU listens on.
"""

from __future__ import annotations

import enum
import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from support.daemon import DAEMON, REPO, env_with_repo

QEMU = "qemu-system-x86_64"
TPM_BASE = 0xFED40000
"""Where QEMU maps TIS and CRB (hw/acpi/tpm.h TPM_TIS_ADDR_BASE / TPM_CRB_ADDR_BASE)."""
LOCALITY_STRIDE = 0x1000
DAEMON_START_TIMEOUT = 20.0
REPLY_TIMEOUT = 30.0
COMMAND_TIMEOUT = 120.0
"""An RSA-4096 CreatePrimary under TCG-in-TCG can take a while; still bounded."""


class QtestError(RuntimeError):
    """QEMU answered FAIL, died, or a register never reached the expected state."""


class TisReg(enum.IntEnum):
    """TIS register offsets within one locality's 4 KiB page (TCG PC Client PTP)."""

    ACCESS = 0x00
    INT_ENABLE = 0x08
    INTF_CAPABILITY = 0x14
    STS = 0x18
    DATA_FIFO = 0x24
    INTERFACE_ID = 0x30
    DID_VID = 0xF00


class TisAccess(enum.IntFlag):
    ESTABLISHMENT = 0x01
    REQUEST_USE = 0x02
    PENDING_REQUEST = 0x04
    SEIZE = 0x08
    BEEN_SEIZED = 0x10
    ACTIVE_LOCALITY = 0x20
    REG_VALID_STS = 0x80


class TisSts(enum.IntFlag):
    RESPONSE_RETRY = 0x02
    SELFTEST_DONE = 0x04
    EXPECT = 0x08
    DATA_AVAILABLE = 0x10
    TPM_GO = 0x20
    COMMAND_READY = 0x40
    VALID = 0x80
    COMMAND_CANCEL = 1 << 24
    RESET_ESTABLISHMENT = 1 << 25
    FAMILY_2_0 = 1 << 26


TIS_FAMILY_MASK = 3 << 26
TIS_BURST_SHIFT = 8
TIS_BURST_MASK = 0xFFFF


class CrbReg(enum.IntEnum):
    """CRB register offsets (TCG PC Client PTP, CRB interface)."""

    LOC_STATE = 0x00
    LOC_CTRL = 0x08
    LOC_STS = 0x0C
    INTF_ID = 0x30
    CTRL_REQ = 0x40
    CTRL_STS = 0x44
    CTRL_CANCEL = 0x48
    CTRL_START = 0x4C
    CTRL_CMD_SIZE = 0x58
    CTRL_CMD_LADDR = 0x5C
    CTRL_RSP_SIZE = 0x64
    CTRL_RSP_ADDR = 0x68


CRB_LOC_CTRL_REQUEST_ACCESS = 0x1
CRB_LOC_CTRL_RELINQUISH = 0x2
CRB_START_INVOKE = 0x1
CRB_CTRL_STS_ERROR = 0x1
CRB_CANCEL_INVOKE = 0x1


def tpm_header_size(response: bytes) -> int:
    if len(response) < 10:
        raise QtestError(f"short TPM response {response.hex()}")
    return int.from_bytes(response[2:6], "big")


@dataclass(kw_only=True)
class QtestChannel:
    """The qtest line protocol on a pair of fds: one command line out, one ``OK ...``
    line back.  :class:`Qemu` runs it on a QEMU's stdin/stdout; :meth:`accept` on the
    connection a QEMU started by someone else (libvirt) makes for ``-qtest unix:PATH``."""

    read_fd: int = -1
    write_fd: int = -1
    _buffer: bytes = b""
    _sock: socket.socket | None = None

    @classmethod
    def accept(cls, listener: socket.socket, timeout: float = REPLY_TIMEOUT) -> QtestChannel:
        listener.settimeout(timeout)
        sock, _ = listener.accept()
        sock.setblocking(True)
        return cls(read_fd=sock.fileno(), write_fd=sock.fileno(), _sock=sock)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()

    def closed_reason(self) -> str:
        return "QEMU closed the qtest connection"

    def command(self, line: str, timeout: float = REPLY_TIMEOUT) -> str:
        """Send one qtest line; return the text after ``OK``."""
        data = line.encode() + b"\n"
        while data:
            data = data[os.write(self.write_fd, data) :]
        reply = self._reply_line(timeout, line)
        if not reply.startswith("OK"):
            raise QtestError(f"qtest {line!r} answered {reply!r}")
        return reply[2:].strip()

    def _reply_line(self, timeout: float, line: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                text, self._buffer = self._buffer.split(b"\n", 1)
                decoded = text.decode(errors="replace")
                if decoded.startswith("IRQ"):
                    continue  # only with irq_intercept, which we never set
                return decoded
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QtestError(f"qtest {line!r}: no answer in {timeout}s")
            ready, _, _ = select.select([self.read_fd], [], [], remaining)
            if ready:
                chunk = os.read(self.read_fd, 65536)
                if not chunk:
                    raise QtestError(f"qtest {line!r}: {self.closed_reason()}")
                self._buffer += chunk

    def readb(self, addr: int) -> int:
        return int(self.command(f"readb 0x{addr:x}"), 16)

    def readl(self, addr: int) -> int:
        return int(self.command(f"readl 0x{addr:x}"), 16)

    def readq(self, addr: int) -> int:
        return int(self.command(f"readq 0x{addr:x}"), 16)

    def writeb(self, addr: int, value: int) -> None:
        self.command(f"writeb 0x{addr:x} 0x{value:x}")

    def writel(self, addr: int, value: int) -> None:
        self.command(f"writel 0x{addr:x} 0x{value:x}")

    def memread(self, addr: int, size: int) -> bytes:
        return bytes.fromhex(self.command(f"read 0x{addr:x} 0x{size:x}").removeprefix("0x"))

    def memwrite(self, addr: int, data: bytes) -> None:
        self.command(f"write 0x{addr:x} 0x{len(data):x} 0x{data.hex()}")


@dataclass
class Qemu(QtestChannel):
    """One QEMU process whose qtest channel is its stdin/stdout.

    ``args`` are the device options (``-tpmdev``/``-device``/``-chardev`` ...);
    ``qmp_path`` adds a QMP server socket (migration, ``quit``). ``pass_fds``
    keeps fds open into QEMU (``-add-fd`` as libvirt uses it).
    """

    args: Sequence[str] = ()
    machine: str = "q35"
    qmp_path: Path | None = None
    pass_fds: Sequence[int] = ()
    extra: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None
    _qmp: socket.socket | None = None
    _qmp_buffer: bytes = b""
    log: list[str] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        qmp = ["-qmp", f"unix:{self.qmp_path},server=on,wait=off"] if self.qmp_path else []
        return [
            QEMU,
            "-machine",
            self.machine,
            "-accel",
            "tcg",
            "-S",
            "-qtest",
            "stdio",
            "-qtest-log",
            "/dev/null",
            "-nodefaults",
            "-display",
            "none",
            "-m",
            "64",
            *qmp,
            *self.args,
            *self.extra,
        ]

    def start(self) -> Qemu:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=tuple(self.pass_fds),
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.read_fd, self.write_fd = self.proc.stdout.fileno(), self.proc.stdin.fileno()
        # The first answer proves QEMU parsed its command line and the backend opened.
        self.command("endianness")
        return self

    def closed_reason(self) -> str:
        return f"QEMU exited: {self.stderr_text()}"

    # --- QMP --------------------------------------------------------------------------
    def qmp(self, execute: str, **arguments: object) -> dict:
        """One QMP command; returns its ``return`` value, raises on ``error``."""
        sock = self._qmp_socket()
        message: dict[str, object] = {"execute": execute}
        if arguments:
            message["arguments"] = arguments
        sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            reply = self._qmp_message()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise QtestError(f"QMP {execute}: {reply['error']}")

    def _qmp_socket(self) -> socket.socket:
        if self._qmp is None:
            assert self.qmp_path is not None, "QEMU was started without QMP"
            deadline = time.monotonic() + REPLY_TIMEOUT
            while True:
                try:
                    sock = socket.socket(socket.AF_UNIX)
                    sock.settimeout(REPLY_TIMEOUT)
                    sock.connect(str(self.qmp_path))
                    break
                except OSError:
                    sock.close()
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            self._qmp = sock
            self._qmp_message()  # greeting
            sock.sendall(b'{"execute": "qmp_capabilities"}\n')
            while "return" not in self._qmp_message():
                pass
        return self._qmp

    def _qmp_message(self) -> dict:
        assert self._qmp is not None
        while b"\n" not in self._qmp_buffer:
            chunk = self._qmp.recv(65536)
            if not chunk:
                raise QtestError(f"QMP connection closed: {self.stderr_text()}")
            self._qmp_buffer += chunk
        line, self._qmp_buffer = self._qmp_buffer.split(b"\n", 1)
        return json.loads(line)

    # --- life cycle -------------------------------------------------------------------
    def _running(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise QtestError("QEMU was not started")
        return self.proc

    def stderr_text(self) -> str:
        """QEMU's stderr once it has exited (its error message when it refused to start)."""
        proc = self._running()
        try:
            proc.wait(REPLY_TIMEOUT)
        except subprocess.TimeoutExpired:
            return "(still running)"
        if proc.stderr is None or proc.stderr.closed:
            return "".join(self.log)
        text = proc.stderr.read().decode(errors="replace")
        self.log.append(text)
        return text

    def quit(self, timeout: float = 30) -> int:
        """End QEMU the ordinary way: QMP ``quit`` or SIGTERM, both a clean shutdown
        in which the TPM backend is finalized (the emulator backend sends CMD_SHUTDOWN)."""
        proc = self._running()
        if proc.poll() is None:
            if self._qmp is not None:
                self._qmp.sendall(b'{"execute": "quit"}\n')
            else:
                proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._qmp is not None:
            self._qmp.close()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                if stream is proc.stderr:
                    self.log.append(stream.read().decode(errors="replace"))
                stream.close()
        return proc.returncode

    def __enter__(self) -> Qemu:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.quit()


def _wait(read, want: int, mask: int, what: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value & mask == want:
            return value
        if time.monotonic() > deadline:
            raise QtestError(f"{what}: register 0x{value:x} never had 0x{want:x} under mask 0x{mask:x}")
        time.sleep(0.0005)


@dataclass
class Tis:
    """The guest side of QEMU's ``tpm-tis``: FIFO transfers at one locality."""

    qemu: QtestChannel
    locality: int = 0

    def reg(self, reg: TisReg) -> int:
        return TPM_BASE + self.locality * LOCALITY_STRIDE + reg

    def sts(self) -> int:
        return self.qemu.readl(self.reg(TisReg.STS))

    def request_locality(self) -> None:
        self.qemu.writeb(self.reg(TisReg.ACCESS), TisAccess.REQUEST_USE)
        active = TisAccess.ACTIVE_LOCALITY | TisAccess.REG_VALID_STS
        _wait(lambda: self.qemu.readb(self.reg(TisReg.ACCESS)), active, active, "TIS ACCESS", REPLY_TIMEOUT)

    def release_locality(self) -> None:
        self.qemu.writeb(self.reg(TisReg.ACCESS), TisAccess.ACTIVE_LOCALITY)

    def family_2_0(self) -> bool:
        return self.sts() & TIS_FAMILY_MASK == TisSts.FAMILY_2_0

    def send(self, command: bytes) -> None:
        """Locality, command-ready, the FIFO in burst-count pieces, go."""
        self.request_locality()
        self.qemu.writel(self.reg(TisReg.STS), TisSts.COMMAND_READY)
        _wait(self.sts, TisSts.COMMAND_READY, TisSts.COMMAND_READY, "TIS commandReady", REPLY_TIMEOUT)
        sent = 0
        while sent < len(command):
            burst = (self.sts() >> TIS_BURST_SHIFT) & TIS_BURST_MASK
            if burst == 0:
                raise QtestError(f"TIS burst count 0 after {sent} of {len(command)} bytes")
            for byte in command[sent : sent + burst]:
                self.qemu.writeb(self.reg(TisReg.DATA_FIFO), byte)
            sent += min(burst, len(command) - sent)
        sts = self.sts()
        if sts & TisSts.EXPECT:
            raise QtestError(f"TIS still expects data after the whole command (sts 0x{sts:x})")
        self.qemu.writel(self.reg(TisReg.STS), TisSts.TPM_GO)

    def receive(self, timeout: float = COMMAND_TIMEOUT) -> bytes:
        """Wait for dataAvail, read the FIFO until it runs dry, return to ready."""
        ready = TisSts.VALID | TisSts.DATA_AVAILABLE
        _wait(self.sts, ready, ready, "TIS dataAvail", timeout)
        response = bytearray()
        while self.sts() & TisSts.DATA_AVAILABLE:
            response.append(self.qemu.readb(self.reg(TisReg.DATA_FIFO)))
        if len(response) != tpm_header_size(bytes(response)):
            raise QtestError(f"TIS returned {len(response)} bytes, header says {tpm_header_size(bytes(response))}")
        self.qemu.writel(self.reg(TisReg.STS), TisSts.COMMAND_READY)
        self.release_locality()
        return bytes(response)

    def cancel(self) -> None:
        self.qemu.writel(self.reg(TisReg.STS), TisSts.COMMAND_CANCEL)

    def transfer(self, command: bytes, timeout: float = COMMAND_TIMEOUT) -> bytes:
        self.send(command)
        return self.receive(timeout)


@dataclass
class Crb:
    """The guest side of QEMU's ``tpm-crb``: command buffer, start, response buffer."""

    qemu: QtestChannel
    locality: int = 0

    def reg(self, reg: CrbReg) -> int:
        return TPM_BASE + self.locality * LOCALITY_STRIDE + reg

    def send(self, command: bytes) -> None:
        size = self.qemu.readl(self.reg(CrbReg.CTRL_CMD_SIZE))
        if len(command) > size:
            raise QtestError(f"command of {len(command)} bytes exceeds the CRB buffer of {size}")
        self.qemu.writeb(self.reg(CrbReg.LOC_CTRL), CRB_LOC_CTRL_REQUEST_ACCESS)
        self.qemu.memwrite(self.qemu.readq(self.reg(CrbReg.CTRL_CMD_LADDR)), command)
        self.qemu.writel(self.reg(CrbReg.CTRL_START), CRB_START_INVOKE)

    def receive(self, timeout: float = COMMAND_TIMEOUT) -> bytes:
        _wait(lambda: self.qemu.readl(self.reg(CrbReg.CTRL_START)), 0, CRB_START_INVOKE, "CRB start", timeout)
        sts = self.qemu.readl(self.reg(CrbReg.CTRL_STS))
        if sts & CRB_CTRL_STS_ERROR:
            raise QtestError(f"CRB reports tpmSts error (CTRL_STS 0x{sts:x})")
        address = self.qemu.readq(self.reg(CrbReg.CTRL_RSP_ADDR))
        header = self.qemu.memread(address, 10)
        rest = tpm_header_size(header) - len(header)
        response = header + (self.qemu.memread(address + len(header), rest) if rest > 0 else b"")
        self.qemu.writeb(self.reg(CrbReg.LOC_CTRL), CRB_LOC_CTRL_RELINQUISH)
        return response

    def cancel(self) -> None:
        self.qemu.writel(self.reg(CrbReg.CTRL_CANCEL), CRB_CANCEL_INVOKE)

    def transfer(self, command: bytes, timeout: float = COMMAND_TIMEOUT) -> bytes:
        self.send(command)
        return self.receive(timeout)


@dataclass
class SocketTpm:
    """``vtpm-cuse socket`` with only a Unix control channel, the way QEMU wants it."""

    work: Path
    extra: list[str] = field(default_factory=list)
    terminate: bool = False
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ctrl(self) -> Path:
        return self.work / "ctrl.sock"

    @property
    def state(self) -> Path:
        return self.work / "state"

    @property
    def log(self) -> Path:
        return self.work / "vtpm.log"

    def start(self) -> SocketTpm:
        self.state.mkdir(parents=True, exist_ok=True)
        self.ctrl.unlink(missing_ok=True)
        self.log.unlink(missing_ok=True)
        ctrl = f"type=unixio,path={self.ctrl}" + (",terminate" if self.terminate else "")
        argv = [*DAEMON, "socket", "--tpm2", "--tpmstate", f"dir={self.state}", "--ctrl", ctrl]
        argv += ["--log", f"file={self.log},level=20", *self.extra]
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env_with_repo(), stderr=subprocess.PIPE)
        # Wait for the log line rather than connecting: a probing control connection
        # would be the one client, and with terminate its close would end the daemon.
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        while "serving:" not in (self.log.read_text() if self.log.exists() else ""):
            if self.proc.poll() is not None:
                raise RuntimeError(f"vtpm-cuse socket exited {self.proc.returncode}: {self.proc.stderr.read()!r}")
            assert time.monotonic() < deadline, "vtpm-cuse socket did not start serving"
            time.sleep(0.02)
        return self

    def wait(self, timeout: float = 20) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()


INTERFACES: dict[str, type[Tis] | type[Crb]] = {"tpm-tis": Tis, "tpm-crb": Crb}
"""QEMU ``-device`` model → the driver for its registers."""


def interface(model: str, qemu: QtestChannel) -> Tis | Crb:
    try:
        return INTERFACES[model](qemu)
    except KeyError:
        raise ValueError(f"no qtest driver for TPM model {model!r}") from None


def emulator_args(ctrl_path: Path, model: str) -> list[str]:
    """QEMU's emulator backend on a swtpm-style Unix control socket (docs/specs/tpm.rst)."""
    return [
        "-chardev",
        f"socket,id=chrtpm,path={ctrl_path}",
        "-tpmdev",
        "emulator,id=tpm0,chardev=chrtpm",
        "-device",
        f"{model},tpmdev=tpm0",
    ]


def passthrough_args(path: str, cancel_path: str, model: str, add_fds: Sequence[str] = ()) -> list[str]:
    """QEMU's passthrough backend; ``add_fds`` are ``-add-fd`` values (libvirt's way)."""
    fd_args = [arg for value in add_fds for arg in ("-add-fd", value)]
    return [
        *fd_args,
        "-tpmdev",
        f"passthrough,id=tpm0,path={path},cancel-path={cancel_path}",
        "-device",
        f"{model},tpmdev=tpm0",
    ]
