"""What a handle refers to: the entity's name, authValue and authPolicy.

:class:`Entity` is what the dispatcher and the sessions see of whatever a
handle names.  This module holds the resolvers (handle -> Entity) of the
handle types whose entities have no module of their own: PCRs, permanent
handles (hierarchies, TPM_RH_NULL, TPM_RS_PW) and transient objects and
sequences.  Which resolver serves which handle type is the table in
:mod:`.handle_types`; the dispatcher looks up every handle of the handle area
there, so "handle not loaded" and "hierarchy disabled" are checked in one
place.

An entity kind whose authorization depends on the command (an NV index: its
AUTHREAD/AUTHWRITE, POLICYREAD/POLICYWRITE and PIN rules) gives its Entity
:class:`AuthRules`; the password, HMAC and policy paths of every session
consult them for whatever command the entity authorizes, before the value or
policy is looked at.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .command import AuthRole, Command
from .constants import TPM_ALG, TPM_RH, TPMA_OBJECT
from .errors import TPM_RC, TpmError
from .hierarchy import AUTH_SLOTS, hierarchy_auth, hierarchy_enabled, hierarchy_policy
from .objects import require_slot_handle
from .pcrs import pcr_auth_policy, pcr_auth_value

if TYPE_CHECKING:
    from .engine import Engine
    from .objects import LoadedObject


class AuthRules:
    """What an entity kind adds to the role rules: whether this command may use the entity's
    authValue or authPolicy, and what a checked authValue does to the entity (PIN counts).

    The defaults allow everything and change nothing; the sessions call these for every
    authorization of an entity that has rules, whatever the command.
    """

    def value_usable(self, command: Command, role: AuthRole) -> bool:
        """May a password or HMAC session (the authValue) authorize ``command`` in ``role``?"""
        return True

    def policy_usable(self, command: Command, role: AuthRole) -> bool:
        """May a policy session (the authPolicy) authorize ``command`` in ``role``?"""
        return True

    def on_value_checked(self, engine: Engine, ok: bool) -> None:
        """The authValue was checked, right (``ok``) or wrong, before the error (if any) is
        answered.  A change must be NV state marked dirty, so it is saved before the response."""


@dataclasses.dataclass
class Entity:
    handle: int
    name: bytes
    auth_value: bytes = b""
    policy_alg: int = TPM_ALG.NULL
    policy: bytes = b""
    #: Dictionary-attack exempt: a wrong password gives TPM_RC_BAD_AUTH, not TPM_RC_AUTH_FAIL.
    da_exempt: bool = True
    #: The role the command needs for this handle; the dispatcher sets it.
    role: AuthRole = AuthRole.NONE
    #: Objects: TPMA_OBJECT userWithAuth / adminWithPolicy.  Other entities accept the
    #: authValue for USER and need a policy for ADMIN (Part 1, "Authorization Roles").
    user_with_auth: bool = True
    admin_with_policy: bool = True
    #: The entity kind's own rules for using its authValue and authPolicy (NV indices).
    auth_rules: AuthRules | None = None
    #: Only a policy session authorizes it, whatever the role (a PCR whose group has a policy).
    policy_required: bool = False


def require_auth_value_usable(entity: Entity, command: Command) -> None:
    """Raise unless a password or HMAC session may authorize ``entity`` in its role for ``command``.

    DUP, and ADMIN of an entity with adminWithPolicy, need a policy session
    (TPM_RC_AUTH_TYPE); USER of an object without userWithAuth accepts only a
    policy, and the entity's own rules may refuse the authValue for this command
    (TPM_RC_AUTH_UNAVAILABLE).
    """
    if (
        entity.policy_required
        or entity.role is AuthRole.DUP
        or (entity.role is AuthRole.ADMIN and entity.admin_with_policy)
    ):
        raise TpmError(TPM_RC.AUTH_TYPE, f"0x{entity.handle:08x} needs a policy session for {entity.role.value}")
    if entity.role is AuthRole.USER and not entity.user_with_auth:
        raise TpmError(TPM_RC.AUTH_UNAVAILABLE, f"0x{entity.handle:08x} has userWithAuth CLEAR")
    rules = entity.auth_rules
    if rules is not None and not rules.value_usable(command, entity.role):
        raise TpmError(
            TPM_RC.AUTH_UNAVAILABLE, f"the authValue of 0x{entity.handle:08x} is unusable for {command.name}"
        )


def policy_usable(entity: Entity, command: Command) -> bool:
    """The entity's own rules allow a policy session for ``command`` (no rules: allowed)."""
    return entity.auth_rules is None or entity.auth_rules.policy_usable(command, entity.role)


def value_checked(engine: Engine, entity: Entity, ok: bool) -> None:
    """Tell the entity's rules its authValue was checked (right or wrong)."""
    if entity.auth_rules is not None:
        entity.auth_rules.on_value_checked(engine, ok)


def handle_name(handle: int) -> bytes:
    """The Name of an entity whose Name is its handle (PCR, permanent, session)."""
    return handle.to_bytes(4, "big")


def pcr_entity(engine: Engine, handle: int) -> Entity:
    """A PCR: its auth group's authValue and its policy group's authPolicy (pcrs.py)."""
    policy_alg, policy = pcr_auth_policy(engine, handle)
    return Entity(
        handle,
        handle_name(handle),
        pcr_auth_value(engine, handle),
        policy_alg,
        policy,
        policy_required=policy_alg != TPM_ALG.NULL,
    )


def permanent_entity(engine: Engine, handle: int) -> Entity:
    name = handle_name(handle)
    if handle in AUTH_SLOTS:
        if not hierarchy_enabled(engine, handle) and handle != TPM_RH.LOCKOUT:
            raise TpmError(TPM_RC.HIERARCHY, f"hierarchy 0x{handle:08x} disabled")
        # Only lockoutAuth is protected by the dictionary-attack logic (its own lock).
        return Entity(
            handle,
            name,
            hierarchy_auth(engine, handle),
            *hierarchy_policy(engine, handle),
            da_exempt=handle != TPM_RH.LOCKOUT,
        )
    if handle in (TPM_RH.NULL, TPM_RH.PLATFORM_NV, TPM_RH.PW):
        return Entity(handle, name)
    raise TpmError(TPM_RC.HANDLE, f"permanent handle 0x{handle:08x} not implemented")


class _PublicOnlyRules(AuthRules):
    """A public-only object has no authValue to prove (TPM_RC_AUTH_UNAVAILABLE)."""

    def value_usable(self, command: Command, role: AuthRole) -> bool:
        return False


PUBLIC_ONLY_RULES = _PublicOnlyRules()


def object_entity(handle: int, obj: LoadedObject) -> Entity:
    """The Entity of an object, transient or persistent: its authorization follows its attributes."""
    attrs = obj.attributes
    return Entity(
        handle,
        obj.name,
        obj.auth_value,
        obj.name_alg,
        obj.auth_policy,
        da_exempt=bool(attrs & TPMA_OBJECT.noDA),
        user_with_auth=bool(attrs & TPMA_OBJECT.userWithAuth),
        admin_with_policy=bool(attrs & TPMA_OBJECT.adminWithPolicy),
        auth_rules=PUBLIC_ONLY_RULES if obj.public_only else None,
    )


def transient_entity(engine: Engine, handle: int) -> Entity:
    require_slot_handle(engine.volatile, handle)
    obj = engine.volatile.objects.loaded.get(handle)
    if obj is not None:
        return object_entity(handle, obj)
    seq = engine.volatile.sequences.get(handle)
    if seq is None:
        raise TpmError(TPM_RC.REFERENCE_H0, f"object 0x{handle:08x} is not loaded")
    # A sequence object has no public area (nameAlg TPM_ALG_NULL): its Name is the Empty
    # Buffer, which is what the reference TPM puts in cpHash for it.
    # Its authValue serves every role but DUP: it has no adminWithPolicy to ask for a policy
    # (the reference TPM and libtpms treat a sequence's authValue as always available).
    return Entity(handle, b"", seq.auth, da_exempt=True, admin_with_policy=False)


def flush_transient(engine: Engine, handle: int) -> None:
    """Objects and sequences share the transient slots; either kind is flushed here."""
    vol = engine.volatile
    require_slot_handle(vol, handle)
    if vol.objects.loaded.pop(handle, None) is None and vol.sequences.pop(handle, None) is None:
        raise TpmError(TPM_RC.HANDLE, f"nothing loaded at 0x{handle:08x}")
