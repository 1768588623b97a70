"""Context management (Part 3, clause 28): TPM2_ContextSave, TPM2_ContextLoad,
TPM2_FlushContext, TPM2_EvictControl.

All three dispatch by handle type through :data:`~vtpm_cuse.tpm.handle_types.HANDLE_TYPES`
(objects and sequences, sessions); what goes into a context of each kind is in
:mod:`~vtpm_cuse.tpm.object_context` and :mod:`~vtpm_cuse.tpm.session_context`.
This module seals and opens the context blob
(:func:`~vtpm_cuse.tpm.protection.seal_context`), the same for every kind.
TPM2_EvictControl moves objects between a transient slot and NV
(:mod:`~vtpm_cuse.tpm.persistent`).
"""

from __future__ import annotations

from ..command import AuthRole, H, command
from ..constants import HR_SHIFT, TPM_CC, TPM_HT, TPM_RH
from ..errors import TPM_RC, TpmError, errors_at
from ..handle_types import HANDLE_TYPES, handle_type
from ..object_context import SAVED_OBJECT, SAVED_SEQUENCE, SAVED_ST_CLEAR
from ..objects import LoadedObject
from ..persistent import evict, find_object, is_owner_handle, is_platform_handle, make_persistent
from ..protection import open_context, seal_context
from ..types import TPMI_DH_CONTEXT, TPMI_DH_OBJECT, TPMI_DH_PERSISTENT, TPMI_RH_PROVISION, TPMS_CONTEXT


def _saved_type(saved_handle: int) -> int:
    return (
        TPM_HT.TRANSIENT if saved_handle in (SAVED_OBJECT, SAVED_SEQUENCE, SAVED_ST_CLEAR) else saved_handle >> HR_SHIFT
    )


@command(TPM_CC.FlushContext, params=[("flushHandle", TPMI_DH_CONTEXT)])
def flush_context(ctx, flushHandle: int):
    kind = handle_type(flushHandle)
    if kind is None or kind.flush is None:
        raise TpmError(TPM_RC.HANDLE, f"nothing to flush at 0x{flushHandle:08x}", at="flushHandle")
    with errors_at("flushHandle"):
        kind.flush(ctx.engine, flushHandle)


@command(TPM_CC.ContextSave, handles=[H("saveHandle", TPMI_DH_CONTEXT)], response=[("context", TPMS_CONTEXT)])
def context_save(ctx, saveHandle: int):
    kind = handle_type(saveHandle)
    if kind is None or kind.context is None:
        raise TpmError(TPM_RC.HANDLE, f"contexts of 0x{saveHandle:08x} cannot be saved", at="saveHandle")
    sequence, saved_handle, hierarchy, payload = kind.context.save(ctx, saveHandle)
    blob = seal_context(ctx.engine, hierarchy, sequence, saved_handle, payload)
    return ctx.response(
        context=TPMS_CONTEXT(sequence=sequence, savedHandle=saved_handle, hierarchy=hierarchy, contextBlob=blob)
    )


@command(TPM_CC.ContextLoad, params=[("context", TPMS_CONTEXT)], response_handles=[H("loadedHandle", TPMI_DH_CONTEXT)])
def context_load(ctx, context):
    kind = HANDLE_TYPES.get(_saved_type(context.savedHandle))
    if kind is None or kind.context is None:
        raise TpmError(TPM_RC.HANDLE, f"no saved context at 0x{context.savedHandle:08x}", at="context")
    with errors_at("context"):
        payload = open_context(
            ctx.engine, context.hierarchy, context.sequence, context.savedHandle, context.contextBlob
        )
    return ctx.response(loadedHandle=kind.context.load(ctx, context, payload))


def _check_persistable(obj: LoadedObject) -> None:
    """Only an object that can be reloaded at any later time may go to NV: not a temporary
    (TPM_RH_NULL) object, nothing lost at TPM Restart (stClear, set or inherited), and not a
    public-only object."""
    if obj.hierarchy == TPM_RH.NULL:
        raise TpmError(TPM_RC.ATTRIBUTES, "a temporary object (NULL hierarchy) cannot be made persistent")
    if obj.st_clear:
        raise TpmError(TPM_RC.ATTRIBUTES, "an stClear object cannot be made persistent")
    if obj.public_only:
        raise TpmError(TPM_RC.ATTRIBUTES, "a public-only object cannot be made persistent")


def _check_hierarchy(auth: int, obj: LoadedObject, making: bool, persistent_handle: int) -> None:
    """Who may do what (Part 3, TPM2_EvictControl): the platform persists platform objects in its
    range and evicts anything; the owner persists and evicts owner and endorsement objects in
    its range."""
    platform_object = obj.hierarchy == TPM_RH.PLATFORM
    if auth == TPM_RH.PLATFORM:
        if making and not platform_object:
            raise TpmError(TPM_RC.HIERARCHY, "platformAuth persists only platform objects", at="objectHandle")
        if making and not is_platform_handle(persistent_handle):
            raise TpmError(
                TPM_RC.RANGE, f"0x{persistent_handle:08x} is not a platform persistent handle", at="persistentHandle"
            )
        return
    if platform_object:
        raise TpmError(TPM_RC.HIERARCHY, "ownerAuth cannot persist or evict platform objects", at="objectHandle")
    if making and not is_owner_handle(persistent_handle):
        raise TpmError(
            TPM_RC.RANGE, f"0x{persistent_handle:08x} is not an owner persistent handle", at="persistentHandle"
        )


@command(
    TPM_CC.EvictControl,
    handles=[H("auth", TPMI_RH_PROVISION, AuthRole.USER), H("objectHandle", TPMI_DH_OBJECT)],
    params=[("persistentHandle", TPMI_DH_PERSISTENT)],
    nv=True,
)
def evict_control(ctx, auth: int, objectHandle: int, persistentHandle: int):
    """Make a transient object persistent at persistentHandle, or evict the persistent object
    objectHandle (which must then equal persistentHandle)."""
    obj = find_object(ctx.engine, objectHandle)
    if obj is None:  # the handle resolved, so a sequence is there: temporary, like libtpms says
        raise TpmError(TPM_RC.ATTRIBUTES, f"sequence 0x{objectHandle:08x} cannot be made persistent", at="objectHandle")
    making = objectHandle >> HR_SHIFT == TPM_HT.TRANSIENT
    with errors_at("objectHandle"):
        _check_persistable(obj)
    if not making and objectHandle != persistentHandle:
        raise TpmError(
            TPM_RC.HANDLE,
            f"persistentHandle 0x{persistentHandle:08x} is not objectHandle 0x{objectHandle:08x}",
            at="objectHandle",
        )
    _check_hierarchy(auth, obj, making, persistentHandle)
    if making:
        make_persistent(ctx.engine, persistentHandle, obj)
    else:
        evict(ctx.engine, objectHandle)
