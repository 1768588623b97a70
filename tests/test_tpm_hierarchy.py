"""Hierarchy commands (Part 3, clause 24) through Engine.execute with real command bytes:
HierarchyControl, HierarchyChangeAuth, SetPrimaryPolicy, Clear, ClearControl, ChangePPS,
ChangeEPS, and what a new seed does to primaries, their children and saved contexts.

The engine runs under EngineOracle, so an unexpected TPM_RC_FAILURE or a logged internal
error fails the test.  Response codes carry their handle/parameter/session number.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from support.engine_oracle import EngineOracle
from support.object_templates import (
    NO_DA,
    NO_SYM,
    SIGNING,
    create_cmd,
    create_primary_cmd,
    ecc_template,
    load_cmd,
    rsa_template,
)
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import state
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_PT, TPM_RH, TPMA_PERMANENT, TPMA_STARTUP_CLEAR
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.entities import permanent_entity
from vtpm_cuse.tpm.errors import RC_P, RC_S, TPM_RC, rc_name
from vtpm_cuse.tpm.hierarchy import null_seed, seed_derived_proof
from vtpm_cuse.tpm.marshal import Reader, Struct

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
N1 = 1 << 8  # handle / parameter / session number 1 of a format-one code
N2 = 2 << 8

CREATE_OUT = Struct("Create_Out", [("outPrivate", T.TPM2B_PRIVATE), ("outPublic", T.TPM2B_PUBLIC)])


# --- command builders ----------------------------------------------------------------------------


def hierarchy_control(auth: int, enable: int, state: int, pw: bytes = b"") -> bytes:
    return command(TPM_CC.HierarchyControl, u32(enable) + bytes([state]), u32(auth), pw)


def change_auth(handle: int, new: bytes, pw: bytes = b"") -> bytes:
    return command(TPM_CC.HierarchyChangeAuth, tpm2b(new), u32(handle), pw)


def set_primary_policy(handle: int, digest: bytes, alg: int, pw: bytes = b"") -> bytes:
    return command(TPM_CC.SetPrimaryPolicy, tpm2b(digest) + u16(alg), u32(handle), pw)


def clear(handle: int = TPM_RH.LOCKOUT, pw: bytes = b"") -> bytes:
    return command(TPM_CC.Clear, handles=u32(handle), auth=pw)


def clear_control(handle: int, disable: int, pw: bytes = b"") -> bytes:
    return command(TPM_CC.ClearControl, bytes([disable]), u32(handle), pw)


def change_pps(pw: bytes = b"") -> bytes:
    return command(TPM_CC.ChangePPS, handles=u32(TPM_RH.PLATFORM), auth=pw)


def change_eps(pw: bytes = b"") -> bytes:
    return command(TPM_CC.ChangeEPS, handles=u32(TPM_RH.PLATFORM), auth=pw)


# --- helpers -------------------------------------------------------------------------------------


def run(tpm, cmd: bytes) -> Response:
    return Response(tpm.execute(cmd))


def rc(tpm, cmd: bytes) -> int:
    return run(tpm, cmd).rc


def ok(tpm, cmd: bytes) -> Response:
    resp = run(tpm, cmd)
    assert resp.rc == 0, rc_name(resp.rc)
    return resp


def handle_of(resp: Response) -> int:
    return int.from_bytes(resp.raw[10:14], "big")


def properties(tpm, first: int, count: int = 1) -> dict[int, int]:
    resp = ok(tpm, command(TPM_CC.GetCapability, u32(TPM_CAP.TPM_PROPERTIES) + u32(first) + u32(count)))
    return {p.property: p.value for p in T.TPMS_CAPABILITY_DATA.unpack(resp.params()[1:]).data}


def permanent_flags(tpm) -> int:
    return properties(tpm, TPM_PT.PERMANENT)[TPM_PT.PERMANENT]


def startup_flags(tpm) -> int:
    return properties(tpm, TPM_PT.STARTUP_CLEAR)[TPM_PT.STARTUP_CLEAR]


def primary(tpm, hierarchy: int = TPM_RH.OWNER, pw: bytes = b"", area=None) -> tuple[int, bytes]:
    """A primary key: (handle, outPublic as marshalled)."""
    resp = ok(tpm, create_primary_cmd(area or rsa_template(), hierarchy, pw))
    params = resp.params(1)
    return handle_of(resp), params[: 2 + int.from_bytes(params[:2], "big")]


def create_child(tpm, parent: int, area, **kw):
    """TPM2_Create's outPrivate and outPublic (the creation data that follows is not needed)."""
    return CREATE_OUT.unmarshal(Reader(ok(tpm, create_cmd(parent, area, **kw)).params()))


def context_save(tpm, handle: int):
    return T.TPMS_CONTEXT.unpack(ok(tpm, command(TPM_CC.ContextSave, handles=u32(handle))).params())


def context_load(tpm, context) -> int:
    return rc(tpm, command(TPM_CC.ContextLoad, T.TPMS_CONTEXT.pack(context)))


def loaded(tpm, handle: int) -> bool:
    return rc(tpm, command(TPM_CC.ReadPublic, handles=u32(handle))) == 0


def new_engine(**kw) -> EngineOracle:
    tpm = EngineOracle(Engine(**kw))
    assert tpm.execute(STARTUP_CLEAR)[6:10] == bytes(4)
    return tpm


@pytest.fixture
def tpm() -> EngineOracle:
    return new_engine()


# --- HierarchyControl ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enable", "flag", "handle"),
    [
        (TPM_RH.OWNER, TPMA_STARTUP_CLEAR.shEnable, TPM_RH.OWNER),
        (TPM_RH.ENDORSEMENT, TPMA_STARTUP_CLEAR.ehEnable, TPM_RH.ENDORSEMENT),
        (TPM_RH.PLATFORM, TPMA_STARTUP_CLEAR.phEnable, TPM_RH.PLATFORM),
    ],
)
def test_hierarchy_control_disables_and_platform_re_enables(tpm, enable, flag, handle):
    key, _ = primary(tpm, enable)
    assert startup_flags(tpm) & flag
    ok(tpm, hierarchy_control(enable if enable != TPM_RH.PLATFORM else TPM_RH.PLATFORM, enable, 0))
    assert not startup_flags(tpm) & flag
    # Disabling flushes the hierarchy's objects and makes its handle unusable.
    assert not loaded(tpm, key)
    assert rc(tpm, create_primary_cmd(rsa_template(), handle)) == TPM_RC.HIERARCHY | N1
    if enable == TPM_RH.PLATFORM:
        # Nothing can re-enable the platform hierarchy but the next Startup.
        assert rc(tpm, hierarchy_control(TPM_RH.PLATFORM, enable, 1)) == TPM_RC.HIERARCHY | N1
        return
    ok(tpm, hierarchy_control(TPM_RH.PLATFORM, enable, 1))
    assert startup_flags(tpm) & flag
    primary(tpm, enable)


def test_hierarchy_control_platform_nv(tpm):
    ok(tpm, hierarchy_control(TPM_RH.PLATFORM, TPM_RH.PLATFORM_NV, 0))
    assert not startup_flags(tpm) & TPMA_STARTUP_CLEAR.phEnableNV
    assert startup_flags(tpm) & TPMA_STARTUP_CLEAR.phEnable
    ok(tpm, hierarchy_control(TPM_RH.PLATFORM, TPM_RH.PLATFORM_NV, 1))
    assert startup_flags(tpm) & TPMA_STARTUP_CLEAR.phEnableNV


@pytest.mark.parametrize(
    ("auth", "enable", "state"),
    [
        (TPM_RH.OWNER, TPM_RH.PLATFORM, 0),
        (TPM_RH.OWNER, TPM_RH.PLATFORM_NV, 0),
        (TPM_RH.ENDORSEMENT, TPM_RH.PLATFORM, 0),
        (TPM_RH.OWNER, TPM_RH.ENDORSEMENT, 0),
        (TPM_RH.ENDORSEMENT, TPM_RH.OWNER, 0),
    ],
)
def test_hierarchy_control_refuses_other_hierarchies(tpm, auth, enable, state):
    assert rc(tpm, hierarchy_control(auth, enable, state)) == TPM_RC.AUTH_TYPE


def test_owner_cannot_re_enable_itself_after_the_platform_disabled_it(tpm):
    """A disabled hierarchy's own handle is refused before the command runs (TPM_RC_HIERARCHY);
    the endorsement hierarchy cannot re-enable the disabled owner hierarchy either."""
    ok(tpm, hierarchy_control(TPM_RH.PLATFORM, TPM_RH.OWNER, 0))
    assert rc(tpm, hierarchy_control(TPM_RH.OWNER, TPM_RH.OWNER, 1)) == TPM_RC.HIERARCHY | N1
    assert rc(tpm, hierarchy_control(TPM_RH.ENDORSEMENT, TPM_RH.OWNER, 1)) == TPM_RC.AUTH_TYPE
    # Setting an already-enabled hierarchy is allowed for its own handle.
    ok(tpm, hierarchy_control(TPM_RH.ENDORSEMENT, TPM_RH.ENDORSEMENT, 1))


def test_hierarchy_control_bad_values(tpm):
    assert rc(tpm, hierarchy_control(TPM_RH.PLATFORM, TPM_RH.NULL, 0)) == TPM_RC.VALUE | RC_P | N1
    assert rc(tpm, hierarchy_control(TPM_RH.PLATFORM, TPM_RH.OWNER, 2)) == TPM_RC.VALUE | RC_P | N2
    assert rc(tpm, hierarchy_control(TPM_RH.LOCKOUT, TPM_RH.OWNER, 0)) == TPM_RC.VALUE | N1


def test_startup_clear_re_enables_every_hierarchy(tpm):
    for enable in (TPM_RH.OWNER, TPM_RH.ENDORSEMENT, TPM_RH.PLATFORM_NV, TPM_RH.PLATFORM):
        ok(tpm, hierarchy_control(TPM_RH.PLATFORM, enable, 0))
    ok(tpm, command(TPM_CC.Shutdown, u16(0)))
    restarted = EngineOracle(Engine.from_blobs(tpm.permanent_blob()))
    ok(restarted, STARTUP_CLEAR)
    mask = TPMA_STARTUP_CLEAR.phEnable | TPMA_STARTUP_CLEAR.shEnable | TPMA_STARTUP_CLEAR.ehEnable
    assert startup_flags(restarted) & (mask | TPMA_STARTUP_CLEAR.phEnableNV) == mask | TPMA_STARTUP_CLEAR.phEnableNV


# --- HierarchyChangeAuth -------------------------------------------------------------------------

AUTH_FLAGS = {
    TPM_RH.OWNER: TPMA_PERMANENT.ownerAuthSet,
    TPM_RH.ENDORSEMENT: TPMA_PERMANENT.endorsementAuthSet,
    TPM_RH.LOCKOUT: TPMA_PERMANENT.lockoutAuthSet,
}


@pytest.mark.parametrize("handle", [TPM_RH.OWNER, TPM_RH.ENDORSEMENT, TPM_RH.PLATFORM, TPM_RH.LOCKOUT])
def test_hierarchy_change_auth(tpm, handle):
    ok(tpm, change_auth(handle, b"secret\0\0"))
    if handle in AUTH_FLAGS:
        assert permanent_flags(tpm) & AUTH_FLAGS[handle]
    # Trailing zeros do not count; the old (empty) value no longer works.
    wrong = TPM_RC.AUTH_FAIL if handle == TPM_RH.LOCKOUT else TPM_RC.BAD_AUTH
    assert rc(tpm, change_auth(handle, b"", b"")) == wrong | RC_S | N1
    if handle == TPM_RH.LOCKOUT:
        return  # lockoutAuth is now locked out; test_tpm_dictionary_attack covers that
    ok(tpm, change_auth(handle, b"", b"secret"))
    if handle in AUTH_FLAGS:
        assert not permanent_flags(tpm) & AUTH_FLAGS[handle]


def test_hierarchy_change_auth_sizes(tpm):
    ok(tpm, change_auth(TPM_RH.OWNER, b"\x01" * 64))
    assert rc(tpm, change_auth(TPM_RH.OWNER, b"\x01" * 65, b"\x01" * 64)) == TPM_RC.SIZE | RC_P | N1
    # 64 octets followed by zeros fit: the zeros are not part of the value.
    ok(tpm, change_auth(TPM_RH.OWNER, b"", b"\x01" * 64))
    assert rc(tpm, change_auth(TPM_RH.NULL, b"x")) == TPM_RC.VALUE | N1


def test_platform_auth_is_reset_by_startup_clear(tpm):
    ok(tpm, change_auth(TPM_RH.PLATFORM, b"pp"))
    ok(tpm, command(TPM_CC.Shutdown, u16(0)))
    again = EngineOracle(Engine.from_blobs(tpm.permanent_blob()))
    ok(again, STARTUP_CLEAR)
    ok(again, change_auth(TPM_RH.PLATFORM, b"", b""))


# --- SetPrimaryPolicy ----------------------------------------------------------------------------


@pytest.mark.parametrize("handle", [TPM_RH.OWNER, TPM_RH.ENDORSEMENT, TPM_RH.PLATFORM, TPM_RH.LOCKOUT])
def test_set_primary_policy(tpm, handle):
    digest = bytes(range(32))
    ok(tpm, set_primary_policy(handle, digest, TPM_ALG.SHA256))
    e = permanent_entity(tpm.engine, handle)
    assert (e.policy_alg, e.policy) == (TPM_ALG.SHA256, digest)
    ok(tpm, set_primary_policy(handle, b"", TPM_ALG.NULL))
    e = permanent_entity(tpm.engine, handle)
    assert (e.policy_alg, e.policy) == (TPM_ALG.NULL, b"")


def test_set_primary_policy_size_must_match_the_hash(tpm):
    assert rc(tpm, set_primary_policy(TPM_RH.OWNER, bytes(20), TPM_ALG.SHA256)) == TPM_RC.SIZE | RC_P | N1
    assert rc(tpm, set_primary_policy(TPM_RH.OWNER, bytes(32), TPM_ALG.NULL)) == TPM_RC.SIZE | RC_P | N1
    assert rc(tpm, set_primary_policy(TPM_RH.OWNER, bytes(32), TPM_ALG.AES)) == TPM_RC.HASH | RC_P | N2
    assert rc(tpm, set_primary_policy(TPM_RH.NULL, b"", TPM_ALG.NULL)) == TPM_RC.VALUE | N1
    ok(tpm, set_primary_policy(TPM_RH.OWNER, bytes(48), TPM_ALG.SHA384))


# --- Clear / ClearControl ------------------------------------------------------------------------


def test_clear_resets_the_owner(tpm):
    srk, srk_public = primary(tpm, TPM_RH.OWNER)
    ek, ek_public = primary(tpm, TPM_RH.ENDORSEMENT)
    pk, pk_public = primary(tpm, TPM_RH.PLATFORM)
    child = create_child(tpm, srk, ecc_template(SIGNING, sym=NO_SYM))
    saved = context_save(tpm, srk)
    for handle in (TPM_RH.OWNER, TPM_RH.ENDORSEMENT):
        ok(tpm, change_auth(handle, b"a"))
        ok(tpm, set_primary_policy(handle, bytes(32), TPM_ALG.SHA256, b"a"))
    ok(tpm, set_primary_policy(TPM_RH.LOCKOUT, bytes(32), TPM_ALG.SHA256))
    ok(tpm, change_auth(TPM_RH.LOCKOUT, b"l"))
    ok(tpm, hierarchy_control(TPM_RH.PLATFORM, TPM_RH.ENDORSEMENT, 0))
    counter_before = tpm.engine.volatile.pcr_counter

    ok(tpm, clear(TPM_RH.LOCKOUT, b"l"))

    flags = permanent_flags(tpm)
    assert not flags & (TPMA_PERMANENT.ownerAuthSet | TPMA_PERMANENT.endorsementAuthSet | TPMA_PERMANENT.lockoutAuthSet)
    assert startup_flags(tpm) & TPMA_STARTUP_CLEAR.ehEnable
    # Owner and endorsement objects are flushed, platform ones stay.
    assert not loaded(tpm, srk) and not loaded(tpm, ek) and loaded(tpm, pk)
    perm = tpm.engine.permanent
    assert perm.owner_policy == perm.endorsement_policy == perm.lockout_policy == (TPM_ALG.NULL, b"")
    assert perm.reset_count == perm.restart_count == 0
    assert tpm.engine.clock() < 1000
    assert tpm.engine.volatile.pcr_counter == counter_before + 1
    # A new storage seed: a different SRK; the endorsement and platform seeds are unchanged.
    new_srk, new_srk_public = primary(tpm, TPM_RH.OWNER)
    assert new_srk_public != srk_public
    assert primary(tpm, TPM_RH.ENDORSEMENT)[1] == ek_public
    assert primary(tpm, TPM_RH.PLATFORM)[1] == pk_public
    # The old SRK's child and saved context are no longer usable.
    load = load_cmd(new_srk, child.outPrivate, child.outPublic)
    assert rc(tpm, load) == TPM_RC.INTEGRITY | RC_P | N1
    assert context_load(tpm, saved) == TPM_RC.INTEGRITY | RC_P | N1


def test_clear_with_platform_auth_and_the_null_hierarchy(tpm):
    ok(tpm, change_auth(TPM_RH.PLATFORM, b"p"))
    temp, _ = primary(tpm, TPM_RH.NULL)
    ok(tpm, clear(TPM_RH.PLATFORM, b"p"))
    assert loaded(tpm, temp)  # TPM2_Clear leaves the NULL hierarchy's objects alone
    ok(tpm, change_auth(TPM_RH.PLATFORM, b"", b"p"))  # platformAuth is not reset by Clear


def test_null_primaries_survive_clear_and_change_at_a_tpm_reset(tpm):
    """The NULL seed is replaced by every TPM Reset and by nothing else (libtpms keeps NULL
    primaries across TPM2_Clear; a TPM Restart keeps them too)."""
    _, before = primary(tpm, TPM_RH.NULL, area=ecc_template())
    ok(tpm, clear(TPM_RH.LOCKOUT))
    assert primary(tpm, TPM_RH.NULL, area=ecc_template())[1] == before
    ok(tpm, command(TPM_CC.Shutdown, u16(1)))  # Shutdown(STATE) then Startup(CLEAR): a TPM Restart
    restarted = EngineOracle(Engine.from_blobs(tpm.permanent_blob()))
    ok(restarted, STARTUP_CLEAR)
    assert primary(restarted, TPM_RH.NULL, area=ecc_template())[1] == before
    ok(restarted, command(TPM_CC.Shutdown, u16(0)))  # Shutdown(CLEAR) then Startup(CLEAR): a TPM Reset
    reset = EngineOracle(Engine.from_blobs(restarted.permanent_blob()))
    ok(reset, STARTUP_CLEAR)
    assert primary(reset, TPM_RH.NULL, area=ecc_template())[1] != before


def test_clear_errors(tpm):
    assert rc(tpm, clear(TPM_RH.OWNER)) == TPM_RC.VALUE | N1
    assert rc(tpm, clear(TPM_RH.LOCKOUT, b"wrong")) == TPM_RC.AUTH_FAIL | RC_S | N1
    assert rc(tpm, command(TPM_CC.Clear, handles=u32(TPM_RH.LOCKOUT))) == TPM_RC.AUTH_MISSING


def test_clear_control(tpm):
    ok(tpm, clear_control(TPM_RH.LOCKOUT, 1))
    assert permanent_flags(tpm) & TPMA_PERMANENT.disableClear
    owner_key, _ = primary(tpm)
    assert rc(tpm, clear(TPM_RH.LOCKOUT)) == TPM_RC.DISABLED
    assert rc(tpm, clear(TPM_RH.PLATFORM)) == TPM_RC.DISABLED
    assert loaded(tpm, owner_key)
    # lockoutAuth may only SET disableClear; the platform may clear it.
    assert rc(tpm, clear_control(TPM_RH.LOCKOUT, 0)) == TPM_RC.AUTH_FAIL
    assert permanent_flags(tpm) & TPMA_PERMANENT.disableClear
    ok(tpm, clear_control(TPM_RH.PLATFORM, 0))
    assert not permanent_flags(tpm) & TPMA_PERMANENT.disableClear
    ok(tpm, clear_control(TPM_RH.PLATFORM, 1))
    ok(tpm, clear_control(TPM_RH.PLATFORM, 0))
    ok(tpm, clear(TPM_RH.LOCKOUT))
    assert rc(tpm, clear_control(TPM_RH.LOCKOUT, 2)) == TPM_RC.VALUE | RC_P | N1
    assert rc(tpm, clear_control(TPM_RH.OWNER, 1)) == TPM_RC.VALUE | N1


def test_disable_clear_survives_a_power_cycle(tpm):
    ok(tpm, clear_control(TPM_RH.PLATFORM, 1))
    again = EngineOracle(Engine.from_blobs(tpm.permanent_blob()))
    ok(again, STARTUP_CLEAR)
    assert rc(again, clear(TPM_RH.LOCKOUT)) == TPM_RC.DISABLED


# --- ChangePPS / ChangeEPS -----------------------------------------------------------------------


def test_change_pps(tpm):
    pk, pk_public = primary(tpm, TPM_RH.PLATFORM)
    srk, srk_public = primary(tpm, TPM_RH.OWNER)
    child = create_child(tpm, pk, ecc_template(SIGNING, sym=NO_SYM))
    saved = context_save(tpm, pk)
    ok(tpm, change_auth(TPM_RH.PLATFORM, b"p"))
    ok(tpm, set_primary_policy(TPM_RH.PLATFORM, bytes(32), TPM_ALG.SHA256, b"p"))
    ok(tpm, change_pps(b"p"))
    assert not loaded(tpm, pk) and loaded(tpm, srk)
    assert tpm.engine.volatile.platform_policy == (TPM_ALG.NULL, b"")
    new_pk, new_public = primary(tpm, TPM_RH.PLATFORM, b"p")  # platformAuth is kept
    assert new_public != pk_public
    assert rc(tpm, load_cmd(new_pk, child.outPrivate, child.outPublic)) == TPM_RC.INTEGRITY | RC_P | N1
    assert context_load(tpm, saved) == TPM_RC.INTEGRITY | RC_P | N1
    assert primary(tpm, TPM_RH.OWNER)[1] == srk_public


def test_change_eps(tpm):
    ek, ek_public = primary(tpm, TPM_RH.ENDORSEMENT)
    saved = context_save(tpm, ek)
    ok(tpm, change_auth(TPM_RH.ENDORSEMENT, b"e"))
    ok(tpm, set_primary_policy(TPM_RH.ENDORSEMENT, bytes(32), TPM_ALG.SHA256, b"e"))
    ok(tpm, hierarchy_control(TPM_RH.PLATFORM, TPM_RH.ENDORSEMENT, 0))
    ok(tpm, change_eps())
    assert permanent_flags(tpm) & TPMA_PERMANENT.tpmGeneratedEPS
    assert not permanent_flags(tpm) & TPMA_PERMANENT.endorsementAuthSet
    assert startup_flags(tpm) & TPMA_STARTUP_CLEAR.ehEnable
    assert tpm.engine.permanent.endorsement_policy == (TPM_ALG.NULL, b"")
    assert not loaded(tpm, ek)
    assert primary(tpm, TPM_RH.ENDORSEMENT, b"")[1] != ek_public
    assert context_load(tpm, saved) == TPM_RC.INTEGRITY | RC_P | N1


def test_change_seed_errors(tpm):
    ok(tpm, change_auth(TPM_RH.PLATFORM, b"p"))
    assert rc(tpm, change_pps(b"x")) == TPM_RC.BAD_AUTH | RC_S | N1
    assert rc(tpm, change_eps(b"x")) == TPM_RC.BAD_AUTH | RC_S | N1
    owner = command(TPM_CC.ChangeEPS, handles=u32(TPM_RH.OWNER), auth=b"")
    assert rc(tpm, owner) == TPM_RC.VALUE | N1


def test_seed_changes_are_persistent(tpm):
    _, before = primary(tpm, TPM_RH.ENDORSEMENT)
    ok(tpm, change_eps())
    _, after = primary(tpm, TPM_RH.ENDORSEMENT)
    again = EngineOracle(Engine.from_blobs(tpm.permanent_blob()))
    ok(again, STARTUP_CLEAR)
    assert primary(again, TPM_RH.ENDORSEMENT)[1] == after != before


def test_no_da_key_unaffected_by_hierarchy_commands(tpm):
    """A key with noDA under a changed owner auth keeps working (the hierarchy is not its parent's auth)."""
    srk, _ = primary(tpm)
    key = create_child(tpm, srk, ecc_template(SIGNING | NO_DA, sym=NO_SYM), auth=b"k")
    ok(tpm, change_auth(TPM_RH.OWNER, b"o"))
    handle = handle_of(ok(tpm, load_cmd(srk, key.outPrivate, key.outPublic)))
    assert loaded(tpm, handle)


# --- hierarchy proofs (phProof, shProof, ehProof) --------------------------------------------------

CREATE_PRIMARY_OUT = Struct(
    "CreatePrimary_Out",
    [
        ("outPublic", T.TPM2B_PUBLIC),
        ("creationData", T.TPM2B_CREATION_DATA),
        ("creationHash", T.TPM2B_DIGEST),
        ("creationTicket", T.TPMT_TK_CREATION),
        ("name", T.TPM2B_NAME),
    ],
)
HASH_OUT = Struct("Hash_Out", [("outHash", T.TPM2B_DIGEST), ("validation", T.TPMT_TK_HASHCHECK)])
HIERARCHIES = (TPM_RH.PLATFORM, TPM_RH.OWNER, TPM_RH.ENDORSEMENT)


def hash_ticket(tpm, hierarchy: int, data: bytes = b"ticketed data") -> bytes:
    """The digest of the TPMT_TK_HASHCHECK TPM2_Hash gives ``data`` under ``hierarchy``: the value a
    command checking the ticket recomputes, so a ticket is valid exactly while this stays the same."""
    resp = ok(tpm, command(TPM_CC.Hash, tpm2b(data) + u16(TPM_ALG.SHA256) + u32(hierarchy)))
    validation = HASH_OUT.unmarshal(Reader(resp.params())).validation
    assert validation.hierarchy == hierarchy
    return validation.digest


def creation_ticket(tpm, hierarchy: int):
    """(handle, CreatePrimary's outputs) of an ECC primary: same seed and template, same Name and
    creationHash -- so a different creationTicket can only come from a different proof."""
    resp = ok(tpm, create_primary_cmd(ecc_template(), hierarchy))
    return handle_of(resp), CREATE_PRIMARY_OUT.unmarshal(Reader(resp.params(1)))


def proofs(tpm) -> tuple[bytes, bytes, bytes]:
    perm = tpm.engine.permanent
    return perm.ph_proof, perm.sh_proof, perm.eh_proof


def saved_contexts(tpm) -> dict[int, object]:
    """A saved context of a primary of every hierarchy (the objects stay loaded)."""
    return {h: context_save(tpm, creation_ticket(tpm, h)[0]) for h in HIERARCHIES}


def test_manufacture_gives_random_proofs_apart_from_the_seeds():
    a, b = new_engine(), new_engine()
    assert len({*proofs(a), *proofs(b)}) == 6
    assert all(len(p) == 64 for p in proofs(a))
    perm = a.engine.permanent
    assert not {perm.pps, perm.sps, perm.eps} & set(proofs(a))
    # The proofs are NV state: they survive a power cycle.
    again = EngineOracle(Engine.from_blobs(a.permanent_blob()))
    assert proofs(again) == proofs(a)


def test_clear_replaces_sh_proof_and_eh_proof(tpm):
    contexts = saved_contexts(tpm)
    null_context = context_save(tpm, creation_ticket(tpm, TPM_RH.NULL)[0])
    hash_tickets = {h: hash_ticket(tpm, h) for h in HIERARCHIES}
    primaries = {h: creation_ticket(tpm, h)[1] for h in HIERARCHIES}
    assert all(hash_ticket(tpm, h) == hash_tickets[h] for h in HIERARCHIES)  # tickets are reproducible
    ph, sh, eh = proofs(tpm)

    ok(tpm, clear(TPM_RH.LOCKOUT))

    new_ph, new_sh, new_eh = proofs(tpm)
    assert new_ph == ph and new_sh != sh and new_eh != eh
    # Part 3 TPM2_Clear: ehProof and shProof are replaced, so saved contexts of the owner and
    # endorsement hierarchies fail their integrity check; the platform's still load.
    assert context_load(tpm, contexts[TPM_RH.OWNER]) == TPM_RC.INTEGRITY | RC_P | N1
    assert context_load(tpm, contexts[TPM_RH.ENDORSEMENT]) == TPM_RC.INTEGRITY | RC_P | N1
    assert context_load(tpm, contexts[TPM_RH.PLATFORM]) == 0
    assert context_load(tpm, null_context) == 0  # nullProof, like libtpms, changes at TPM Reset only
    # Old hash-check tickets of both no longer match what the TPM computes.
    assert hash_ticket(tpm, TPM_RH.OWNER) != hash_tickets[TPM_RH.OWNER]
    assert hash_ticket(tpm, TPM_RH.ENDORSEMENT) != hash_tickets[TPM_RH.ENDORSEMENT]
    assert hash_ticket(tpm, TPM_RH.PLATFORM) == hash_tickets[TPM_RH.PLATFORM]
    # The EPS is kept: the endorsement primary has the same Name and creationHash, but its old
    # creation ticket is not the one the TPM would issue (and accept) now.
    _, ek = creation_ticket(tpm, TPM_RH.ENDORSEMENT)
    old = primaries[TPM_RH.ENDORSEMENT]
    assert (ek.name, ek.creationHash) == (old.name, old.creationHash)
    assert ek.creationTicket.digest != old.creationTicket.digest
    assert creation_ticket(tpm, TPM_RH.PLATFORM)[1].creationTicket == primaries[TPM_RH.PLATFORM].creationTicket


def test_change_eps_replaces_eh_proof_only(tpm):
    contexts = saved_contexts(tpm)
    hash_tickets = {h: hash_ticket(tpm, h) for h in HIERARCHIES}
    ph, sh, eh = proofs(tpm)
    ok(tpm, change_eps())
    assert proofs(tpm)[:2] == (ph, sh) and proofs(tpm)[2] != eh
    assert context_load(tpm, contexts[TPM_RH.ENDORSEMENT]) == TPM_RC.INTEGRITY | RC_P | N1
    assert context_load(tpm, contexts[TPM_RH.OWNER]) == 0
    assert context_load(tpm, contexts[TPM_RH.PLATFORM]) == 0
    assert hash_ticket(tpm, TPM_RH.ENDORSEMENT) != hash_tickets[TPM_RH.ENDORSEMENT]
    assert hash_ticket(tpm, TPM_RH.OWNER) == hash_tickets[TPM_RH.OWNER]
    assert hash_ticket(tpm, TPM_RH.PLATFORM) == hash_tickets[TPM_RH.PLATFORM]


def test_change_pps_replaces_ph_proof_only(tpm):
    contexts = saved_contexts(tpm)
    hash_tickets = {h: hash_ticket(tpm, h) for h in HIERARCHIES}
    ph, sh, eh = proofs(tpm)
    ok(tpm, change_pps())
    assert proofs(tpm)[0] != ph and proofs(tpm)[1:] == (sh, eh)
    assert context_load(tpm, contexts[TPM_RH.PLATFORM]) == TPM_RC.INTEGRITY | RC_P | N1
    assert context_load(tpm, contexts[TPM_RH.OWNER]) == 0
    assert context_load(tpm, contexts[TPM_RH.ENDORSEMENT]) == 0
    assert hash_ticket(tpm, TPM_RH.PLATFORM) != hash_tickets[TPM_RH.PLATFORM]
    assert hash_ticket(tpm, TPM_RH.OWNER) == hash_tickets[TPM_RH.OWNER]
    assert hash_ticket(tpm, TPM_RH.ENDORSEMENT) == hash_tickets[TPM_RH.ENDORSEMENT]


def without_proofs(blob: bytes) -> bytes:
    """A permanent-state blob as written before the proofs and the NULL seed were stored."""
    payload = json.loads(blob[state._HEADER.size :])
    for field in ("ph_proof", "sh_proof", "eh_proof", "null_proof", "null_seed", "total_reset_count"):
        del payload[field]
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    header = state._HEADER.pack(
        state.BLOB_MAGIC, state.BLOB_VERSION, state.BlobKind.PERMANENT, hashlib.sha256(raw).digest()
    )
    return header + raw


def test_state_from_before_the_proofs_loads_and_keeps_its_contexts_and_tickets(tpm):
    # What the TPM did before: every proof derived from its hierarchy's seed.
    perm = tpm.engine.permanent
    perm.ph_proof, perm.sh_proof, perm.eh_proof = (seed_derived_proof(s) for s in (perm.pps, perm.sps, perm.eps))
    perm.null_seed = b""  # derived from the storage seed and resetCount, as it was then
    perm.null_proof = seed_derived_proof(null_seed(tpm.engine))
    contexts = saved_contexts(tpm)
    contexts[TPM_RH.NULL] = context_save(tpm, creation_ticket(tpm, TPM_RH.NULL)[0])
    hash_tickets = {h: hash_ticket(tpm, h) for h in HIERARCHIES}
    ok(tpm, command(TPM_CC.Shutdown, u16(1)))  # Shutdown(STATE): saved contexts survive the power cycle
    old_blob = without_proofs(tpm.permanent_blob())
    assert b"_proof" not in old_blob and b"total_reset_count" not in old_blob

    upgraded = EngineOracle(Engine.from_blobs(old_blob))
    ok(upgraded, command(TPM_CC.Startup, u16(1)))

    # The proofs are what they were; contexts and tickets from before the upgrade stay valid ...
    assert proofs(upgraded) == proofs(tpm)
    assert upgraded.engine.permanent.null_proof == perm.null_proof
    for h in HIERARCHIES:
        assert hash_ticket(upgraded, h) == hash_tickets[h]
    for saved in contexts.values():
        assert context_load(upgraded, saved) == 0
    # ... the values are written with the state from now on ...
    assert proofs(EngineOracle(Engine.from_blobs(upgraded.permanent_blob()))) == proofs(tpm)
    # ... and are the state's own: TPM2_Clear replaces them even though the EPS stays.
    ok(upgraded, clear(TPM_RH.LOCKOUT))
    assert context_load(upgraded, contexts[TPM_RH.ENDORSEMENT]) == TPM_RC.INTEGRITY | RC_P | N1
    assert hash_ticket(upgraded, TPM_RH.ENDORSEMENT) != hash_tickets[TPM_RH.ENDORSEMENT]
    assert context_load(upgraded, contexts[TPM_RH.PLATFORM]) == 0
