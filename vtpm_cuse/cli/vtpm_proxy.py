"""``swtpm chardev --vtpm-proxy``: have the kernel create /dev/tpmN + /dev/tpmrmN for us.

The Linux vTPM proxy driver (``tpm_vtpm_proxy``, /dev/vtpmx) creates a TPM
chip on request (ioctl VTPM_PROXY_IOC_NEW_DEV) and returns an anonymous file
descriptor: every command a program sends to /dev/tpmN (or the kernel's
resource manager, /dev/tpmrmN) can be read from it as one message, and the
response is written back as one message.  That fd is then served exactly
like ``chardev --fd`` (:mod:`.chardev`).  Containers get a TPM this way.

Layout of ``struct vtpm_proxy_new_dev`` (linux/vtpm_proxy.h): five u32 --
flags (in), tpm_num, fd, major, minor (out).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from enum import IntFlag
from pathlib import Path

__all__ = [
    "VTPMX_PATH",
    "VTPM_PROXY_IOC_NEW_DEV",
    "ProxyFlag",
    "ProxyControl",
    "ProxyDevice",
    "VtpmProxyError",
    "create_proxy_device",
]

VTPMX_PATH = Path("/dev/vtpmx")
_NEW_DEV = struct.Struct("=5I")
_IOC_READ_WRITE = 3
_VTPM_PROXY_IOC_MAGIC = 0xA1
VTPM_PROXY_IOC_NEW_DEV = (_IOC_READ_WRITE << 30) | (_NEW_DEV.size << 16) | (_VTPM_PROXY_IOC_MAGIC << 8) | 0x00
"""_IOWR(0xa1, 0x00, struct vtpm_proxy_new_dev)."""


class ProxyFlag(IntFlag):
    """``vtpm_proxy_new_dev.flags``."""

    TPM2 = 1


class VtpmProxyError(RuntimeError):
    """/dev/vtpmx is missing or refused the request (message says which)."""


@dataclass(frozen=True)
class ProxyDevice:
    """What the kernel created: the chip number and the fd to serve."""

    fd: int
    tpm_num: int
    major: int
    minor: int

    @property
    def device(self) -> Path:
        return Path(f"/dev/tpm{self.tpm_num}")

    @property
    def resource_manager(self) -> Path:
        return Path(f"/dev/tpmrm{self.tpm_num}")


@dataclass
class ProxyControl:
    """An open /dev/vtpmx: opened early (so a missing driver is reported before start-up),
    asked for the device only once the TPM can answer the kernel's first commands."""

    fd: int
    path: Path

    @classmethod
    def open(cls, vtpmx: Path = VTPMX_PATH) -> ProxyControl:
        try:
            return cls(os.open(vtpmx, os.O_RDWR | os.O_CLOEXEC), vtpmx)
        except OSError as exc:
            hint = " (load the tpm_vtpm_proxy module)" if exc.errno == errno.ENOENT else ""
            raise VtpmProxyError(f"--vtpm-proxy: cannot open {vtpmx}: {exc.strerror}{hint}") from None

    def create(self, flags: ProxyFlag = ProxyFlag.TPM2) -> ProxyDevice:
        """VTPM_PROXY_IOC_NEW_DEV; closes /dev/vtpmx (one device per daemon)."""
        try:
            request = bytearray(_NEW_DEV.pack(int(flags), 0, 0, 0, 0))
            fcntl.ioctl(self.fd, VTPM_PROXY_IOC_NEW_DEV, request, True)
        except OSError as exc:
            raise VtpmProxyError(f"--vtpm-proxy: VTPM_PROXY_IOC_NEW_DEV on {self.path}: {exc.strerror}") from None
        finally:
            self.close()
        _, tpm_num, fd, major, minor = _NEW_DEV.unpack(request)
        os.set_inheritable(fd, False)
        return ProxyDevice(fd=fd, tpm_num=tpm_num, major=major, minor=minor)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def create_proxy_device(vtpmx: Path = VTPMX_PATH, flags: ProxyFlag = ProxyFlag.TPM2) -> ProxyDevice:
    """Open /dev/vtpmx and ask for a new chip in one go; the returned fd is ours to serve and close."""
    return ProxyControl.open(vtpmx).create(flags)
