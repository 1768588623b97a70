"""Object commands (Part 3, clause 12): TPM2_Create, TPM2_Load, TPM2_ReadPublic,
TPM2_ObjectChangeAuth, TPM2_CreateLoaded.

An ordinary object is created with the TPM's RNG and leaves the TPM only as
its public area plus a TPM2B_PRIVATE protected under its parent
(:mod:`~vtpm_cuse.tpm.protection`); TPM2_Load checks that protection, the
attributes and the binding of public and private parts before the object
takes a slot.
"""

from __future__ import annotations

from ..algorithms import HASHES, hash_alg
from ..command import AuthRole, H, command
from ..constants import HR_SHIFT, TPM_CC, TPM_HT, TPMA_OBJECT
from ..creation import creation_outputs
from ..errors import TPM_RC, TpmError, errors_at
from ..keys import cancel_checkpoint, check_binding, create_object
from ..marshal import Reader
from ..object_rules import adjust_auth, create_checks, public_checks
from ..objects import LoadedObject, load, object_name, qualified_name, require_free_slot
from ..persistent import find_object
from ..protection import unwrap_sensitive, wrap_sensitive
from ..types import (
    TPM2B_AUTH,
    TPM2B_CREATION_DATA,
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_NAME,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_TEMPLATE,
    TPM_HANDLE,
    TPMI_DH_OBJECT,
    TPMI_DH_PARENT,
    TPML_PCR_SELECTION,
    TPMT_PUBLIC,
    TPMT_SENSITIVE,
    TPMT_TK_CREATION,
)
from .hierarchy import make_primary


def loaded_object(ctx, handle: int, at: str) -> LoadedObject:
    """The object at the transient or persistent ``handle`` (the handle named ``at``); a
    sequence there is TPM_RC_TYPE (it has no public area)."""
    obj = find_object(ctx.engine, handle)
    if obj is None:
        raise TpmError(TPM_RC.TYPE, f"0x{handle:08x} is a sequence, not an object", at=at)
    return obj


def storage_parent(ctx, handle: int, at: str) -> LoadedObject:
    parent = find_object(ctx.engine, handle)
    if parent is None or not parent.is_storage_parent:
        raise TpmError(TPM_RC.TYPE, f"0x{handle:08x} is not a storage parent", at=at)
    return parent


def _create_child(ctx, parent: LoadedObject, in_sensitive, in_public):
    """Create an ordinary object under ``parent``: (created parts, public octets, Name, private blob).

    Shared by Create and CreateLoaded, which both name their parameters inSensitive and inPublic.
    """
    require_free_slot(ctx.engine.volatile)  # the reference TPM builds the object in a free slot
    with errors_at("inPublic"):
        create_checks(in_public, parent, len(in_sensitive.data))
    with errors_at("inSensitive"):
        auth = adjust_auth(in_sensitive.userAuth, in_public.nameAlg)
    data = b"" if in_public.objectAttributes & TPMA_OBJECT.sensitiveDataOrigin else in_sensitive.data
    created = create_object(in_public, auth, data, ctx.engine.random, cancel_checkpoint(ctx))
    public = TPMT_PUBLIC.pack(created.area)
    name = object_name(in_public.nameAlg, public)
    sensitive = _sensitive_area(created)
    private = wrap_sensitive(parent, name, sensitive, ctx.engine.random)
    return created, public, name, private


def _sensitive_area(created):
    return TPMT_SENSITIVE(
        sensitiveType=created.area.type,
        authValue=created.auth_value,
        seedValue=created.seed_value,
        sensitive=created.sensitive,
    )


@command(
    TPM_CC.Create,
    handles=[H("parentHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[
        ("inSensitive", TPM2B_SENSITIVE_CREATE),
        ("inPublic", TPM2B_PUBLIC),
        ("outsideInfo", TPM2B_DATA),
        ("creationPCR", TPML_PCR_SELECTION),
    ],
    response=[
        ("outPrivate", TPM2B_PRIVATE),
        ("outPublic", TPM2B_PUBLIC),
        ("creationData", TPM2B_CREATION_DATA),
        ("creationHash", TPM2B_DIGEST),
        ("creationTicket", TPMT_TK_CREATION),
    ],
    cancelable=True,
)
def create(ctx, parentHandle: int, inSensitive, inPublic, outsideInfo: bytes, creationPCR: list):
    parent = storage_parent(ctx, parentHandle, at="parentHandle")
    created, public, name, private = _create_child(ctx, parent, inSensitive, inPublic)
    return ctx.response(
        outPrivate=private,
        outPublic=created.area,
        **creation_outputs(
            ctx.engine,
            ctx.locality,
            inPublic.nameAlg,
            name,
            parent.hierarchy,
            creationPCR,
            outsideInfo,
            parent.name_alg,
            parent.name,
            parent.qualified_name,
        ),
    )


def _child(parent: LoadedObject, public: bytes, name: bytes, sensitive) -> LoadedObject:
    attrs = TPMT_PUBLIC.unpack(public).objectAttributes
    return LoadedObject(
        public=public,
        hierarchy=parent.hierarchy,
        qualified_name=qualified_name(int.from_bytes(name[:2], "big"), parent.qualified_name, name),
        auth_value=sensitive.authValue,
        seed_value=sensitive.seedValue,
        sensitive=sensitive.sensitive,
        st_clear=bool(attrs & TPMA_OBJECT.stClear) or parent.st_clear,
    )


@command(
    TPM_CC.Load,
    handles=[H("parentHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[("inPrivate", TPM2B_PRIVATE), ("inPublic", TPM2B_PUBLIC)],
    response_handles=[H("objectHandle", TPM_HANDLE)],
    response=[("name", TPM2B_NAME)],
)
def load_(ctx, parentHandle: int, inPrivate: bytes, inPublic):
    vol = ctx.engine.volatile
    require_free_slot(vol)
    if not inPrivate:
        raise TpmError(TPM_RC.SIZE, "empty inPrivate", at="inPrivate")
    parent = storage_parent(ctx, parentHandle, at="parentHandle")
    if inPublic.nameAlg not in HASHES:
        raise TpmError(TPM_RC.HASH, "an object without nameAlg cannot be loaded", at="inPublic")
    public = TPMT_PUBLIC.pack(inPublic)
    name = object_name(inPublic.nameAlg, public)
    with errors_at("inPrivate"):
        sensitive = unwrap_sensitive(parent, name, inPrivate)
    digest_size = hash_alg(inPublic.nameAlg).digest_size
    if len(sensitive.seedValue) > digest_size:
        raise TpmError(TPM_RC.KEY_SIZE, "seedValue longer than a nameAlg digest", at="inPrivate")
    with errors_at("inPublic"):
        public_checks(inPublic, parent)
    if len(sensitive.authValue.rstrip(b"\0")) > digest_size:
        raise TpmError(TPM_RC.SIZE, "authValue longer than a nameAlg digest", at="inPrivate")
    with errors_at("inPublic"):
        check_binding(inPublic, sensitive.sensitiveType, sensitive.sensitive)
    handle = load(vol, _child(parent, public, name, sensitive))
    return ctx.response(objectHandle=handle, name=name)


@command(
    TPM_CC.ReadPublic,
    handles=[H("objectHandle", TPMI_DH_OBJECT)],
    response=[("outPublic", TPM2B_PUBLIC), ("name", TPM2B_NAME), ("qualifiedName", TPM2B_NAME)],
)
def read_public(ctx, objectHandle: int):
    obj = find_object(ctx.engine, objectHandle)
    if obj is None:  # the handle resolved, so it is a sequence
        raise TpmError(TPM_RC.SEQUENCE, "a sequence object has no public area")
    return ctx.response(outPublic=obj.area, name=obj.name, qualifiedName=obj.qualified_name)


@command(
    TPM_CC.ObjectChangeAuth,
    handles=[H("objectHandle", TPMI_DH_OBJECT, AuthRole.ADMIN), H("parentHandle", TPMI_DH_OBJECT)],
    params=[("newAuth", TPM2B_AUTH)],
    response=[("outPrivate", TPM2B_PRIVATE)],
)
def object_change_auth(ctx, objectHandle: int, parentHandle: int, newAuth: bytes):
    obj = loaded_object(ctx, objectHandle, at="objectHandle")
    with errors_at("newAuth"):
        auth = adjust_auth(newAuth, obj.name_alg)
    parent = find_object(ctx.engine, parentHandle)
    if parent is None or qualified_name(obj.name_alg, parent.qualified_name, obj.name) != obj.qualified_name:
        raise TpmError(TPM_RC.TYPE, "parentHandle is not the object's parent", at="parentHandle")
    # The loaded object keeps its old authValue; the caller loads the new blob to use the new one.
    return ctx.response(outPrivate=wrap_sensitive(parent, obj.name, obj.sensitive_area(auth), ctx.engine.random))


@command(
    TPM_CC.CreateLoaded,
    handles=[H("parentHandle", TPMI_DH_PARENT.plus(), AuthRole.USER)],
    params=[("inSensitive", TPM2B_SENSITIVE_CREATE), ("inPublic", TPM2B_TEMPLATE)],
    response_handles=[H("objectHandle", TPM_HANDLE)],
    response=[("outPrivate", TPM2B_PRIVATE), ("outPublic", TPM2B_PUBLIC), ("name", TPM2B_NAME)],
    cancelable=True,
)
def create_loaded(ctx, parentHandle: int, inSensitive, inPublic: bytes):
    """Create and load in one step; under a hierarchy this is CreatePrimary without creation data.

    Derivation parents (keyed-hash restricted decrypt keys) are not implemented: TPM_RC_TYPE.
    """
    with errors_at("inPublic"):
        area = _parse_template(inPublic)
    if parentHandle >> HR_SHIFT == TPM_HT.PERMANENT:
        handle, obj = make_primary(ctx, parentHandle, inSensitive, area)
        return ctx.response(objectHandle=handle, outPrivate=b"", outPublic=obj.area, name=obj.name)
    parent = storage_parent(ctx, parentHandle, at="parentHandle")
    created, public, name, private = _create_child(ctx, parent, inSensitive, area)
    handle = load(ctx.engine.volatile, _child(parent, public, name, _sensitive_area(created)))
    return ctx.response(objectHandle=handle, outPrivate=private, outPublic=created.area, name=name)


def _parse_template(data: bytes):
    r = Reader(data)
    area = TPMT_PUBLIC.unmarshal(r)
    if r.remaining:
        raise TpmError(TPM_RC.SIZE, "trailing octets after the template")
    return area
