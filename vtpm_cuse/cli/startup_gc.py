"""No cyclic garbage collection while the daemon starts.

Start-up creates some 80,000 long-lived objects (modules, classes, enum members, the
command table) and almost no garbage, yet the collector would run about a hundred
times over them: ~30 ms of the ~250 ms from exec to the first answer
(scripts/bench_startup.py).  So the daemon pauses the collector before its imports and,
once it serves, moves everything that exists then into the permanent generation
(``gc.freeze``) -- later collections no longer walk it -- and switches it back on.
"""

from __future__ import annotations

import gc

__all__ = ["pause", "resume"]

_paused = False


def pause() -> None:
    """Switch the collector off until :func:`resume` (no-op when already off)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Freeze what start-up made and switch the collector back on, if :func:`pause` had
    switched it off (so a test calling the daemon in-process keeps its own collector)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
