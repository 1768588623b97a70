"""Linux ``_IOC`` ioctl-number encoding and decoding.

The CUSE kernel driver runs the device in *restricted* ioctl mode: it learns
how many bytes to copy in and out only from the ioctl number itself
(``_IOC_DIR`` and ``_IOC_SIZE``).  Getting these bits right is therefore the
whole ABI; this module is the single place that knows how they are packed.

Two bit layouts exist in Linux:

* the generic one (x86, arm, arm64, s390, riscv, ...):
  ``dir << 30 | size << 16 | type << 8 | nr`` with a 2-bit direction and a
  14-bit size; ``_IOC_WRITE = 1``, ``_IOC_READ = 2``;
* the alternative one (powerpc, mips, sparc, alpha): a 3-bit direction and a
  13-bit size; ``_IOC_NONE = 1``, ``_IOC_READ = 2``, ``_IOC_WRITE = 4``.

Directions are expressed with :class:`IocDir` independently of the layout, so
a number can be re-encoded for another architecture without touching callers.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from enum import IntFlag
from typing import NamedTuple

__all__ = [
    "ALTERNATIVE",
    "GENERIC",
    "IocDir",
    "IocFields",
    "IocLayout",
    "decode",
    "encode",
    "host_layout",
    "io",
    "ior",
    "iow",
    "iowr",
]


class IocDir(IntFlag):
    """Transfer direction as seen from user space.

    ``WRITE``: the caller's buffer is copied *to* the driver; ``READ``: the
    driver fills the caller's buffer.  The numeric values equal the generic
    layout's bits, but :class:`IocLayout` maps them for every layout.
    """

    NONE = 0
    WRITE = 1
    READ = 2


class IocFields(NamedTuple):
    """The four fields an ioctl number is made of."""

    direction: IocDir
    type: int
    nr: int
    size: int


@dataclass(frozen=True)
class IocLayout:
    """Bit layout of an ioctl number on one family of architectures."""

    name: str
    size_bits: int
    dir_bits: int
    none_bits: int
    write_bits: int
    read_bits: int
    nr_bits: int = 8
    type_bits: int = 8

    @property
    def type_shift(self) -> int:
        return self.nr_bits

    @property
    def size_shift(self) -> int:
        return self.type_shift + self.type_bits

    @property
    def dir_shift(self) -> int:
        return self.size_shift + self.size_bits

    @property
    def max_size(self) -> int:
        """Largest argument size the layout can express."""
        return (1 << self.size_bits) - 1

    def _dir_to_bits(self, direction: IocDir) -> int:
        if direction == IocDir.NONE:
            return self.none_bits
        bits = 0
        if direction & IocDir.WRITE:
            bits |= self.write_bits
        if direction & IocDir.READ:
            bits |= self.read_bits
        return bits

    def _bits_to_dir(self, bits: int) -> IocDir:
        valid = {
            self.none_bits: IocDir.NONE,
            self.write_bits: IocDir.WRITE,
            self.read_bits: IocDir.READ,
            self.write_bits | self.read_bits: IocDir.READ | IocDir.WRITE,
        }
        try:
            return valid[bits]
        except KeyError:
            raise ValueError(f"direction bits {bits:#x} are not valid in the {self.name} _IOC layout") from None

    def encode(self, direction: IocDir, type_: int | str, nr: int, size: int) -> int:
        """Build an ioctl number (the ``_IOC()`` macro)."""
        type_value = _type_value(type_)
        _check_range("type", type_value, self.type_bits)
        _check_range("nr", nr, self.nr_bits)
        _check_range("size", size, self.size_bits)
        return (
            self._dir_to_bits(IocDir(direction)) << self.dir_shift
            | size << self.size_shift
            | type_value << self.type_shift
            | nr
        )

    def decode(self, number: int) -> IocFields:
        """Split an ioctl number into (direction, type, nr, size)."""
        total_bits = self.nr_bits + self.type_bits + self.size_bits + self.dir_bits
        _check_range("ioctl number", number, total_bits)
        return IocFields(
            direction=self._bits_to_dir((number >> self.dir_shift) & _mask(self.dir_bits)),
            type=(number >> self.type_shift) & _mask(self.type_bits),
            nr=number & _mask(self.nr_bits),
            size=(number >> self.size_shift) & _mask(self.size_bits),
        )


GENERIC = IocLayout(name="generic", size_bits=14, dir_bits=2, none_bits=0, write_bits=1, read_bits=2)
"""asm-generic/ioctl.h: used by x86, arm, arm64, s390, riscv and most others."""

ALTERNATIVE = IocLayout(
    name="alternative (powerpc/mips/sparc/alpha)",
    size_bits=13,
    dir_bits=3,
    none_bits=1,
    write_bits=4,
    read_bits=2,
)
"""The 3-bit-direction layout; ``_IOWR`` numbers coincide with GENERIC, ``_IOR`` ones do not."""

_ALTERNATIVE_MACHINES = ("ppc", "powerpc", "mips", "sparc", "alpha")


def host_layout(machine: str | None = None) -> IocLayout:
    """The layout the running kernel uses (or the one for ``machine``, as in ``uname -m``)."""
    arch = (platform.machine() if machine is None else machine).lower()
    return ALTERNATIVE if arch.startswith(_ALTERNATIVE_MACHINES) else GENERIC


def encode(direction: IocDir, type_: int | str, nr: int, size: int, layout: IocLayout = GENERIC) -> int:
    """``_IOC(dir, type, nr, size)``."""
    return layout.encode(direction, type_, nr, size)


def decode(number: int, layout: IocLayout = GENERIC) -> IocFields:
    """Inverse of :func:`encode`."""
    return layout.decode(number)


def io(type_: int | str, nr: int, layout: IocLayout = GENERIC) -> int:
    """``_IO(type, nr)``: no argument transfer."""
    return layout.encode(IocDir.NONE, type_, nr, 0)


def ior(type_: int | str, nr: int, size: int, layout: IocLayout = GENERIC) -> int:
    """``_IOR(type, nr, T)`` with ``size = sizeof(T)``: the driver writes the caller's buffer."""
    return layout.encode(IocDir.READ, type_, nr, size)


def iow(type_: int | str, nr: int, size: int, layout: IocLayout = GENERIC) -> int:
    """``_IOW(type, nr, T)``: the driver reads the caller's buffer."""
    return layout.encode(IocDir.WRITE, type_, nr, size)


def iowr(type_: int | str, nr: int, size: int, layout: IocLayout = GENERIC) -> int:
    """``_IOWR(type, nr, T)``: copied in, then copied back out."""
    return layout.encode(IocDir.READ | IocDir.WRITE, type_, nr, size)


def _type_value(type_: int | str) -> int:
    if isinstance(type_, str):
        if len(type_) != 1:
            raise ValueError(f"ioctl type must be a single character, got {type_!r}")
        return ord(type_)
    return type_


def _mask(bits: int) -> int:
    return (1 << bits) - 1


def _check_range(what: str, value: int, bits: int) -> None:
    if not 0 <= value <= _mask(bits):
        raise ValueError(f"ioctl {what} {value} ({value:#x}) does not fit in {bits} bits")
