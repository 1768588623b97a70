"""Context management (Part 3, clause 28): TPM2_ContextSave, TPM2_ContextLoad,
TPM2_FlushContext.

All three dispatch by handle type through :data:`~vtpm_cuse.tpm.handle_types.HANDLE_TYPES`
(objects and sequences, sessions); what goes into a context of each kind is in
:mod:`~vtpm_cuse.tpm.object_context` and :mod:`~vtpm_cuse.tpm.session_context`.
This module seals and opens the context blob
(:func:`~vtpm_cuse.tpm.protection.seal_context`), the same for every kind.
"""

from __future__ import annotations

from ..command import H, command
from ..constants import HR_SHIFT, TPM_CC, TPM_HT
from ..errors import TPM_RC, TpmError, errors_at
from ..handle_types import HANDLE_TYPES, handle_type
from ..object_context import SAVED_OBJECT, SAVED_SEQUENCE, SAVED_ST_CLEAR
from ..protection import open_context, seal_context
from ..types import TPMI_DH_CONTEXT, TPMS_CONTEXT


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
