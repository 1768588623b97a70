"""Transient objects in saved contexts (TPM2_ContextSave / TPM2_ContextLoad).

The payload of an object context is the object's public area, sensitive
area and bookkeeping, in this TPM's own layout; commands/context.py seals it
with :func:`~vtpm_cuse.tpm.protection.seal_context`.  An object stays loaded
when it is saved (unlike a session), so the same context can be loaded many
times until a TPM Reset (or, for stClear objects, a TPM Restart) ends it.
"""

from __future__ import annotations

from .errors import TPM_RC, TpmError
from .hierarchy import hierarchy_enabled
from .marshal import UINT8, UINT32, Sized, Struct
from .objects import LoadedObject, load, require_free_slot
from .protection import SAVED_ST_CLEAR
from .types import MAX_PUBLIC_SIZE, TPM2B_NAME, TPM2B_SENSITIVE, TPMT_PUBLIC

__all__ = ["OBJECT_CONTEXT", "SAVED_OBJECT", "SAVED_SEQUENCE", "SAVED_ST_CLEAR", "load_object", "save_object"]

#: savedHandle values of object contexts (Part 2, TPMS_CONTEXT).
SAVED_OBJECT, SAVED_SEQUENCE = 0x80000000, 0x80000001

#: What an object context carries inside its encryption (this TPM's own layout).
OBJECT_CONTEXT = Struct(
    "ObjectContext",
    [
        ("hierarchy", UINT32),
        ("flags", UINT8),
        ("public", Sized("public", MAX_PUBLIC_SIZE)),
        ("qualifiedName", TPM2B_NAME),
        ("sensitive", TPM2B_SENSITIVE),
    ],
)
#: ObjectContext.flags bits: what the object record holds besides its public and sensitive areas.
_PRIMARY, _ST_CLEAR, _PUBLIC_ONLY = 1, 2, 4


def save_object(ctx, handle: int) -> tuple[int, int, int, bytes]:
    store = ctx.engine.volatile.objects
    obj = store.loaded.get(handle)
    if obj is None:
        # Sequences hold live hash state that this TPM does not export (yet).
        raise TpmError(TPM_RC.TYPE, "saving a sequence context is not implemented", at="saveHandle")
    store.context_sequence += 1
    flags = (_PRIMARY if obj.primary else 0) | (_ST_CLEAR if obj.st_clear else 0)
    flags |= _PUBLIC_ONLY if obj.public_only else 0
    payload = OBJECT_CONTEXT.pack(
        OBJECT_CONTEXT(
            hierarchy=obj.hierarchy,
            flags=flags,
            public=obj.public,
            qualifiedName=obj.qualified_name,
            sensitive=obj.sensitive_area(),
        )
    )
    return store.context_sequence, SAVED_ST_CLEAR if obj.st_clear else SAVED_OBJECT, obj.hierarchy, payload


def load_object(ctx, context, payload: bytes) -> int:
    vol = ctx.engine.volatile
    if not hierarchy_enabled(ctx.engine, context.hierarchy):
        raise TpmError(TPM_RC.HIERARCHY, "the context's hierarchy is disabled", at="context")
    require_free_slot(vol)
    saved = OBJECT_CONTEXT.unpack(payload)
    TPMT_PUBLIC.unpack(saved.public)
    sensitive = saved.sensitive
    return load(
        vol,
        LoadedObject(
            public=saved.public,
            hierarchy=saved.hierarchy,
            qualified_name=saved.qualifiedName,
            auth_value=sensitive.authValue,
            seed_value=sensitive.seedValue,
            sensitive=sensitive.sensitive,
            st_clear=bool(saved.flags & _ST_CLEAR),
            primary=bool(saved.flags & _PRIMARY),
            public_only=bool(saved.flags & _PUBLIC_ONLY),
        ),
    )
