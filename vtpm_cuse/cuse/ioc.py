"""What the CUSE layer needs to know about ioctl numbers in restricted mode.

In restricted mode the kernel trusts only what the number itself says: the direction
bits decide whether it copies the argument in and/or out, and the size field how many
bytes.  Encoding and decoding those numbers is part of the tpm_ioctl.h contract and
lives in :mod:`ioctl_defs.ioc` alone; this module keeps only the CUSE-side consequence.
"""

from __future__ import annotations

from ioctl_defs.ioc import GENERIC

__all__ = ["IOC_SIZE_MAX"]

IOC_SIZE_MAX = GENERIC.max_size
"""Largest argument a restricted ioctl can carry (16383 bytes), so the largest
ioctl input the channel must be able to read.  The generic layout has the widest
size field, so this bounds every architecture."""
