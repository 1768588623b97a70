"""What a handle refers to: the entity's name, authValue and authPolicy.

Each handle type has a resolver; areas of the engine that own entities
(sequences today, objects/NV indices/persistent objects later) register one
with :func:`resolver`.  The dispatcher calls :func:`resolve` for every handle
in the handle area, so "handle not loaded" and "hierarchy disabled" are
checked in one place.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

from .constants import HR_SHIFT, TPM_ALG, TPM_HT, TPM_RH
from .errors import TPM_RC, TpmError

if TYPE_CHECKING:
    from .engine import Engine


@dataclasses.dataclass
class Entity:
    handle: int
    name: bytes
    auth_value: bytes = b""
    policy_alg: int = TPM_ALG.NULL
    policy: bytes = b""
    #: Dictionary-attack exempt: a wrong password gives TPM_RC_BAD_AUTH, not TPM_RC_AUTH_FAIL.
    da_exempt: bool = True


Resolver = Callable[["Engine", int], Entity]
_RESOLVERS: dict[int, Resolver] = {}


def resolver(handle_type: int) -> Callable[[Resolver], Resolver]:
    def register(fn: Resolver) -> Resolver:
        _RESOLVERS[handle_type] = fn
        return fn
    return register


def handle_name(handle: int) -> bytes:
    """The Name of an entity whose Name is its handle (PCR, permanent, session)."""
    return handle.to_bytes(4, "big")


def resolve(engine: "Engine", handle: int) -> Entity:
    fn = _RESOLVERS.get(handle >> HR_SHIFT)
    if fn is None:
        raise TpmError(TPM_RC.HANDLE, f"no entity of handle type 0x{handle >> HR_SHIFT:02x}")
    return fn(engine, handle)


@resolver(TPM_HT.PCR)
def _pcr(engine: "Engine", handle: int) -> Entity:
    return Entity(handle, handle_name(handle))


@resolver(TPM_HT.PERMANENT)
def _permanent(engine: "Engine", handle: int) -> Entity:
    perm, vol = engine.permanent, engine.volatile
    name = handle_name(handle)
    if handle == TPM_RH.OWNER:
        if not vol.sh_enable:
            raise TpmError(TPM_RC.HIERARCHY, "owner hierarchy disabled")
        return Entity(handle, name, perm.owner_auth, *perm.owner_policy)
    if handle == TPM_RH.ENDORSEMENT:
        if not vol.eh_enable:
            raise TpmError(TPM_RC.HIERARCHY, "endorsement hierarchy disabled")
        return Entity(handle, name, perm.endorsement_auth, *perm.endorsement_policy)
    if handle == TPM_RH.PLATFORM:
        if not vol.ph_enable:
            raise TpmError(TPM_RC.HIERARCHY, "platform hierarchy disabled")
        return Entity(handle, name, vol.platform_auth, *vol.platform_policy)
    if handle == TPM_RH.LOCKOUT:
        return Entity(handle, name, perm.lockout_auth, *perm.lockout_policy, da_exempt=False)
    if handle in (TPM_RH.NULL, TPM_RH.PLATFORM_NV, TPM_RH.PW):
        return Entity(handle, name)
    raise TpmError(TPM_RC.HANDLE, f"permanent handle 0x{handle:08x} not implemented")


@resolver(TPM_HT.TRANSIENT)
def _transient(engine: "Engine", handle: int) -> Entity:
    seq = engine.volatile.sequences.get(handle)
    if seq is None:
        raise TpmError(TPM_RC.REFERENCE_H0, f"object 0x{handle:08x} is not loaded")
    # A sequence object's Name is its handle (Part 1, "Names").
    return Entity(handle, handle_name(handle), seq.auth, da_exempt=True)
