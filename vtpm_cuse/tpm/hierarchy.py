"""The hierarchies' primary seeds (Part 1, "Primary Seeds" and "Null Hierarchy").

Owner, endorsement and platform seeds live in NV (PermanentState).  The
NULL hierarchy's seed must change at every TPM Reset and be the same across
TPM Restart/Resume; instead of storing another secret it is derived from the
storage seed and the reset counter, which together never repeat: TPM Reset
increments resetCount, and TPM2_Clear, the only thing that sets it back to
zero, also replaces the storage seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from .constants import TPM_ALG, TPM_RH
from .crypto.kdf import kdfa

if TYPE_CHECKING:
    from .engine import Engine

SEED_BITS = 512


def null_seed(engine: Engine) -> bytes:
    perm = engine.permanent
    return kdfa(TPM_ALG.SHA512, perm.sps, "NULL SEED", perm.reset_count.to_bytes(8, "big"), b"", SEED_BITS)


@dataclasses.dataclass(frozen=True)
class AuthSlot:
    """Where a hierarchy keeps its authValue and authPolicy.

    Owner, endorsement and lockout keep them in NV; the platform's live in RAM
    and every Startup(CLEAR) empties them (Part 1, "Platform Authorization").
    """

    volatile: bool
    auth: str
    policy: str


#: The hierarchies with an authValue and authPolicy, in GetCapability(TPM_CAP_AUTH_POLICIES) order.
AUTH_SLOTS: Mapping[int, AuthSlot] = MappingProxyType(
    {
        TPM_RH.OWNER: AuthSlot(False, "owner_auth", "owner_policy"),
        TPM_RH.LOCKOUT: AuthSlot(False, "lockout_auth", "lockout_policy"),
        TPM_RH.ENDORSEMENT: AuthSlot(False, "endorsement_auth", "endorsement_policy"),
        TPM_RH.PLATFORM: AuthSlot(True, "platform_auth", "platform_policy"),
    }
)
#: authPolicy of a hierarchy that has none.
NO_POLICY = (TPM_ALG.NULL, b"")


def _holder(engine: Engine, hierarchy: int) -> tuple[object, AuthSlot]:
    slot = AUTH_SLOTS[hierarchy]
    return (engine.volatile if slot.volatile else engine.permanent), slot


def hierarchy_auth(engine: Engine, hierarchy: int) -> bytes:
    holder, slot = _holder(engine, hierarchy)
    return getattr(holder, slot.auth)


def hierarchy_policy(engine: Engine, hierarchy: int) -> tuple[int, bytes]:
    """(hash algorithm, digest) of the hierarchy's authPolicy; NO_POLICY when unset."""
    holder, slot = _holder(engine, hierarchy)
    return getattr(holder, slot.policy)


def set_hierarchy_auth(engine: Engine, hierarchy: int, auth: bytes) -> None:
    holder, slot = _holder(engine, hierarchy)
    setattr(holder, slot.auth, auth)


def set_hierarchy_policy(engine: Engine, hierarchy: int, policy: tuple[int, bytes]) -> None:
    holder, slot = _holder(engine, hierarchy)
    setattr(holder, slot.policy, policy)


def hierarchy_enabled(engine: Engine, hierarchy: int) -> bool:
    """Whether ``hierarchy`` (owner, endorsement, platform or null) is enabled now.

    TPM_RH_NULL cannot be disabled; the others follow TPM2_HierarchyControl.
    """
    vol = engine.volatile
    enabled = {TPM_RH.OWNER: vol.sh_enable, TPM_RH.ENDORSEMENT: vol.eh_enable, TPM_RH.PLATFORM: vol.ph_enable}
    return enabled.get(hierarchy, hierarchy == TPM_RH.NULL)


def primary_seed(engine: Engine, hierarchy: int) -> bytes:
    """The seed primary objects of ``hierarchy`` are derived from."""
    perm = engine.permanent
    if hierarchy == TPM_RH.OWNER:
        return perm.sps
    if hierarchy == TPM_RH.ENDORSEMENT:
        return perm.eps
    if hierarchy == TPM_RH.PLATFORM:
        return perm.pps
    if hierarchy == TPM_RH.NULL:
        return null_seed(engine)
    raise ValueError(f"0x{hierarchy:08x} is not a hierarchy")
