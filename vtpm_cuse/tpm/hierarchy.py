"""The hierarchies' primary seeds (Part 1, "Primary Seeds" and "Null Hierarchy").

Owner, endorsement and platform seeds live in NV (PermanentState).  The
NULL hierarchy's seed must change at every TPM Reset and be the same across
TPM Restart/Resume, whatever TPM2_Clear does (libtpms keeps NULL primaries
across a Clear): it is a random value in NV too, replaced by every TPM Reset.
State written before it was stored derived it from the storage seed and the
reset counter; loading such state freezes that value (:func:`fill_missing_proofs`).

Each of them also has a proof value (Part 1, "Hierarchy Proofs"): the secret
that keys its tickets and the protection of its saved contexts.  The proofs
of the platform, owner and endorsement hierarchies (phProof, shProof,
ehProof) are random values of their own in NV, apart from the seeds, and are
replaced exactly where Part 3 says: TPM2_Clear replaces shProof and ehProof
(but not the EPS), TPM2_ChangePPS phProof, TPM2_ChangeEPS ehProof.  The NULL
hierarchy's proof (nullProof) is stored too and replaced at every TPM Reset
only, so TPM2_Clear and TPM2_ChangePPS leave saved NULL-hierarchy contexts
usable, as libtpms does.

State written before the proofs were stored has no proof fields.  Loading it
(:func:`fill_missing_proofs`) derives each missing proof from its seed the way
the proofs were derived then (nullProof from the NULL seed), so saved
contexts and tickets the host keeps
from before an upgrade still work; the value is stored with the next write of
the state and is independent of the seed from then on.  A random value would
be as good for security -- the seed is just as secret and in the same file --
but would silently invalidate every context file and ticket of the TPM.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from .constants import TPM_ALG, TPM_RH
from .crypto.kdf import kdfa

if TYPE_CHECKING:
    from .engine import Engine
    from .state import PermanentState

SEED_BITS = 512
#: Octets of phProof, shProof and ehProof: a digest of the context integrity hash (SHA-512).
PROOF_SIZE = 64


def null_seed(engine: Engine) -> bytes:
    perm = engine.permanent
    return perm.null_seed or _null_seed(perm)


def _null_seed(perm: PermanentState) -> bytes:
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


#: The TPMA_STARTUP_CLEAR flag (a VolatileState field) that TPM2_HierarchyControl sets for each
#: ``enable`` value: the three hierarchies and the platform's NV.
ENABLE_FLAGS: Mapping[int, str] = MappingProxyType(
    {
        TPM_RH.OWNER: "sh_enable",
        TPM_RH.ENDORSEMENT: "eh_enable",
        TPM_RH.PLATFORM: "ph_enable",
        TPM_RH.PLATFORM_NV: "ph_enable_nv",
    }
)


def hierarchy_enabled(engine: Engine, hierarchy: int) -> bool:
    """Whether ``hierarchy`` (owner, endorsement, platform, platform NV or null) is enabled now.

    TPM_RH_NULL cannot be disabled; the others follow TPM2_HierarchyControl.
    """
    flag = ENABLE_FLAGS.get(hierarchy)
    return getattr(engine.volatile, flag) if flag else hierarchy == TPM_RH.NULL


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


# --- proof values -------------------------------------------------------------------------------

#: The PermanentState field holding each stored proof, and the seed an old state's proof came from.
PROOF_FIELDS: Mapping[int, tuple[str, str]] = MappingProxyType(
    {
        TPM_RH.PLATFORM: ("ph_proof", "pps"),
        TPM_RH.OWNER: ("sh_proof", "sps"),
        TPM_RH.ENDORSEMENT: ("eh_proof", "eps"),
    }
)


def seed_derived_proof(seed: bytes) -> bytes:
    """A proof derived from ``seed``: the NULL hierarchy's, and every hierarchy's before the
    proofs were stored (kept for state written then)."""
    return hashlib.sha512(b"vtpm-cuse hierarchy proof\0" + seed).digest()


def hierarchy_proof(engine: Engine, hierarchy: int) -> bytes:
    """The secret proof value of ``hierarchy`` (platform, owner, endorsement or null)."""
    if hierarchy == TPM_RH.NULL:
        return engine.permanent.null_proof
    try:
        field, _ = PROOF_FIELDS[hierarchy]
    except KeyError:
        raise ValueError(f"0x{hierarchy:08x} is not a hierarchy") from None
    return getattr(engine.permanent, field)


def new_proofs(random: Callable[[int], bytes]) -> dict[str, bytes]:
    """Fresh phProof, shProof, ehProof and nullProof as PermanentState keyword arguments (manufacture)."""
    fields = [field for field, _ in PROOF_FIELDS.values()] + ["null_proof"]
    return {field: random(PROOF_SIZE) for field in fields}


def tpm_reset(engine: Engine) -> None:
    """What a TPM Reset does to the NULL hierarchy: a new seed and a new nullProof."""
    engine.permanent.null_seed = engine.random(SEED_BITS // 8)
    engine.permanent.null_proof = engine.random(PROOF_SIZE)


def replace_proof(engine: Engine, hierarchy: int) -> None:
    """A new random proof for ``hierarchy``: its saved contexts and tickets stop verifying."""
    field, _ = PROOF_FIELDS[hierarchy]
    setattr(engine.permanent, field, engine.random(PROOF_SIZE))


def fill_missing_proofs(perm: PermanentState) -> None:
    """Give state written before the proofs were stored the proofs it used then (see above)."""
    for field, seed in PROOF_FIELDS.values():
        if not getattr(perm, field) and getattr(perm, seed):
            setattr(perm, field, seed_derived_proof(getattr(perm, seed)))
    if not perm.null_proof and perm.sps:
        perm.null_proof = seed_derived_proof(_null_seed(perm))
    if not perm.null_seed and perm.sps:
        perm.null_seed = _null_seed(perm)  # stays the same until the next TPM Reset, Clear or not
