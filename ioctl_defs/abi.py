"""Which C ABI the ioctl structs are laid out for.

tpm_ioctl.h structs travel over the CUSE device in the caller's native
representation.  Three properties of that representation matter:

* byte order (fields are host-endian on the ioctl path),
* the alignment of ``uint64_t`` -- it is 8 on x86-64 but 4 on i386, which
  makes ``ptm_getinfo`` 3088 vs 3084 bytes and therefore changes the
  ``PTM_GET_INFO`` ioctl number,
* the ``_IOC`` bit layout of the architecture.

A 32-bit client may talk to a 64-bit server, so the ABI is an explicit,
selectable value instead of being baked into the struct definitions.
"""

from __future__ import annotations

import functools
import platform
import struct
import sys
from dataclasses import dataclass
from typing import Literal

from .ioc import GENERIC, IocLayout, host_layout

__all__ = ["Abi", "I386", "KNOWN_ABIS", "X86_64", "compat_abi", "host_abi", "resolve_abi"]

ByteOrder = Literal["little", "big"]


@dataclass(frozen=True)
class Abi:
    """Byte order, ``uint64_t`` alignment and ``_IOC`` layout of one ABI."""

    name: str
    byteorder: ByteOrder
    u64_align: int
    ioc_layout: IocLayout = GENERIC

    def __post_init__(self) -> None:
        if self.byteorder not in ("little", "big"):
            raise ValueError(f"byteorder must be 'little' or 'big', got {self.byteorder!r}")
        if self.u64_align not in (4, 8):
            raise ValueError(f"u64_align must be 4 or 8, got {self.u64_align}")

    @property
    def struct_order(self) -> str:
        """The :mod:`struct` prefix for this byte order (no implicit padding)."""
        return "<" if self.byteorder == "little" else ">"


X86_64 = Abi("x86-64", "little", 8)
"""The ABI the spec's numbers were printed for (also arm64 and ARM EABI)."""

I386 = Abi("i386", "little", 4)
"""32-bit x86: ``uint64_t`` is only 4-aligned, so ``ptm_getinfo`` shrinks to 3084 bytes."""

KNOWN_ABIS: tuple[Abi, ...] = (X86_64, I386)


@functools.cache
def host_abi() -> Abi:
    """The ABI of the running interpreter (what a local ioctl() caller uses)."""
    # offsetof(struct {char c; uint64_t q;}, q) as the C compiler lays it out
    u64_align = struct.calcsize("@cQ") - struct.calcsize("@Q")
    byteorder: ByteOrder = "little" if sys.byteorder == "little" else "big"
    layout = host_layout()
    for known in KNOWN_ABIS:
        if (known.byteorder, known.u64_align, known.ioc_layout) == (byteorder, u64_align, layout):
            return known
    return Abi(platform.machine() or "host", byteorder, u64_align, layout)


def compat_abi(abi: Abi) -> Abi:
    """The sibling ABI with the other ``uint64_t`` alignment.

    A 64-bit kernel also serves 32-bit callers; their ``PTM_GET_INFO`` number
    and buffer differ, so a server that wants to answer them needs both.
    """
    for known in KNOWN_ABIS:
        if known.byteorder == abi.byteorder and known.ioc_layout == abi.ioc_layout and known.u64_align != abi.u64_align:
            return known
    return Abi(f"{abi.name} (compat)", abi.byteorder, 12 - abi.u64_align, abi.ioc_layout)


def resolve_abi(abi: Abi | None) -> Abi:
    """``abi`` itself, or the host ABI when None (the default everywhere)."""
    return host_abi() if abi is None else abi
