"""Linux ioctl request numbers (the generic ``_IOC`` encoding of asm-generic/ioctl.h).

In restricted mode the kernel trusts only what the number itself says: the direction
bits decide whether it copies the argument in and/or out, and the size field how many
bytes. A CUSE device therefore has to use correctly encoded numbers, and the tests
build them with the same helpers a C client would use as macros.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

_NR_BITS = 8
_TYPE_BITS = 8
_SIZE_BITS = 14
_DIR_BITS = 2

_NR_SHIFT = 0
_TYPE_SHIFT = _NR_SHIFT + _NR_BITS
_SIZE_SHIFT = _TYPE_SHIFT + _TYPE_BITS
_DIR_SHIFT = _SIZE_SHIFT + _SIZE_BITS

IOC_SIZE_MAX = (1 << _SIZE_BITS) - 1
"""Largest argument size an ioctl number can describe (16383 bytes)."""


class IocDir(enum.IntFlag):
    """Transfer direction, seen from the caller: WRITE = caller to driver."""

    NONE = 0
    WRITE = 1
    READ = 2


@dataclass(frozen=True)
class IoctlNumber:
    """A decoded ioctl request number."""

    direction: IocDir
    type: int
    nr: int
    size: int

    @classmethod
    def decode(cls, cmd: int) -> IoctlNumber:
        if not 0 <= cmd <= 0xFFFFFFFF:
            raise ValueError(f"ioctl number {cmd:#x} does not fit in 32 bits")
        return cls(
            direction=IocDir((cmd >> _DIR_SHIFT) & ((1 << _DIR_BITS) - 1)),
            type=(cmd >> _TYPE_SHIFT) & ((1 << _TYPE_BITS) - 1),
            nr=(cmd >> _NR_SHIFT) & ((1 << _NR_BITS) - 1),
            size=(cmd >> _SIZE_SHIFT) & IOC_SIZE_MAX,
        )

    def encode(self) -> int:
        return ioc(self.direction, self.type, self.nr, self.size)


def _type_code(type_: int | str) -> int:
    code = ord(type_) if isinstance(type_, str) else type_
    if not 0 <= code < (1 << _TYPE_BITS):
        raise ValueError(f"ioctl type {type_!r} does not fit in {_TYPE_BITS} bits")
    return code


def ioc(direction: IocDir, type_: int | str, nr: int, size: int) -> int:
    """Encode an ioctl number like the C ``_IOC`` macro."""
    if not 0 <= nr < (1 << _NR_BITS):
        raise ValueError(f"ioctl nr {nr} does not fit in {_NR_BITS} bits")
    if not 0 <= size <= IOC_SIZE_MAX:
        raise ValueError(f"ioctl size {size} exceeds {IOC_SIZE_MAX}")
    return (
        (int(direction) << _DIR_SHIFT)
        | (_type_code(type_) << _TYPE_SHIFT)
        | (nr << _NR_SHIFT)
        | (size << _SIZE_SHIFT)
    )


def io(type_: int | str, nr: int) -> int:
    """``_IO``: no argument transfer (the raw ``arg`` value still reaches the device)."""
    return ioc(IocDir.NONE, type_, nr, 0)


def ior(type_: int | str, nr: int, size: int) -> int:
    """``_IOR``: the driver returns ``size`` bytes to the caller."""
    return ioc(IocDir.READ, type_, nr, size)


def iow(type_: int | str, nr: int, size: int) -> int:
    """``_IOW``: the caller passes ``size`` bytes to the driver."""
    return ioc(IocDir.WRITE, type_, nr, size)


def iowr(type_: int | str, nr: int, size: int) -> int:
    """``_IOWR``: ``size`` bytes go in, and up to ``size`` bytes come back."""
    return ioc(IocDir.READ | IocDir.WRITE, type_, nr, size)
