"""Hierarchy commands (Part 3, clause 24): TPM2_CreatePrimary.

A primary object is a function of its hierarchy's seed, the template and
inSensitive.data: every octet its generation draws comes from

    KdfStream(nameAlg, seed, "Primary Object Creation", Name(template), inSensitive.data)

(:class:`~vtpm_cuse.tpm.crypto.kdf.KdfStream`), so the same command gives the
same key for as long as the seed lives, and any change to the template --
including its ``unique`` field, which is how callers ask for distinct keys
from one template -- gives an unrelated one.
"""

from __future__ import annotations

from ..command import AuthRole, H, command
from ..constants import TPM_ALG, TPM_CC, TPM_RH, TPMA_OBJECT
from ..creation import creation_outputs
from ..crypto.kdf import KdfStream
from ..errors import errors_at
from ..hierarchy import primary_seed
from ..keys import cancel_checkpoint, create_object
from ..object_rules import adjust_auth, create_checks
from ..objects import LoadedObject, hierarchy_name, load, object_name, qualified_name, require_free_slot
from ..types import (
    TPM2B_CREATION_DATA,
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_NAME,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM_HANDLE,
    TPMI_RH_HIERARCHY,
    TPML_PCR_SELECTION,
    TPMT_PUBLIC,
    TPMT_TK_CREATION,
)

PRIMARY_OBJECT_CREATION = b"Primary Object Creation"


def make_primary(ctx, hierarchy: int, in_sensitive, in_public):
    """Check, derive and load a primary (or, under TPM_RH_NULL, temporary) object.

    Returns (handle, loaded object).  Shared with TPM2_CreateLoaded, which names
    its parameters inSensitive and inPublic too.
    """
    vol = ctx.engine.volatile
    require_free_slot(vol)
    with errors_at("inPublic"):
        create_checks(in_public, None, len(in_sensitive.data))
    with errors_at("inSensitive"):
        auth = adjust_auth(in_sensitive.userAuth, in_public.nameAlg)
    template = TPMT_PUBLIC.pack(in_public)
    stream = KdfStream(
        in_public.nameAlg,
        primary_seed(ctx.engine, hierarchy),
        PRIMARY_OBJECT_CREATION,
        object_name(in_public.nameAlg, template),
        in_sensitive.data,
    )
    data = b"" if in_public.objectAttributes & TPMA_OBJECT.sensitiveDataOrigin else in_sensitive.data
    created = create_object(in_public, auth, data, stream, cancel_checkpoint(ctx))
    public = TPMT_PUBLIC.pack(created.area)
    name = object_name(in_public.nameAlg, public)
    obj = LoadedObject(
        public=public,
        hierarchy=hierarchy,
        qualified_name=qualified_name(in_public.nameAlg, hierarchy_name(hierarchy), name),
        auth_value=created.auth_value,
        seed_value=created.seed_value,
        sensitive=created.sensitive,
        st_clear=bool(in_public.objectAttributes & TPMA_OBJECT.stClear),
        primary=hierarchy != TPM_RH.NULL,
    )
    return load(vol, obj), obj


@command(
    TPM_CC.CreatePrimary,
    handles=[H("primaryHandle", TPMI_RH_HIERARCHY.plus(), AuthRole.USER)],
    params=[
        ("inSensitive", TPM2B_SENSITIVE_CREATE),
        ("inPublic", TPM2B_PUBLIC),
        ("outsideInfo", TPM2B_DATA),
        ("creationPCR", TPML_PCR_SELECTION),
    ],
    response_handles=[H("objectHandle", TPM_HANDLE)],
    response=[
        ("outPublic", TPM2B_PUBLIC),
        ("creationData", TPM2B_CREATION_DATA),
        ("creationHash", TPM2B_DIGEST),
        ("creationTicket", TPMT_TK_CREATION),
        ("name", TPM2B_NAME),
    ],
    cancelable=True,
)
def create_primary(ctx, primaryHandle: int, inSensitive, inPublic, outsideInfo: bytes, creationPCR: list):
    handle, obj = make_primary(ctx, primaryHandle, inSensitive, inPublic)
    return ctx.response(
        objectHandle=handle,
        outPublic=obj.area,
        name=obj.name,
        **creation_outputs(
            ctx.engine, ctx.locality, obj.name_alg, obj.name, primaryHandle, creationPCR, outsideInfo, TPM_ALG.NULL
        ),
    )
