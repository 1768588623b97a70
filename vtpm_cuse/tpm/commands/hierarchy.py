"""Hierarchy commands (Part 3, clause 24): TPM2_CreatePrimary, TPM2_HierarchyControl,
TPM2_SetPrimaryPolicy, TPM2_ChangePPS, TPM2_ChangeEPS, TPM2_Clear, TPM2_ClearControl and
TPM2_HierarchyChangeAuth.

A primary object is a function of its hierarchy's seed, the template and
inSensitive.data: every octet its generation draws comes from

    KdfStream(nameAlg, seed, "Primary Object Creation", Name(template), inSensitive.data)

(:class:`~vtpm_cuse.tpm.crypto.kdf.KdfStream`), so the same command gives the
same key for as long as the seed lives, and any change to the template --
including its ``unique`` field, which is how callers ask for distinct keys
from one template -- gives an unrelated one.
"""

from __future__ import annotations

from .. import dictionary_attack, nv_index, persistent
from ..algorithms import hash_alg
from ..auth import strip_trailing_zeros
from ..command import AuthRole, H, command
from ..constants import TPM_ALG, TPM_CC, TPM_RH, TPMA_OBJECT
from ..creation import creation_outputs
from ..crypto.kdf import KdfStream
from ..errors import TPM_RC, TpmError, errors_at
from ..hierarchy import (
    ENABLE_FLAGS,
    NO_POLICY,
    SEED_BITS,
    primary_seed,
    replace_proof,
    set_hierarchy_auth,
    set_hierarchy_policy,
)
from ..keys import cancel_checkpoint, create_object
from ..object_rules import adjust_auth, create_checks
from ..objects import LoadedObject, hierarchy_name, load, object_name, qualified_name, require_free_slot
from ..pcrs import clear_pcr_policies
from ..protection import CONTEXT_HASH
from ..types import (
    TPM2B_AUTH,
    TPM2B_CREATION_DATA,
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_NAME,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM_HANDLE,
    TPMI_ALG_HASH,
    TPMI_RH_CLEAR,
    TPMI_RH_ENABLES,
    TPMI_RH_HIERARCHY,
    TPMI_RH_HIERARCHY_AUTH,
    TPMI_RH_HIERARCHY_POLICY,
    TPMI_RH_PLATFORM,
    TPMI_YES_NO,
    TPML_PCR_SELECTION,
    TPMT_PUBLIC,
    TPMT_TK_CREATION,
)

PRIMARY_OBJECT_CREATION = b"Primary Object Creation"
PRIMARY_HIERARCHIES = (TPM_RH.OWNER, TPM_RH.ENDORSEMENT, TPM_RH.PLATFORM, TPM_RH.NULL)


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
    seed = primary_seed(ctx.engine, hierarchy)
    stream = KdfStream(
        in_public.nameAlg, seed, PRIMARY_OBJECT_CREATION, object_name(in_public.nameAlg, template), in_sensitive.data
    )
    data = b"" if in_public.objectAttributes & TPMA_OBJECT.sensitiveDataOrigin else in_sensitive.data
    # The same (seed, template, data) always derives the same object: a repeat comes from the cache.
    cache = ctx.engine.primary_cache
    cache.drop_retired(primary_seed(ctx.engine, h) for h in PRIMARY_HIERARCHIES)
    created = cache.get_or_create(
        seed,
        template,
        in_sensitive.data,
        auth,
        lambda: create_object(in_public, auth, data, stream, cancel_checkpoint(ctx)),
    )
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


# --- hierarchy state ----------------------------------------------------------------------------

SEED_SIZE = SEED_BITS // 8
#: A hierarchy authValue may be as long as a digest of the context integrity hash (Part 3, 24.8).
MAX_HIERARCHY_AUTH = hash_alg(CONTEXT_HASH).digest_size


def flush_hierarchy(engine, hierarchy: int) -> None:
    """Flush the transient objects of ``hierarchy`` (disabled, or its seed or proof replaced)."""
    loaded = engine.volatile.objects.loaded
    for handle in [h for h, obj in loaded.items() if obj.hierarchy == hierarchy]:
        del loaded[handle]


def evict_hierarchy(engine, hierarchy: int) -> None:
    """Remove the persistent objects of ``hierarchy`` (their seed is gone)."""
    for handle in persistent.persistent_handles(engine):
        obj = persistent.stored_object(engine, handle)
        if obj is not None and obj.hierarchy == hierarchy:
            persistent.evict(engine, handle)


def _require_may_control(authHandle: int, enable: int, state: bool, enabled_now: bool) -> None:
    """Who may change what (Part 3, 24.2): the platform everything; the owner and endorsement
    hierarchies only themselves, and only downwards -- a disabled one is re-enabled by the
    platform alone, so the owner cannot undo the platform's decision."""
    re_enabling = state and not enabled_now
    allowed = authHandle == TPM_RH.PLATFORM or (
        authHandle == enable and enable not in (TPM_RH.PLATFORM, TPM_RH.PLATFORM_NV) and not re_enabling
    )
    if not allowed:
        # A format-zero code: it carries no parameter number.
        raise TpmError(TPM_RC.AUTH_TYPE, f"0x{authHandle:08x} may not set enable 0x{enable:08x} to {int(state)}")


@command(
    TPM_CC.HierarchyControl,
    handles=[H("authHandle", TPMI_RH_HIERARCHY, AuthRole.USER)],
    params=[("enable", TPMI_RH_ENABLES), ("state", TPMI_YES_NO)],
    nv=True,
    extensive=True,
)
def hierarchy_control(ctx, authHandle: int, enable: int, state: int):
    vol = ctx.engine.volatile
    flag = ENABLE_FLAGS[enable]
    _require_may_control(authHandle, enable, bool(state), getattr(vol, flag))
    setattr(vol, flag, bool(state))
    if not state and enable != TPM_RH.PLATFORM_NV:
        flush_hierarchy(ctx.engine, enable)


@command(
    TPM_CC.SetPrimaryPolicy,
    handles=[H("authHandle", TPMI_RH_HIERARCHY_POLICY, AuthRole.USER)],
    params=[("authPolicy", TPM2B_DIGEST), ("hashAlg", TPMI_ALG_HASH.plus())],
    nv=True,
)
def set_primary_policy(ctx, authHandle: int, authPolicy: bytes, hashAlg: int):
    size = 0 if hashAlg == TPM_ALG.NULL else hash_alg(hashAlg).digest_size
    if len(authPolicy) != size:
        raise TpmError(
            TPM_RC.SIZE, f"authPolicy of {len(authPolicy)} octets for hashAlg 0x{hashAlg:04x}", at="authPolicy"
        )
    set_hierarchy_policy(ctx.engine, authHandle, (hashAlg, bytes(authPolicy)))


@command(TPM_CC.ChangePPS, handles=[H("authHandle", TPMI_RH_PLATFORM, AuthRole.USER)], nv=True, extensive=True)
def change_pps(ctx, authHandle: int):
    engine = ctx.engine
    engine.permanent.pps = engine.random(SEED_SIZE)
    # A new phProof: the platform hierarchy's saved contexts and tickets are refused from now on.
    replace_proof(engine, TPM_RH.PLATFORM)
    set_hierarchy_policy(engine, TPM_RH.PLATFORM, NO_POLICY)
    clear_pcr_policies(engine)  # as libtpms does: the PCR policies are the platform's
    flush_hierarchy(engine, TPM_RH.PLATFORM)
    evict_hierarchy(engine, TPM_RH.PLATFORM)


@command(TPM_CC.ChangeEPS, handles=[H("authHandle", TPMI_RH_PLATFORM, AuthRole.USER)], nv=True, extensive=True)
def change_eps(ctx, authHandle: int):
    engine = ctx.engine
    perm = engine.permanent
    perm.eps = engine.random(SEED_SIZE)
    replace_proof(engine, TPM_RH.ENDORSEMENT)
    set_hierarchy_auth(engine, TPM_RH.ENDORSEMENT, b"")
    set_hierarchy_policy(engine, TPM_RH.ENDORSEMENT, NO_POLICY)
    engine.volatile.eh_enable = True
    flush_hierarchy(engine, TPM_RH.ENDORSEMENT)
    evict_hierarchy(engine, TPM_RH.ENDORSEMENT)


@command(TPM_CC.Clear, handles=[H("authHandle", TPMI_RH_CLEAR, AuthRole.USER)], nv=True, extensive=True)
def clear(ctx, authHandle: int):
    engine = ctx.engine
    perm, vol = engine.permanent, engine.volatile
    if perm.disable_clear:
        raise TpmError(TPM_RC.DISABLED, "TPM2_Clear is disabled (disableClear is SET)")
    perm.sps = engine.random(SEED_SIZE)
    # shProof and ehProof are replaced (the EPS is not): saved contexts and tickets of both
    # hierarchies are refused from now on (Part 3, 24.6).
    replace_proof(engine, TPM_RH.OWNER)
    replace_proof(engine, TPM_RH.ENDORSEMENT)
    vol.sh_enable = vol.eh_enable = True
    for hierarchy in (TPM_RH.OWNER, TPM_RH.ENDORSEMENT, TPM_RH.LOCKOUT):
        set_hierarchy_auth(engine, hierarchy, b"")
        set_hierarchy_policy(engine, hierarchy, NO_POLICY)
    for hierarchy in persistent.CLEARED_HIERARCHIES:
        flush_hierarchy(engine, hierarchy)
    persistent.clear_owner_objects(engine)
    nv_index.clear_owner_indices(engine)
    dictionary_attack.restore_defaults(engine)
    # A new owner starts with a new Clock and counters (Part 3, 24.6).
    engine.set_clock(0)
    vol.clock_safe = True
    perm.reset_count = perm.restart_count = 0
    vol.pcr_counter += 1


@command(
    TPM_CC.ClearControl,
    handles=[H("auth", TPMI_RH_CLEAR, AuthRole.USER)],
    params=[("disable", TPMI_YES_NO)],
    nv=True,
)
def clear_control(ctx, auth: int, disable: int):
    if auth == TPM_RH.LOCKOUT and not disable:
        # lockoutAuth may only forbid TPM2_Clear; allowing it again takes the platform.
        raise TpmError(TPM_RC.AUTH_FAIL, "lockoutAuth cannot CLEAR disableClear")
    ctx.engine.permanent.disable_clear = bool(disable)


@command(
    TPM_CC.HierarchyChangeAuth,
    handles=[H("authHandle", TPMI_RH_HIERARCHY_AUTH, AuthRole.USER)],
    params=[("newAuth", TPM2B_AUTH)],
    nv=True,
)
def hierarchy_change_auth(ctx, authHandle: int, newAuth: bytes):
    auth = strip_trailing_zeros(newAuth)
    if len(auth) > MAX_HIERARCHY_AUTH:
        raise TpmError(TPM_RC.SIZE, f"newAuth of {len(auth)} octets", at="newAuth")
    set_hierarchy_auth(ctx.engine, authHandle, auth)
