"""What the Vtpm control tests (tests/test_vtpm_control_*.py) share: TPM command builders,
control-call shorthands, a test-only slow cancelable command, trio_test."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import trio

from ioctl_defs import (
    PtmCmd,
    PtmInitRequest,
    PtmResRequest,
)
from tests.support.trio_run import trio_test as trio_test  # re-exported: for the control tests
from vtpm_cuse import control
from vtpm_cuse.control import Transport
from vtpm_cuse.tpm.command import CommandTable, command
from vtpm_cuse.tpm.commands import COMMANDS
from vtpm_cuse.tpm.errors import TPM_RC, TpmError
from vtpm_cuse.vtpm import Vtpm

PERMALL = "tpm2-00.permall"
VOLATILE = "tpm2-00.volatilestate"
SU_CLEAR, SU_STATE = 0, 1
SHA256 = 0x000B
FATAL = bytes.fromhex("8001 0000000a 00000101")


# -- TPM command builders / parsers ------------------------------------------------


def tpm_cmd(code: int, body: bytes = b"", tag: int = 0x8001) -> bytes:
    return struct.pack(">HII", tag, 10 + len(body), code) + body


def startup(su: int = SU_CLEAR) -> bytes:
    return tpm_cmd(0x144, struct.pack(">H", su))


def shutdown(su: int) -> bytes:
    return tpm_cmd(0x145, struct.pack(">H", su))


def pcr_extend(pcr: int, digest: bytes) -> bytes:
    password_session = struct.pack(">IHBH", 0x40000009, 0, 0, 0)
    body = (
        struct.pack(">I", pcr)
        + struct.pack(">I", len(password_session))
        + password_session
        + struct.pack(">IH", 1, SHA256)
        + digest
    )
    return tpm_cmd(0x182, body, tag=0x8002)


def pcr_read(pcr: int) -> bytes:
    select = bytearray(3)
    select[pcr // 8] |= 1 << (pcr % 8)
    return tpm_cmd(0x17E, struct.pack(">IHB", 1, SHA256, 3) + bytes(select))


def get_max_command_size() -> bytes:
    return tpm_cmd(0x17A, struct.pack(">III", 6, 0x11E, 1))  # TPM_CAP_TPM_PROPERTIES


def rc(response: bytes) -> int:
    return struct.unpack_from(">I", response, 6)[0]


async def read_pcr(vtpm: Vtpm, pcr: int) -> bytes:
    response = await vtpm.execute(pcr_read(pcr))
    assert rc(response) == 0, hex(rc(response))
    (size,) = struct.unpack_from(">H", response, 28)
    return response[30 : 30 + size]


async def ok(vtpm: Vtpm, cmd: bytes) -> bytes:
    response = await vtpm.execute(cmd)
    assert rc(response) == 0, f"rc 0x{rc(response):x}"
    return response


async def ctl(vtpm: Vtpm, cmd: PtmCmd, request=None, transport=Transport.SOCKET, **kw):
    return await control.dispatch(vtpm, cmd, request if request is not None else PtmResRequest(), transport, **kw)


async def result_of(vtpm: Vtpm, cmd: PtmCmd, request=None, transport=Transport.SOCKET, **kw) -> int:
    return (await ctl(vtpm, cmd, request, transport, **kw)).response.tpm_result


async def init(vtpm: Vtpm, flags: int = 0) -> None:
    assert await result_of(vtpm, PtmCmd.CMD_INIT, PtmInitRequest(init_flags=flags)) == 0


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.name != ".lock"}


# -- a test-only slow, cancelable command ----------------------------------------------

SLOW_CC = 0x20000100


class SlowCommand:
    """A command that runs until released or cancelled, registered in a private table."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.table = CommandTable([*COMMANDS, command(SLOW_CC, cancelable=True)(self._handler)])

    def _handler(self, ctx):
        self.started.set()
        while not self.release.wait(0.005):
            if ctx.engine.cancel_requested.is_set():
                raise TpmError(TPM_RC.CANCELED, "cancelled")
        return None

    async def wait_started(self) -> None:
        with trio.fail_after(5):
            while not self.started.is_set():
                await trio.sleep(0.005)
