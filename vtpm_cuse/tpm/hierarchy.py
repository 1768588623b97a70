"""The hierarchies' primary seeds (Part 1, "Primary Seeds" and "Null Hierarchy").

Owner, endorsement and platform seeds live in NV (PermanentState).  The
NULL hierarchy's seed must change at every TPM Reset and be the same across
TPM Restart/Resume; instead of storing another secret it is derived from the
storage seed and the reset counter, which together never repeat: TPM Reset
increments resetCount, and TPM2_Clear, the only thing that sets it back to
zero, also replaces the storage seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .constants import TPM_ALG, TPM_RH
from .crypto.kdf import kdfa

if TYPE_CHECKING:
    from .engine import Engine

SEED_BITS = 512


def null_seed(engine: Engine) -> bytes:
    perm = engine.permanent
    return kdfa(TPM_ALG.SHA512, perm.sps, "NULL SEED", perm.reset_count.to_bytes(8, "big"), b"", SEED_BITS)


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
