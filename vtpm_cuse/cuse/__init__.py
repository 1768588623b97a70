"""Our own implementation of the CUSE (character device in userspace) protocol: one
data thread serves what needs no waiting, trio the rest (see :mod:`.session`).

pyfuse3 and the other Python FUSE bindings have no CUSE API, so the package speaks the
kernel protocol on /dev/cuse itself: :mod:`.protocol` (wire format), :mod:`.handshake`
(CUSE_INIT, also without an event loop), :mod:`.session` (the server loop), :mod:`.device`
(the interface a device implements), :mod:`.ioc` (restricted-ioctl limits; the numbers
themselves come from :mod:`ioctl_defs.ioc`) and :mod:`.echo` (a minimal device).
Names load on first use, so that the daemon can import :mod:`.handshake` before trio.
"""

from __future__ import annotations

from ..lazy_exports import lazy_exports

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

#: public name -> the module that defines it
_DEFINED_IN = {
    "CUSE_PATH": ".handshake",
    "CuseDevice": ".device",
    "CuseOptions": ".handshake",
    "CuseProtocolError": ".protocol",
    "CuseSession": ".session",
    "IoctlFlags": ".protocol",
    "NotifyPoll": ".device",
    "PollFlags": ".protocol",
    "PollWaiters": ".device",
    "serve_cuse": ".session",
}

__getattr__, __dir__ = lazy_exports(__name__, _DEFINED_IN, __all__)
