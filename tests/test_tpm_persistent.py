"""Persistent objects and transient object slots: TPM2_EvictControl, persistent handles used
wherever a loaded object is, GetCapability/properties, and the configurable slot count.

Everything goes through Engine.execute with real command bytes, wrapped in EngineOracle so a
crash or an internal-error log fails the test.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from support.engine_oracle import EngineOracle
from support.object_templates import (
    NO_SYM,
    SIGNING,
    STORAGE,
    create_cmd,
    create_primary_cmd,
    creation_params,
    ecc_template,
    keyedhash_template,
    load_cmd,
    rsa_template,
    symcipher_template,
)
from support.session_client import CONTINUE, SHA256, ClientSession, Use, kdfa, run, start_auth_session_command
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import DEFAULT_OBJECT_SLOTS, TPM_ALG, TPM_CAP, TPM_CC, TPM_PT, TPM_RH, TPMA_OBJECT
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_H, RC_P, TPM_RC, rc_name
from vtpm_cuse.tpm.marshal import Reader, Struct
from vtpm_cuse.tpm.persistent import clear_owner_objects

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
SHUTDOWN_CLEAR = bytes.fromhex("80010000000c000001450000")
OWNER_HANDLE, OWNER_HANDLE_2, OWNER_LAST = 0x81000001, 0x81000002, 0x817FFFFF
PLATFORM_HANDLE = 0x81800000
READ_PUBLIC_OUT = Struct(
    "ReadPublic_Out", [("outPublic", T.TPM2B_PUBLIC), ("name", T.TPM2B_NAME), ("qualifiedName", T.TPM2B_NAME)]
)
SIGNING_KEY = ecc_template(SIGNING, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256)
#: The first two of Create's response parameters (the creation data is not looked at here).
CREATE_OUT = Struct("Create_Out", [("outPrivate", T.TPM2B_PRIVATE), ("outPublic", T.TPM2B_PUBLIC)])


def H(n: int) -> int:
    return RC_H | (n << 8)


def P(n: int) -> int:
    return RC_P | (n << 8)


def started(**options) -> EngineOracle:
    engine = EngineOracle(Engine(**options))
    assert Response(engine.execute(STARTUP_CLEAR)).rc == 0
    return engine


@pytest.fixture
def tpm() -> EngineOracle:
    return started()


def rc(tpm, cmd: bytes) -> int:
    return Response(tpm.execute(cmd)).rc


def ok(tpm, cmd: bytes) -> Response:
    resp = Response(tpm.execute(cmd))
    assert resp.rc == 0, rc_name(resp.rc)
    return resp


def handle_of(resp: Response) -> int:
    return int.from_bytes(resp.raw[10:14], "big")


def primary(tpm, area=None, hierarchy: int = TPM_RH.OWNER) -> int:
    return handle_of(ok(tpm, create_primary_cmd(area or ecc_template(), hierarchy)))


def evict_control_cmd(auth: int, obj: int, persistent: int) -> bytes:
    return command(TPM_CC.EvictControl, u32(persistent), u32(auth) + u32(obj), b"")


def read_public(tpm, handle: int):
    return READ_PUBLIC_OUT.unpack(ok(tpm, command(TPM_CC.ReadPublic, handles=u32(handle))).params())


def create_out(resp: Response):
    return CREATE_OUT.unmarshal(Reader(resp.params()))


def flush(tpm, handle: int) -> int:
    return rc(tpm, command(TPM_CC.FlushContext, u32(handle)))


def get_capability(tpm, cap: int, prop: int, count: int) -> tuple[bool, list]:
    params = ok(tpm, command(TPM_CC.GetCapability, u32(cap) + u32(prop) + u32(count))).params()
    return bool(params[0]), T.TPMS_CAPABILITY_DATA.unpack(params[1:]).data


def prop(tpm, pt: int) -> int:
    return get_capability(tpm, TPM_CAP.TPM_PROPERTIES, pt, 1)[1][0].value


def persist(tpm, obj: int, handle: int = OWNER_HANDLE, auth: int = TPM_RH.OWNER) -> None:
    ok(tpm, evict_control_cmd(auth, obj, handle))


def start_sequence(tpm) -> int:
    return handle_of(ok(tpm, command(TPM_CC.HashSequenceStart, tpm2b(b"") + u16(TPM_ALG.SHA256))))


# --- EvictControl both ways --------------------------------------------------------------------------


def test_evict_control_makes_an_object_persistent_and_evicts_it(tpm):
    transient = primary(tpm)
    before = read_public(tpm, transient)
    persist(tpm, transient)
    assert read_public(tpm, OWNER_HANDLE) == before  # same public area, Name and Qualified Name
    assert flush(tpm, transient) == 0  # the transient copy is independent of the NV one
    assert read_public(tpm, OWNER_HANDLE) == before
    assert get_capability(tpm, TPM_CAP.HANDLES, OWNER_HANDLE & 0xFF000000, 8) == (False, [OWNER_HANDLE])
    assert prop(tpm, TPM_PT.HR_PERSISTENT) == 1
    ok(tpm, evict_control_cmd(TPM_RH.OWNER, OWNER_HANDLE, OWNER_HANDLE))
    assert rc(tpm, command(TPM_CC.ReadPublic, handles=u32(OWNER_HANDLE))) == TPM_RC.HANDLE | H(1)
    assert get_capability(tpm, TPM_CAP.HANDLES, OWNER_HANDLE, 8) == (False, [])
    assert prop(tpm, TPM_PT.HR_PERSISTENT) == 0


def test_evict_control_with_the_owner_password(tpm):
    ok(tpm, command(TPM_CC.HierarchyChangeAuth, tpm2b(b"owner"), u32(TPM_RH.OWNER), b""))
    transient = primary(tpm, hierarchy=TPM_RH.ENDORSEMENT)  # endorsement objects are the owner's to persist
    cmd = command(TPM_CC.EvictControl, u32(OWNER_HANDLE), u32(TPM_RH.OWNER) + u32(transient), b"wrong")
    assert rc(tpm, cmd) in (TPM_RC.BAD_AUTH | 0x100 | 0x800, TPM_RC.AUTH_FAIL | 0x100 | 0x800)
    ok(tpm, command(TPM_CC.EvictControl, u32(OWNER_HANDLE), u32(TPM_RH.OWNER) + u32(transient), b"owner"))
    assert read_public(tpm, OWNER_HANDLE).name == read_public(tpm, transient).name


def test_platform_persists_platform_objects_and_evicts_anything(tpm):
    platform_obj = primary(tpm, hierarchy=TPM_RH.PLATFORM)
    owner_obj = primary(tpm)
    persist(tpm, platform_obj, PLATFORM_HANDLE, auth=TPM_RH.PLATFORM)
    persist(tpm, owner_obj, OWNER_HANDLE)
    # The owner can neither persist nor evict a platform object ...
    assert rc(tpm, evict_control_cmd(TPM_RH.OWNER, PLATFORM_HANDLE, PLATFORM_HANDLE)) == TPM_RC.HIERARCHY | H(2)
    assert rc(tpm, evict_control_cmd(TPM_RH.OWNER, platform_obj, OWNER_HANDLE_2)) == TPM_RC.HIERARCHY | H(2)
    # ... the platform can evict the owner's.
    ok(tpm, evict_control_cmd(TPM_RH.PLATFORM, OWNER_HANDLE, OWNER_HANDLE))
    ok(tpm, evict_control_cmd(TPM_RH.PLATFORM, PLATFORM_HANDLE, PLATFORM_HANDLE))
    assert get_capability(tpm, TPM_CAP.HANDLES, OWNER_HANDLE, 8) == (False, [])


# --- every error code, at its handle or parameter ------------------------------------------------------


def test_evict_control_errors(tpm):
    owner_obj = primary(tpm)
    temporary = primary(tpm, ecc_template(unique_x=b"t"), TPM_RH.NULL)
    st_clear = primary(tpm, rsa_template(attrs=STORAGE | TPMA_OBJECT.stClear, bits=1024))
    platform_obj = primary(tpm, hierarchy=TPM_RH.PLATFORM)
    persist(tpm, owner_obj)
    cases = [
        # temporary and stClear objects cannot outlive their RAM
        (evict_control_cmd(TPM_RH.OWNER, temporary, OWNER_HANDLE_2), TPM_RC.ATTRIBUTES | H(2)),
        (evict_control_cmd(TPM_RH.PLATFORM, st_clear, PLATFORM_HANDLE), TPM_RC.ATTRIBUTES | H(2)),
        # evicting: objectHandle must be persistentHandle
        (evict_control_cmd(TPM_RH.OWNER, OWNER_HANDLE, OWNER_HANDLE_2), TPM_RC.HANDLE | H(2)),
        # who may persist what, and where
        (evict_control_cmd(TPM_RH.PLATFORM, owner_obj, PLATFORM_HANDLE), TPM_RC.HIERARCHY | H(2)),
        (evict_control_cmd(TPM_RH.OWNER, platform_obj, OWNER_HANDLE_2), TPM_RC.HIERARCHY | H(2)),
        (evict_control_cmd(TPM_RH.OWNER, owner_obj, PLATFORM_HANDLE), TPM_RC.RANGE | P(1)),
        (evict_control_cmd(TPM_RH.PLATFORM, platform_obj, OWNER_LAST), TPM_RC.RANGE | P(1)),
        # a used handle
        (evict_control_cmd(TPM_RH.OWNER, owner_obj, OWNER_HANDLE), TPM_RC.NV_DEFINED),
        # interface types: only owner/platform authorize, persistentHandle is a persistent handle
        (evict_control_cmd(TPM_RH.ENDORSEMENT, owner_obj, OWNER_HANDLE_2), TPM_RC.VALUE | H(1)),
        (evict_control_cmd(TPM_RH.OWNER, owner_obj, 0x80000001), TPM_RC.VALUE | P(1)),
        # nothing there
        (evict_control_cmd(TPM_RH.OWNER, OWNER_HANDLE_2, OWNER_HANDLE_2), TPM_RC.HANDLE | H(2)),
    ]
    for cmd, expected in cases:
        assert rc(tpm, cmd) == expected, (rc_name(rc(tpm, cmd)), rc_name(expected))
    assert get_capability(tpm, TPM_CAP.HANDLES, OWNER_HANDLE, 8) == (False, [OWNER_HANDLE])


def test_a_sequence_cannot_be_made_persistent(tpm):
    sequence = start_sequence(tpm)
    # A sequence is a temporary object (libtpms agrees: tests/test_tpm_persistent_vs_swtpm.py).
    assert rc(tpm, evict_control_cmd(TPM_RH.OWNER, sequence, OWNER_HANDLE)) == TPM_RC.ATTRIBUTES | H(2)


def test_nv_space_when_the_persistent_limit_is_reached():
    tpm = started(max_persistent=1)
    assert prop(tpm, TPM_PT.HR_PERSISTENT_MIN) == 1
    obj = primary(tpm)
    persist(tpm, obj)
    assert prop(tpm, TPM_PT.HR_PERSISTENT_AVAIL) == 0
    assert rc(tpm, evict_control_cmd(TPM_RH.OWNER, obj, OWNER_HANDLE_2)) == TPM_RC.NV_SPACE
    ok(tpm, evict_control_cmd(TPM_RH.OWNER, OWNER_HANDLE, OWNER_HANDLE))
    assert prop(tpm, TPM_PT.HR_PERSISTENT_AVAIL) == 1
    persist(tpm, obj, OWNER_HANDLE_2)


def test_persistent_handles_cannot_be_flushed_or_context_saved(tpm):
    persist(tpm, primary(tpm))
    assert flush(tpm, OWNER_HANDLE) == TPM_RC.VALUE | P(1)
    assert rc(tpm, command(TPM_CC.ContextSave, handles=u32(OWNER_HANDLE))) == TPM_RC.VALUE | H(1)


def test_a_disabled_hierarchy_hides_its_persistent_objects(tpm):
    persist(tpm, primary(tpm))
    persist(tpm, primary(tpm, hierarchy=TPM_RH.ENDORSEMENT), OWNER_HANDLE_2)
    read_public(tpm, OWNER_HANDLE_2)
    tpm.volatile.eh_enable = False  # as TPM2_HierarchyControl would
    assert rc(tpm, command(TPM_CC.ReadPublic, handles=u32(OWNER_HANDLE_2))) == TPM_RC.HANDLE | H(1)
    read_public(tpm, OWNER_HANDLE)
    tpm.volatile.sh_enable = False
    assert rc(tpm, command(TPM_CC.ReadPublic, handles=u32(OWNER_HANDLE))) == TPM_RC.HANDLE | H(1)


# --- a persistent handle wherever a loaded object goes ---------------------------------------------------


def test_a_persistent_parent_creates_and_loads_children(tpm):
    srk = primary(tpm, rsa_template(attrs=STORAGE, bits=2048))
    persist(tpm, srk)
    assert flush(tpm, srk) == 0
    created = create_out(ok(tpm, create_cmd(OWNER_HANDLE, SIGNING_KEY)))
    child = handle_of(ok(tpm, load_cmd(OWNER_HANDLE, created.outPrivate, created.outPublic)))
    assert read_public(tpm, child).outPublic == created.outPublic
    # A sealed object under the persistent parent, then ObjectChangeAuth with it as parentHandle.
    sealed = create_out(ok(tpm, create_cmd(OWNER_HANDLE, keyedhash_template(), data=b"secret")))
    sealed_handle = handle_of(ok(tpm, load_cmd(OWNER_HANDLE, sealed.outPrivate, sealed.outPublic)))
    change = command(TPM_CC.ObjectChangeAuth, tpm2b(b"new"), u32(sealed_handle) + u32(OWNER_HANDLE), b"")
    new_private = T.TPM2B_PRIVATE.unpack(ok(tpm, change).params())
    ok(tpm, load_cmd(OWNER_HANDLE, new_private, sealed.outPublic))
    # CreateLoaded under the persistent parent.
    params = T.TPM2B_SENSITIVE_CREATE.pack(T.TPMS_SENSITIVE_CREATE(userAuth=b"", data=b"")) + tpm2b(
        T.TPMT_PUBLIC.pack(symcipher_template())
    )
    ok(tpm, command(TPM_CC.CreateLoaded, params, u32(OWNER_HANDLE), b""))


def test_a_persistent_key_salts_a_session_that_authorizes_its_own_use(tpm):
    srk = primary(tpm, rsa_template(attrs=STORAGE, bits=2048))
    public = read_public(tpm, srk)
    persist(tpm, srk)
    assert flush(tpm, srk) == 0
    key = rsa.RSAPublicNumbers(65537, int.from_bytes(public.outPublic.unique, "big")).public_key()
    salt = os.urandom(32)
    encrypted = key.encrypt(salt, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"SECRET\x00"))
    nonce_caller = os.urandom(32)
    resp = tpm.execute(start_auth_session_command(nonce_caller, tpm_key=OWNER_HANDLE, salt=encrypted))
    assert Response(resp).rc == 0
    nonce_tpm = resp[16:48]
    session = ClientSession(
        int.from_bytes(resp[10:14], "big"), SHA256, nonce_tpm, kdfa(SHA256, salt, b"ATH", nonce_tpm, nonce_caller, 256)
    )
    session.nonce_size = 32
    # HMAC authorization of the persistent parent: its Name goes into cpHash.
    result = run(
        tpm.execute,
        TPM_CC.Create,
        [(OWNER_HANDLE, public.name)],
        creation_params(SIGNING_KEY),
        [Use(session, CONTINUE, name=public.name, auth=b"")],
    )
    assert result.rc == 0, rc_name(result.rc)
    bad = start_auth_session_command(b"\x01" * 16, tpm_key=OWNER_HANDLE, salt=b"\x01" * 256)
    assert rc(tpm, bad) == TPM_RC.VALUE | P(2)


# --- persistence ------------------------------------------------------------------------------------------


def test_persistent_objects_survive_restart_and_a_new_engine(tpm):
    obj = primary(tpm)
    persist(tpm, obj)
    expected = read_public(tpm, OWNER_HANDLE)
    assert tpm.take_permanent_dirty()
    ok(tpm, SHUTDOWN_CLEAR)
    restored = EngineOracle(Engine.from_blobs(tpm.permanent_blob()))  # power cycle, daemon restart
    ok(restored, STARTUP_CLEAR)
    assert read_public(restored, OWNER_HANDLE) == expected
    assert get_capability(restored, TPM_CAP.HANDLES, OWNER_HANDLE, 8) == (False, [OWNER_HANDLE])
    # TPM Reset (disorderly) keeps it too, and it still parents objects.
    again = EngineOracle(Engine.from_blobs(restored.permanent_blob()))
    ok(again, STARTUP_CLEAR)
    ok(again, create_cmd(OWNER_HANDLE, symcipher_template()))


def test_clear_removes_owner_and_endorsement_objects_only(tpm):
    persist(tpm, primary(tpm))
    persist(tpm, primary(tpm, hierarchy=TPM_RH.ENDORSEMENT), OWNER_HANDLE_2)
    persist(tpm, primary(tpm, hierarchy=TPM_RH.PLATFORM), PLATFORM_HANDLE, auth=TPM_RH.PLATFORM)
    tpm.take_permanent_dirty()
    clear_owner_objects(tpm)
    assert tpm.take_permanent_dirty()
    assert get_capability(tpm, TPM_CAP.HANDLES, OWNER_HANDLE, 8) == (False, [PLATFORM_HANDLE])


def test_handle_listing_pages(tpm):
    obj = primary(tpm)
    handles = [0x81000001, 0x81000005, 0x81000100, 0x81010001]
    for handle in handles:
        persist(tpm, obj, handle)
    assert get_capability(tpm, TPM_CAP.HANDLES, 0x81000000, 2) == (True, handles[:2])
    assert get_capability(tpm, TPM_CAP.HANDLES, handles[1] + 1, 2) == (False, handles[2:])
    assert get_capability(tpm, TPM_CAP.HANDLES, 0x81000101, 8) == (False, handles[3:])
    # The transient listing is unaffected.
    assert get_capability(tpm, TPM_CAP.HANDLES, 0x80000000, 8) == (False, [obj])


# --- transient object slots --------------------------------------------------------------------------------


def test_default_slots_hold_more_than_libtpms(tpm):
    assert prop(tpm, TPM_PT.HR_TRANSIENT_MIN) == DEFAULT_OBJECT_SLOTS >= 16
    handles = [primary(tpm, ecc_template(unique_x=bytes([i]))) for i in range(DEFAULT_OBJECT_SLOTS - 1)]
    handles.append(start_sequence(tpm))
    assert len(set(handles)) == DEFAULT_OBJECT_SLOTS
    assert prop(tpm, TPM_PT.HR_TRANSIENT_AVAIL) == 0
    assert rc(tpm, create_primary_cmd(ecc_template(unique_x=b"x"))) == TPM_RC.OBJECT_MEMORY
    # The highest slot's handle is used like any other.
    read_public(tpm, max(h for h in handles[:-1]))


@pytest.mark.parametrize("slots", [1, 3, 5])
def test_slot_count_is_configurable(slots):
    tpm = started(max_objects=slots)
    assert prop(tpm, TPM_PT.HR_TRANSIENT_MIN) == slots
    for i in range(slots):
        primary(tpm, ecc_template(unique_x=bytes([i])))
    assert rc(tpm, create_primary_cmd(ecc_template(unique_x=b"x"))) == TPM_RC.OBJECT_MEMORY
    assert rc(tpm, command(TPM_CC.HashSequenceStart, tpm2b(b"") + u16(TPM_ALG.SHA256))) == TPM_RC.OBJECT_MEMORY
    # A handle beyond the slots is out of TPMI_DH_OBJECT's transient range.
    beyond = 0x80000000 + slots
    assert rc(tpm, command(TPM_CC.ReadPublic, handles=u32(beyond))) == TPM_RC.VALUE | H(1)
    assert flush(tpm, beyond) == TPM_RC.VALUE | P(1)
    # Persistent objects take no transient slot.
    handle = beyond - 1
    persist(tpm, handle)
    assert flush(tpm, handle) == 0
    read_public(tpm, OWNER_HANDLE)
    primary(tpm)


def test_slot_count_survives_a_volatile_snapshot_restore():
    tpm = started(max_objects=2)
    primary(tpm)
    restored = EngineOracle(Engine.from_blobs(tpm.permanent_blob(), tpm.volatile_blob(), max_objects=2))
    primary(restored, ecc_template(unique_x=b"2"))
    assert rc(restored, create_primary_cmd(ecc_template(unique_x=b"3"))) == TPM_RC.OBJECT_MEMORY


@pytest.mark.parametrize("bad", [0, 256, -1])
def test_bad_slot_counts_are_refused(bad):
    with pytest.raises(ValueError, match="max_objects"):
        Engine(max_objects=bad)
