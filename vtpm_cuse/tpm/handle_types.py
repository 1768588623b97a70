"""What the engine does with the handles of each handle type: one explicit table.

For every TPM_HT this TPM implements, :data:`HANDLE_TYPES` says how a handle
of that type

- resolves to the :class:`~.entities.Entity` the dispatcher authorizes,
- is flushed by TPM2_FlushContext,
- is saved and loaded by TPM2_ContextSave / TPM2_ContextLoad,
- works as a session in the authorization area.

A new kind of entity (NV indices, persistent objects) is one new row here;
nothing registers itself by being imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from . import object_context, session_context
from .auth import PASSWORD_SESSION, AuthSession
from .constants import HR_SHIFT, TPM_HT, TPM_RS_PW
from .entities import Entity, flush_transient, pcr_entity, permanent_entity, transient_entity
from .errors import TPM_RC, TpmError
from .nv_index import nv_entity
from .persistent import persistent_entity
from .session_auth import load_session_authorization
from .sessions import flush_session, session_entity

if TYPE_CHECKING:
    from .dispatcher import CommandContext
    from .engine import Engine

__all__ = ["HANDLE_TYPES", "ContextKind", "HandleType", "handle_type", "load_session", "resolve"]


@dataclasses.dataclass(frozen=True)
class ContextKind:
    """How contexts of one handle type are saved and loaded.

    ``save(ctx, handle)`` returns (sequence, savedHandle, hierarchy, payload);
    ``load(ctx, context, payload)`` returns the handle the context now has.
    """

    save: Callable[[Any, int], tuple[int, int, int, bytes]]
    load: Callable[[Any, Any, bytes], int]


@dataclasses.dataclass(frozen=True)
class HandleType:
    #: handle -> Entity; raises TpmError (REFERENCE_H0 when nothing is loaded there).
    resolve: Callable[[Engine, int], Entity]
    #: TPM2_FlushContext; raises TpmError(TPM_RC_HANDLE) when nothing is loaded there.
    flush: Callable[[Engine, int], None] | None = None
    context: ContextKind | None = None
    #: The session in the authorization area (HMAC and policy sessions).
    session: Callable[[CommandContext, int], AuthSession] | None = None


_SESSION = HandleType(
    resolve=session_entity,
    flush=flush_session,
    context=ContextKind(session_context.save_session, session_context.load_session),
    session=load_session_authorization,
)

HANDLE_TYPES: Mapping[int, HandleType] = MappingProxyType(
    {
        TPM_HT.PCR: HandleType(resolve=pcr_entity),
        TPM_HT.PERMANENT: HandleType(resolve=permanent_entity),
        TPM_HT.TRANSIENT: HandleType(
            resolve=transient_entity,
            flush=flush_transient,
            context=ContextKind(object_context.save_object, object_context.load_object),
        ),
        # Persistent objects are used in place.  Neither flushed nor context-saved: TPMI_DH_CONTEXT
        # excludes their range, so FlushContext and ContextSave answer TPM_RC_VALUE (Part 2).
        TPM_HT.PERSISTENT: HandleType(resolve=persistent_entity),
        TPM_HT.NV_INDEX: HandleType(resolve=nv_entity),
        TPM_HT.HMAC_SESSION: _SESSION,
        TPM_HT.POLICY_SESSION: _SESSION,
    }
)


def handle_type(handle: int) -> HandleType | None:
    return HANDLE_TYPES.get(handle >> HR_SHIFT)


def resolve(engine: Engine, handle: int) -> Entity:
    kind = handle_type(handle)
    if kind is None:
        raise TpmError(TPM_RC.HANDLE, f"no entity of handle type 0x{handle >> HR_SHIFT:02x}")
    return kind.resolve(engine, handle)


def load_session(ctx: CommandContext, handle: int, index: int) -> AuthSession:
    """The session at ``handle``, the ``index``-th of the authorization area."""
    if handle == TPM_RS_PW:
        return PASSWORD_SESSION
    kind = handle_type(handle)
    if kind is None or kind.session is None:
        raise TpmError(TPM_RC.REFERENCE_S0 + index - 1, f"session 0x{handle:08x} is not loaded")
    try:
        return kind.session(ctx, handle)
    except TpmError as err:
        # Loaders raise bare codes; the session's position is known only here.
        if err.rc == TPM_RC.REFERENCE_S0:
            raise TpmError(TPM_RC.REFERENCE_S0 + index - 1, err.detail) from None
        raise err.at_session(index) from None
