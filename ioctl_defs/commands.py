"""The control-command table: one entry per PTM ioctl / CMD_* code.

The CUSE ioctl dispatcher, the socket control channel and the client tool
all look commands up here, so a number, direction or struct can only be
wrong in one place.  ioctl numbers are *computed* (``_IOC`` of the struct
size under an ABI) rather than written down; :class:`PtmIoctl` lists the
resulting x86-64 values that the spec prints.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, NamedTuple

from . import ioc
from .abi import I386, X86_64, Abi, compat_abi, host_abi, resolve_abi
from .constants import PTM_IOC_MAGIC, PtmCmd
from .errors import UnknownCommand
from .ioc import IocDir
from .part import CStruct, Part
from .structs import (
    ptm_cap,
    ptm_cap_n,
    ptm_est,
    ptm_getconfig,
    ptm_getinfo,
    ptm_getstate,
    ptm_hdata,
    ptm_init,
    ptm_loc,
    ptm_lockstorage,
    ptm_res,
    ptm_reset_est,
    ptm_setbuffersize,
    ptm_setstate,
)

__all__ = [
    "COMMANDS",
    "CommandSpec",
    "IoctlMatch",
    "PTM_GET_INFO_I386",
    "PtmIoctl",
    "by_cmd",
    "by_ioctl",
    "by_name",
]

_R = IocDir.READ
_RW = IocDir.READ | IocDir.WRITE
_CMD_HEADER = struct.Struct(">I")


@dataclass(frozen=True)
class CommandSpec:
    """Everything the two transports need to know about one control command."""

    name: str
    """The ioctl's C name, e.g. ``"PTM_INIT"`` (as in ``TPM result from PTM_INIT: 0x%x``)."""
    nr: int
    """``_IOC_NR`` of the ioctl."""
    cmd: PtmCmd
    """Socket command code (``nr + 1``)."""
    direction: IocDir
    """``_IOR`` (READ) or ``_IOWR`` (READ|WRITE); decides what the kernel copies in."""
    struct: CStruct
    """The struct whose size is encoded in the ioctl number; used on the device."""
    socket_struct: CStruct | None = None
    """Struct used on the socket when it differs (only GET_CAPABILITY: ptm_cap_n)."""

    def __post_init__(self) -> None:
        if self.cmd != self.nr + 1:
            raise ValueError(f"{self.name}: CMD code {self.cmd:#x} is not nr {self.nr} + 1")
        if self.direction not in (_R, _RW):
            raise ValueError(f"{self.name}: PTM ioctls are _IOR or _IOWR")
        # _IOR: the kernel copies nothing in, so there must be nothing to send.
        if (self.direction == _R) != self.struct.request.LAYOUT.is_empty:
            raise ValueError(f"{self.name}: direction does not match {self.struct.name}'s request")

    @property
    def cmd_name(self) -> str:
        """``"CMD_INIT"`` etc."""
        return self.cmd.name

    @property
    def request(self) -> type[Part]:
        """Request half on the ioctl path."""
        return self.struct.request

    @property
    def response(self) -> type[Part]:
        """Response half on the ioctl path."""
        return self.struct.response

    @property
    def socket_request(self) -> type[Part]:
        return (self.socket_struct or self.struct).request

    @property
    def socket_response(self) -> type[Part]:
        return (self.socket_struct or self.struct).response

    def ioctl_size(self, abi: Abi | None = None) -> int:
        """``_IOC_SIZE``: the union size under ``abi`` (host by default)."""
        return self.struct.ioctl_size(abi)

    def ioctl_number(self, abi: Abi | None = None) -> int:
        """The ioctl request number under ``abi`` (host by default)."""
        abi = resolve_abi(abi)
        return ioc.encode(self.direction, PTM_IOC_MAGIC, self.nr, self.ioctl_size(abi), abi.ioc_layout)

    def pack_socket_request(self, request: Part | None = None) -> bytes:
        """The whole control-channel message: ``u32 cmd`` (BE) + request body.

        ``request`` defaults to an empty/zero request of the right type.
        """
        if request is None:
            request = self.socket_request()
        elif not isinstance(request, self.socket_request):
            raise TypeError(f"{self.name} takes {self.socket_request.__name__}, got {type(request).__name__}")
        return _CMD_HEADER.pack(self.cmd) + request.pack_socket()


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("PTM_GET_CAPABILITY", 0, PtmCmd.CMD_GET_CAPABILITY, _R, ptm_cap, ptm_cap_n),
    CommandSpec("PTM_INIT", 1, PtmCmd.CMD_INIT, _RW, ptm_init),
    CommandSpec("PTM_SHUTDOWN", 2, PtmCmd.CMD_SHUTDOWN, _R, ptm_res),
    CommandSpec("PTM_GET_TPMESTABLISHED", 3, PtmCmd.CMD_GET_TPMESTABLISHED, _R, ptm_est),
    CommandSpec("PTM_SET_LOCALITY", 4, PtmCmd.CMD_SET_LOCALITY, _RW, ptm_loc),
    CommandSpec("PTM_HASH_START", 5, PtmCmd.CMD_HASH_START, _R, ptm_res),
    CommandSpec("PTM_HASH_DATA", 6, PtmCmd.CMD_HASH_DATA, _RW, ptm_hdata),
    CommandSpec("PTM_HASH_END", 7, PtmCmd.CMD_HASH_END, _R, ptm_res),
    CommandSpec("PTM_CANCEL_TPM_CMD", 8, PtmCmd.CMD_CANCEL_TPM_CMD, _R, ptm_res),
    CommandSpec("PTM_STORE_VOLATILE", 9, PtmCmd.CMD_STORE_VOLATILE, _R, ptm_res),
    CommandSpec("PTM_RESET_TPMESTABLISHED", 10, PtmCmd.CMD_RESET_TPMESTABLISHED, _RW, ptm_reset_est),
    CommandSpec("PTM_GET_STATEBLOB", 11, PtmCmd.CMD_GET_STATEBLOB, _RW, ptm_getstate),
    CommandSpec("PTM_SET_STATEBLOB", 12, PtmCmd.CMD_SET_STATEBLOB, _RW, ptm_setstate),
    CommandSpec("PTM_STOP", 13, PtmCmd.CMD_STOP, _R, ptm_res),
    CommandSpec("PTM_GET_CONFIG", 14, PtmCmd.CMD_GET_CONFIG, _R, ptm_getconfig),
    CommandSpec("PTM_SET_DATAFD", 15, PtmCmd.CMD_SET_DATAFD, _R, ptm_res),
    CommandSpec("PTM_SET_BUFFERSIZE", 16, PtmCmd.CMD_SET_BUFFERSIZE, _RW, ptm_setbuffersize),
    CommandSpec("PTM_GET_INFO", 17, PtmCmd.CMD_GET_INFO, _RW, ptm_getinfo),
    CommandSpec("PTM_LOCK_STORAGE", 18, PtmCmd.CMD_LOCK_STORAGE, _RW, ptm_lockstorage),
)

_BY_CMD: dict[int, CommandSpec] = {c.cmd: c for c in COMMANDS}
_BY_NAME: dict[str, CommandSpec] = {c.name: c for c in COMMANDS} | {c.cmd_name: c for c in COMMANDS}


class IoctlMatch(NamedTuple):
    """Result of :func:`by_ioctl`: the command and the ABI whose number matched
    (unpack the buffer with that ABI -- a 32-bit caller's GET_INFO is 3084 bytes)."""

    command: CommandSpec
    abi: Abi


def by_cmd(cmd: int) -> CommandSpec:
    """Look up a socket CMD_* code; raises :class:`UnknownCommand`."""
    try:
        return _BY_CMD[cmd]
    except KeyError:
        raise UnknownCommand("command code", cmd) from None


def by_name(name: str) -> CommandSpec:
    """Look up ``"PTM_GET_CAPABILITY"`` or ``"CMD_GET_CAPABILITY"``; raises :class:`UnknownCommand`."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownCommand("command name", name) from None


@functools.cache
def _ioctl_index(abi: Abi) -> dict[int, CommandSpec]:
    return {c.ioctl_number(abi): c for c in COMMANDS}


def by_ioctl(number: int, abis: Iterable[Abi] | None = None) -> IoctlMatch:
    """Look up an ioctl request number.

    By default both the host ABI and its 32/64-bit compat sibling are tried
    (they differ only for PTM_GET_INFO).  Raises :class:`UnknownCommand`.
    """
    candidates = (host_abi(), compat_abi(host_abi())) if abis is None else tuple(abis)
    for abi in candidates:
        command = _ioctl_index(abi).get(number)
        if command is not None:
            return IoctlMatch(command, abi)
    raise UnknownCommand("ioctl number", number)


def _x86_64(name: str) -> int:
    return by_name(name).ioctl_number(X86_64)


class PtmIoctl(IntEnum):
    """ioctl numbers as printed in the spec: generic ``_IOC`` layout, x86-64 sizes.

    For other ABIs use :meth:`CommandSpec.ioctl_number`.
    """

    PTM_GET_CAPABILITY = _x86_64("PTM_GET_CAPABILITY")
    PTM_INIT = _x86_64("PTM_INIT")
    PTM_SHUTDOWN = _x86_64("PTM_SHUTDOWN")
    PTM_GET_TPMESTABLISHED = _x86_64("PTM_GET_TPMESTABLISHED")
    PTM_SET_LOCALITY = _x86_64("PTM_SET_LOCALITY")
    PTM_HASH_START = _x86_64("PTM_HASH_START")
    PTM_HASH_DATA = _x86_64("PTM_HASH_DATA")
    PTM_HASH_END = _x86_64("PTM_HASH_END")
    PTM_CANCEL_TPM_CMD = _x86_64("PTM_CANCEL_TPM_CMD")
    PTM_STORE_VOLATILE = _x86_64("PTM_STORE_VOLATILE")
    PTM_RESET_TPMESTABLISHED = _x86_64("PTM_RESET_TPMESTABLISHED")
    PTM_GET_STATEBLOB = _x86_64("PTM_GET_STATEBLOB")
    PTM_SET_STATEBLOB = _x86_64("PTM_SET_STATEBLOB")
    PTM_STOP = _x86_64("PTM_STOP")
    PTM_GET_CONFIG = _x86_64("PTM_GET_CONFIG")
    PTM_SET_DATAFD = _x86_64("PTM_SET_DATAFD")
    PTM_SET_BUFFERSIZE = _x86_64("PTM_SET_BUFFERSIZE")
    PTM_GET_INFO = _x86_64("PTM_GET_INFO")
    PTM_LOCK_STORAGE = _x86_64("PTM_LOCK_STORAGE")


PTM_GET_INFO_I386: Final[int] = by_name("PTM_GET_INFO").ioctl_number(I386)
"""PTM_GET_INFO as a 32-bit x86 caller encodes it (3084-byte struct)."""
