"""Persistent objects: what TPM2_EvictControl keeps in NV (``PermanentState.persistent``).

A persistent object is a :class:`~.objects.LoadedObject` stored under its persistent
handle (TPM_HT_PERSISTENT, 0x81xxxxxx) in the permanent state, so it survives TPM
Restart, TPM Reset and a daemon restart like every other NV datum.  The handle range
says who provisioned it (Part 3, TPM2_EvictControl): the owner's half is
0x81000000-0x817FFFFF, the platform's 0x81800000-0x81FFFFFF.

The object is used in place: :func:`find_object` answers "the object at this handle"
for transient and persistent handles alike, so commands need not know where an object
lives.  A persistent object is not reachable while the hierarchy that guards it is
disabled (the reference TPM answers TPM_RC_HANDLE as if it were not there).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .constants import (
    HR_SHIFT,
    PERSISTENT_OWNER_FIRST,
    PERSISTENT_OWNER_LAST,
    PERSISTENT_PLATFORM_FIRST,
    PERSISTENT_PLATFORM_LAST,
    TPM_HT,
    TPM_RH,
)
from .entities import Entity, object_entity
from .errors import TPM_RC, TpmError
from .hierarchy import hierarchy_enabled
from .objects import LoadedObject

if TYPE_CHECKING:
    from .engine import Engine

__all__ = [
    "DEFAULT_MAX_PERSISTENT",
    "clear_owner_objects",
    "evict",
    "find_object",
    "is_owner_handle",
    "is_platform_handle",
    "make_persistent",
    "persistent_entity",
    "persistent_handles",
    "persistent_room",
    "persistent_used",
]

#: Persistent objects a TPM holds unless configured otherwise (Engine(max_persistent=...)).
#: The PC Client profile asks for at least 7; NV of a real TPM usually allows a few more.
DEFAULT_MAX_PERSISTENT = 64

#: Hierarchies whose persistent objects TPM2_Clear removes (Part 3, TPM2_Clear: "flush
#: resident objects (persistent and volatile) in the Storage and Endorsement hierarchies").
CLEARED_HIERARCHIES = (TPM_RH.OWNER, TPM_RH.ENDORSEMENT)


def is_owner_handle(handle: int) -> bool:
    return PERSISTENT_OWNER_FIRST <= handle <= PERSISTENT_OWNER_LAST


def is_platform_handle(handle: int) -> bool:
    return PERSISTENT_PLATFORM_FIRST <= handle <= PERSISTENT_PLATFORM_LAST


def persistent_handles(engine: Engine) -> list[int]:
    """Every persistent handle in use, ascending (GetCapability(TPM_CAP_HANDLES))."""
    return sorted(engine.permanent.persistent)


def persistent_used(engine: Engine) -> int:
    return len(engine.permanent.persistent)


def persistent_room(engine: Engine) -> int:
    """How many more objects EvictControl can make persistent (TPM_PT_HR_PERSISTENT_AVAIL)."""
    return max(0, engine.max_persistent - persistent_used(engine))


def _reachable(engine: Engine, handle: int, obj: LoadedObject) -> bool:
    """Whether the hierarchy guarding a persistent object is enabled.

    The handle range names the provisioning hierarchy (platform or owner) and an
    endorsement key is also hidden while the endorsement hierarchy is disabled.
    """
    guard = TPM_RH.PLATFORM if is_platform_handle(handle) else TPM_RH.OWNER
    if not hierarchy_enabled(engine, guard):
        return False
    return obj.hierarchy != TPM_RH.ENDORSEMENT or hierarchy_enabled(engine, TPM_RH.ENDORSEMENT)


def stored_object(engine: Engine, handle: int) -> LoadedObject | None:
    """The persistent object stored at ``handle`` whether or not its hierarchy is enabled."""
    return engine.permanent.persistent.get(handle)


def find_object(engine: Engine, handle: int) -> LoadedObject | None:
    """The object at a transient or persistent ``handle``; None when there is none
    (nothing there, a sequence, another handle type, or a persistent object whose
    hierarchy is disabled)."""
    kind = handle >> HR_SHIFT
    if kind == TPM_HT.TRANSIENT:
        return engine.volatile.objects.loaded.get(handle)
    if kind == TPM_HT.PERSISTENT:
        obj = stored_object(engine, handle)
        if obj is not None and _reachable(engine, handle, obj):
            return obj
    return None


def persistent_entity(engine: Engine, handle: int) -> Entity:
    """The handle-area resolver of TPM_HT_PERSISTENT: TPM_RC_HANDLE when nothing usable is there."""
    obj = find_object(engine, handle)
    if obj is None:
        raise TpmError(TPM_RC.HANDLE, f"no persistent object at 0x{handle:08x}")
    return object_entity(handle, obj)


def make_persistent(engine: Engine, handle: int, obj: LoadedObject) -> None:
    """Store a copy of ``obj`` at the free ``handle``; TPM_RC_NV_DEFINED / TPM_RC_NV_SPACE otherwise.

    A copy, so the transient original (which stays loaded) and the NV object are independent.
    """
    store = engine.permanent.persistent
    if handle in store:
        raise TpmError(TPM_RC.NV_DEFINED, f"a persistent object already exists at 0x{handle:08x}")
    if persistent_room(engine) == 0:
        raise TpmError(TPM_RC.NV_SPACE, f"all {engine.max_persistent} persistent object slots are in use")
    store[handle] = dataclasses.replace(obj)
    engine.mark_permanent_dirty()


def evict(engine: Engine, handle: int) -> None:
    """Remove the persistent object at ``handle`` (it must exist)."""
    del engine.permanent.persistent[handle]
    engine.mark_permanent_dirty()


def clear_owner_objects(engine: Engine) -> None:
    """What TPM2_Clear does to persistent objects: those of the storage and endorsement
    hierarchies go; platform-hierarchy ones stay, whatever their handle range."""
    store = engine.permanent.persistent
    doomed = [h for h, obj in store.items() if obj.hierarchy in CLEARED_HIERARCHIES]
    for handle in doomed:
        del store[handle]
    if doomed:
        engine.mark_permanent_dirty()
