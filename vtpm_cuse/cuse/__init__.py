"""Our own implementation of the CUSE (character device in userspace) protocol: one
data thread serves what needs no waiting, trio the rest (see :mod:`.session`).

pyfuse3 and the other Python FUSE bindings have no CUSE API, so the package speaks the
kernel protocol on /dev/cuse itself: :mod:`.protocol` (wire format), :mod:`.session`
(the server loop), :mod:`.device` (the interface a device implements), :mod:`.ioc`
(restricted-ioctl limits; the numbers themselves come from :mod:`ioctl_defs.ioc`)
and :mod:`.echo` (a minimal device).
"""

from .device import CuseDevice, NotifyPoll, PollWaiters
from .protocol import CuseProtocolError, IoctlFlags, PollFlags
from .session import CUSE_PATH, CuseOptions, CuseSession, serve_cuse

__all__ = [
    "CUSE_PATH",
    "CuseDevice",
    "CuseOptions",
    "CuseProtocolError",
    "CuseSession",
    "IoctlFlags",
    "NotifyPoll",
    "PollFlags",
    "PollWaiters",
    "serve_cuse",
]
