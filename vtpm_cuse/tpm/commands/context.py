"""Context management (Part 3, clause 28): TPM2_ContextSave, TPM2_ContextLoad,
TPM2_FlushContext.

FlushContext dispatches by handle type to the flushers areas register in
:mod:`~vtpm_cuse.tpm.entities` (objects and sequences, sessions).  Saving and
loading dispatch the same way through :func:`context_kind`; this module
implements the transient-object kind, whose payload is the object's public
area, sensitive area and bookkeeping, protected by
:func:`~vtpm_cuse.tpm.protection.seal_context`.  An object stays loaded when
it is saved (unlike a session), so the same context can be loaded many times
until a TPM Reset (or, for stClear objects, a TPM Restart) ends it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ..command import H, command
from ..constants import HR_SHIFT, TPM_CC, TPM_HT, TPM_RH
from ..entities import flushers
from ..errors import TPM_RC, TpmError
from ..marshal import UINT8, UINT32, Sized, Struct
from ..objects import LoadedObject, load, require_free_slot
from ..protection import SAVED_ST_CLEAR, open_context, seal_context
from ..types import (
    MAX_PUBLIC_SIZE, TPM2B_NAME, TPM2B_SENSITIVE, TPMI_DH_CONTEXT, TPMS_CONTEXT, TPMT_PUBLIC,
)

#: savedHandle values of object contexts (Part 2, TPMS_CONTEXT).
SAVED_OBJECT, SAVED_SEQUENCE = 0x80000000, 0x80000001

#: What an object context carries inside its encryption (this TPM's own layout).
OBJECT_CONTEXT = Struct("ObjectContext", [
    ("hierarchy", UINT32), ("flags", UINT8), ("public", Sized("public", MAX_PUBLIC_SIZE)),
    ("qualifiedName", TPM2B_NAME), ("sensitive", TPM2B_SENSITIVE)])
_PRIMARY, _ST_CLEAR = 1, 2


@dataclasses.dataclass(frozen=True)
class ContextKind:
    """How contexts of one handle type are saved and loaded.

    ``save(ctx, handle)`` returns (sequence, savedHandle, hierarchy, payload);
    ``load(ctx, context, payload)`` returns the handle the context now has.
    """

    save: Callable[[Any, int], tuple[int, int, int, bytes]]
    load: Callable[[Any, Any, bytes], int]


_KINDS: dict[int, ContextKind] = {}


def context_kind(handle_type: int, kind: ContextKind) -> None:
    """Register how contexts of ``handle_type`` are saved and loaded (sessions register here)."""
    _KINDS[handle_type] = kind


def _saved_type(saved_handle: int) -> int:
    return TPM_HT.TRANSIENT if saved_handle in (SAVED_OBJECT, SAVED_SEQUENCE, SAVED_ST_CLEAR) \
        else saved_handle >> HR_SHIFT


@command(TPM_CC.FlushContext, params=[("flushHandle", TPMI_DH_CONTEXT)])
def flush_context(ctx, flushHandle: int):
    flusher = flushers.get(flushHandle >> HR_SHIFT)
    if flusher is None:
        raise TpmError(TPM_RC.HANDLE, f"nothing to flush at 0x{flushHandle:08x}").at_parameter(1)
    try:
        flusher(ctx.engine, flushHandle)
    except TpmError as err:
        raise err.at_parameter(1) from None


@command(TPM_CC.ContextSave, handles=[H("saveHandle", TPMI_DH_CONTEXT)], response=[("context", TPMS_CONTEXT)])
def context_save(ctx, saveHandle: int):
    kind = _KINDS.get(saveHandle >> HR_SHIFT)
    if kind is None:
        raise TpmError(TPM_RC.HANDLE, f"contexts of 0x{saveHandle:08x} cannot be saved").at_handle(1)
    sequence, saved_handle, hierarchy, payload = kind.save(ctx, saveHandle)
    blob = seal_context(ctx.engine, hierarchy, sequence, saved_handle, payload)
    return {"context": TPMS_CONTEXT(sequence=sequence, savedHandle=saved_handle, hierarchy=hierarchy,
                                    contextBlob=blob)}


@command(TPM_CC.ContextLoad, params=[("context", TPMS_CONTEXT)],
         response_handles=[H("loadedHandle", TPMI_DH_CONTEXT)])
def context_load(ctx, context):
    kind = _KINDS.get(_saved_type(context.savedHandle))
    if kind is None:
        raise TpmError(TPM_RC.HANDLE, f"no saved context at 0x{context.savedHandle:08x}").at_parameter(1)
    try:
        payload = open_context(ctx.engine, context.hierarchy, context.sequence, context.savedHandle,
                               context.contextBlob)
    except TpmError as err:
        raise err.at_parameter(1) from None
    return {"loadedHandle": kind.load(ctx, context, payload)}


# --- transient objects --------------------------------------------------------------------------

def _save_object(ctx, handle: int) -> tuple[int, int, int, bytes]:
    store = ctx.engine.volatile.objects
    obj = store.loaded.get(handle)
    if obj is None:
        # Sequences hold live hash state that this TPM does not export (yet).
        raise TpmError(TPM_RC.TYPE, "saving a sequence context is not implemented").at_handle(1)
    store.context_sequence += 1
    flags = (_PRIMARY if obj.primary else 0) | (_ST_CLEAR if obj.st_clear else 0)
    payload = OBJECT_CONTEXT.pack(OBJECT_CONTEXT(
        hierarchy=obj.hierarchy, flags=flags, public=obj.public, qualifiedName=obj.qualified_name,
        sensitive=obj.sensitive_area()))
    return store.context_sequence, SAVED_ST_CLEAR if obj.st_clear else SAVED_OBJECT, obj.hierarchy, payload


def _load_object(ctx, context, payload: bytes) -> int:
    vol = ctx.engine.volatile
    enabled = {TPM_RH.OWNER: vol.sh_enable, TPM_RH.ENDORSEMENT: vol.eh_enable,
               TPM_RH.PLATFORM: vol.ph_enable, TPM_RH.NULL: True}
    if not enabled[context.hierarchy]:
        raise TpmError(TPM_RC.HIERARCHY, "the context's hierarchy is disabled").at_parameter(1)
    require_free_slot(vol)
    saved = OBJECT_CONTEXT.unpack(payload)
    TPMT_PUBLIC.unpack(saved.public)
    sensitive = saved.sensitive
    return load(vol, LoadedObject(
        public=saved.public, hierarchy=saved.hierarchy, qualified_name=saved.qualifiedName,
        auth_value=sensitive.authValue, seed_value=sensitive.seedValue, sensitive=sensitive.sensitive,
        st_clear=bool(saved.flags & _ST_CLEAR), primary=bool(saved.flags & _PRIMARY)))


context_kind(TPM_HT.TRANSIENT, ContextKind(_save_object, _load_object))
