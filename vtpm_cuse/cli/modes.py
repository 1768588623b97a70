"""The daemon's modes, apart from the ``--print-*`` documents of :mod:`.info`, so that
the option declarations (:mod:`.arguments`) need nothing but the standard library."""

from __future__ import annotations

from enum import Enum

__all__ = ["Mode"]


class Mode(Enum):
    """The daemon's interfaces, named as swtpm's."""

    SOCKET = "socket"
    CHARDEV = "chardev"
    CUSE = "cuse"
