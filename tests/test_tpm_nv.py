"""NV indices (Part 3, clause 31) through Engine.execute with real command bytes.

Each command, each index type, the attribute rules and the error paths with
their exact response codes (handle/parameter numbers included), Startup and
Shutdown effects, and state surviving a permanent-state round trip.
"""

from __future__ import annotations

import hashlib

import pytest

from support.engine_oracle import EngineOracle
from support.session_client import SE_POLICY, Use, run, start_session
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import nv_index
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_HT, TPM_NT, TPM_PT, TPM_RH, TPMA_NV
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_P, RC_S, TPM_RC

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
STARTUP_STATE = bytes.fromhex("80010000000c000001440001")
SHUTDOWN_CLEAR = bytes.fromhex("80010000000c000001450000")
SHUTDOWN_STATE = bytes.fromhex("80010000000c000001450001")

INDEX = 0x01500010
OWNER_RW = TPMA_NV.OWNERREAD | TPMA_NV.OWNERWRITE
AUTH_RW = TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE


def P(n: int) -> int:
    return RC_P | (n << 8)


def H(n: int) -> int:
    return n << 8


def S(n: int) -> int:
    return RC_S | (n << 8)


def nt(kind: int) -> int:
    return kind << 4


def nv_public(index: int, attrs: int, size: int, policy: bytes = b"", alg: int = TPM_ALG.SHA256) -> bytes:
    body = u32(index) + u16(alg) + u32(attrs) + tpm2b(policy) + u16(size)
    return tpm2b(body)


def power_cycle(tpm: EngineOracle) -> EngineOracle:
    """_TPM_Init: RAM is lost, NV stays."""
    fresh = EngineOracle(Engine.from_blobs(tpm.permanent_blob()))
    assert Response(fresh.execute(STARTUP_CLEAR)).rc == 0
    return fresh


@pytest.fixture
def tpm() -> EngineOracle:
    engine = EngineOracle(Engine())
    assert Response(engine.execute(STARTUP_CLEAR)).rc == 0
    return engine


def rc(tpm, cmd: bytes) -> int:
    return Response(tpm.execute(cmd)).rc


def define(tpm, index=INDEX, attrs=OWNER_RW, size=8, auth=b"", policy=b"", by=TPM_RH.OWNER, alg=TPM_ALG.SHA256):
    body = tpm2b(auth) + nv_public(index, attrs, size, policy, alg)
    return rc(tpm, command(TPM_CC.NV_DefineSpace, body, u32(by), auth=b""))


def write(tpm, data: bytes, offset=0, index=INDEX, by=TPM_RH.OWNER, pw=b""):
    return rc(tpm, command(TPM_CC.NV_Write, tpm2b(data) + u16(offset), u32(by) + u32(index), auth=pw))


def read(tpm, size=8, offset=0, index=INDEX, by=TPM_RH.OWNER, pw=b""):
    resp = Response(tpm.execute(command(TPM_CC.NV_Read, u16(size) + u16(offset), u32(by) + u32(index), auth=pw)))
    if resp.rc:
        return resp.rc, None
    data = resp.params()
    return 0, data[2 : 2 + int.from_bytes(data[:2], "big")]


def simple(tpm, code, index=INDEX, by=TPM_RH.OWNER, body=b"", pw=b""):
    return rc(tpm, command(code, body, u32(by) + u32(index), auth=pw))


def read_public(tpm, index=INDEX) -> tuple[int, bytes, bytes]:
    resp = Response(tpm.execute(command(TPM_CC.NV_ReadPublic, handles=u32(index))))
    if resp.rc:
        return resp.rc, b"", b""
    p = resp.params()
    size = int.from_bytes(p[:2], "big")
    pub, rest = p[2 : 2 + size], p[2 + size :]
    return 0, pub, rest[2:]


def attributes(tpm, index=INDEX) -> int:
    code, pub, _ = read_public(tpm, index)
    assert code == 0
    return int.from_bytes(pub[6:10], "big")


# --- define, read public, name --------------------------------------------------------------------


def test_define_write_read_and_name(tpm):
    assert define(tpm, size=16) == 0
    code, pub, name = read_public(tpm)
    assert code == 0 and pub == nv_public(INDEX, OWNER_RW, 16)[2:]
    assert name == u16(TPM_ALG.SHA256) + hashlib.sha256(pub).digest()
    assert write(tpm, b"hello", offset=3) == 0
    assert read(tpm, 16) == (0, b"\xff\xff\xffhello" + b"\xff" * 8)
    assert read(tpm, 5, 3) == (0, b"hello")
    # WRITTEN is part of the public area, so the Name changes with the first write.
    _, pub2, name2 = read_public(tpm)
    assert int.from_bytes(pub2[6:10], "big") == OWNER_RW | TPMA_NV.WRITTEN and name2 != name


def test_define_twice_and_undefined_handles(tpm):
    assert define(tpm) == 0
    assert define(tpm) == TPM_RC.NV_DEFINED
    assert read_public(tpm, INDEX + 1)[0] == TPM_RC.HANDLE | H(1)
    assert write(tpm, b"x", index=INDEX + 1) == TPM_RC.HANDLE | H(2)


def test_define_attribute_checks(tpm):
    bad = [
        (OWNER_RW | TPMA_NV.WRITTEN, P(2)),
        (OWNER_RW | TPMA_NV.WRITELOCKED, P(2)),
        (TPMA_NV.OWNERWRITE, P(2)),  # no way to read
        (TPMA_NV.OWNERREAD, P(2)),  # no way to write
        (OWNER_RW | TPMA_NV.CLEAR_STCLEAR | TPMA_NV.WRITEDEFINE, P(2)),
        (OWNER_RW | TPMA_NV.POLICY_DELETE, P(2)),
        (OWNER_RW | TPMA_NV.PLATFORMCREATE, H(1)),
        (OWNER_RW | nt(3), P(2)),  # TPM_NT 3 is not an index type
        (OWNER_RW | nt(TPM_NT.COUNTER) | TPMA_NV.CLEAR_STCLEAR, P(2)),
    ]
    for attrs, where in bad:
        assert define(tpm, attrs=attrs) == TPM_RC.ATTRIBUTES | where, hex(attrs)
    assert define(tpm, attrs=OWNER_RW | (1 << 8)) == TPM_RC.RESERVED_BITS | P(2)
    # The platform must set PLATFORMCREATE.
    assert define(tpm, by=TPM_RH.PLATFORM) == TPM_RC.ATTRIBUTES | H(1)


def test_define_size_checks(tpm):
    assert define(tpm, size=2049) == TPM_RC.SIZE | P(2)
    assert define(tpm, attrs=OWNER_RW | nt(TPM_NT.COUNTER), size=4) == TPM_RC.SIZE | P(2)
    assert define(tpm, attrs=OWNER_RW | nt(TPM_NT.EXTEND), size=20) == TPM_RC.SIZE | P(2)
    assert define(tpm, policy=bytes(20)) == TPM_RC.SIZE | P(2)
    assert define(tpm, auth=bytes(range(1, 34))) == TPM_RC.SIZE | P(1)
    assert define(tpm, attrs=OWNER_RW | TPMA_NV.WRITEALL, size=1025) == TPM_RC.SIZE | P(2)
    assert define(tpm, alg=TPM_ALG.NULL) == TPM_RC.HASH | P(2)


def test_pin_define_rules(tpm):
    pin_fail = OWNER_RW | nt(TPM_NT.PIN_FAIL)
    assert define(tpm, attrs=pin_fail) == TPM_RC.ATTRIBUTES | P(2)  # needs NO_DA
    assert define(tpm, attrs=pin_fail | TPMA_NV.NO_DA | TPMA_NV.AUTHWRITE) == TPM_RC.ATTRIBUTES | P(2)
    assert define(tpm, attrs=pin_fail | TPMA_NV.NO_DA) == 0


def test_nv_space_budget():
    tpm = EngineOracle(Engine(nv_size=3 * (nv_index.NV_INDEX_OVERHEAD + 512)))
    assert Response(tpm.execute(STARTUP_CLEAR)).rc == 0
    for i in range(3):
        assert define(tpm, index=INDEX + i, size=512) == 0
    assert define(tpm, index=INDEX + 3, size=512) == TPM_RC.NV_SPACE
    assert simple(tpm, TPM_CC.NV_UndefineSpace, INDEX) == 0
    assert define(tpm, index=INDEX + 3, size=512) == 0


# --- write / read rules ------------------------------------------------------------------------------


def test_write_ranges(tpm):
    assert define(tpm, size=8) == 0
    assert write(tpm, b"x", offset=9) == TPM_RC.VALUE | P(2)
    assert write(tpm, b"123456789") == TPM_RC.NV_RANGE
    assert write(tpm, b"12", offset=7) == TPM_RC.NV_RANGE
    assert read(tpm, 8) == (TPM_RC.NV_UNINITIALIZED, None)
    assert write(tpm, b"12345678") == 0
    assert read(tpm, 9) == (TPM_RC.NV_RANGE, None)
    assert read(tpm, 1, 9) == (TPM_RC.VALUE | P(2), None)
    assert read(tpm, 1025) == (TPM_RC.VALUE | P(1), None)


def test_writeall(tpm):
    assert define(tpm, attrs=OWNER_RW | TPMA_NV.WRITEALL, size=4) == 0
    assert write(tpm, b"12") == TPM_RC.NV_RANGE
    assert write(tpm, b"1234") == 0


def test_authorization_attributes(tpm):
    assert define(tpm, attrs=TPMA_NV.AUTHREAD | TPMA_NV.PPWRITE, auth=b"secret") == 0
    assert write(tpm, b"x") == TPM_RC.NV_AUTHORIZATION  # OWNERWRITE clear
    assert write(tpm, b"x", by=INDEX, pw=b"secret") == TPM_RC.AUTH_UNAVAILABLE  # AUTHWRITE clear
    assert write(tpm, b"x", by=TPM_RH.PLATFORM) == 0
    assert read(tpm, 1) == (TPM_RC.NV_AUTHORIZATION, None)
    assert read(tpm, 1, by=TPM_RH.PLATFORM) == (TPM_RC.NV_AUTHORIZATION, None)
    assert read(tpm, 1, by=INDEX, pw=b"secret") == (0, b"x")
    assert read(tpm, 1, by=INDEX, pw=b"wrong") == (TPM_RC.AUTH_FAIL | S(1), None)
    # Another index cannot authorize this one.
    assert define(tpm, index=INDEX + 1, attrs=AUTH_RW) == 0
    assert read(tpm, 1, by=INDEX + 1) == (TPM_RC.NV_AUTHORIZATION, None)


def test_no_da_index_answers_bad_auth(tpm):
    assert define(tpm, attrs=AUTH_RW | TPMA_NV.NO_DA, auth=b"pw") == 0
    assert write(tpm, b"x", by=INDEX, pw=b"nope") == TPM_RC.BAD_AUTH | S(1)
    assert write(tpm, b"x", by=INDEX, pw=b"pw") == 0


def test_index_without_auth_bits_refuses_password(tpm):
    assert define(tpm, attrs=OWNER_RW) == 0
    assert write(tpm, b"x", by=INDEX) == TPM_RC.AUTH_UNAVAILABLE


def test_change_auth_needs_policy(tpm):
    policy = hashlib.sha256(bytes(32) + u32(TPM_CC.PolicyCommandCode) + u32(TPM_CC.NV_ChangeAuth)).digest()
    assert define(tpm, attrs=AUTH_RW | TPMA_NV.NO_DA, auth=b"old", policy=policy) == 0
    change = command(TPM_CC.NV_ChangeAuth, tpm2b(b"new"), u32(INDEX), auth=b"old")
    assert rc(tpm, change) == TPM_RC.AUTH_TYPE
    session = start_session(tpm.execute, SE_POLICY)
    resp = tpm.execute(command(TPM_CC.PolicyCommandCode, u32(TPM_CC.NV_ChangeAuth), u32(session.handle)))
    assert Response(resp).rc == 0
    _, _, name = read_public(tpm)
    assert run(tpm.execute, TPM_CC.NV_ChangeAuth, [(INDEX, name)], tpm2b(b"new"), [Use(session, 0, name)]).rc == 0
    assert write(tpm, b"x", by=INDEX, pw=b"old") == TPM_RC.BAD_AUTH | S(1)
    assert write(tpm, b"x", by=INDEX, pw=b"new") == 0


# --- index types ---------------------------------------------------------------------------------------


def test_counter(tpm):
    counter = OWNER_RW | nt(TPM_NT.COUNTER)
    assert define(tpm, attrs=counter) == 0
    assert write(tpm, bytes(8)) == TPM_RC.ATTRIBUTES
    assert read(tpm) == (TPM_RC.NV_UNINITIALIZED, None)
    for _ in range(3):
        assert simple(tpm, TPM_CC.NV_Increment) == 0
    assert read(tpm) == (0, (3).to_bytes(8, "big"))
    # A new counter starts above every counter ever deleted.
    assert simple(tpm, TPM_CC.NV_UndefineSpace, INDEX) == 0
    assert define(tpm, attrs=counter) == 0
    assert simple(tpm, TPM_CC.NV_Increment) == 0
    assert read(tpm) == (0, (4).to_bytes(8, "big"))


def test_increment_of_other_types(tpm):
    assert define(tpm) == 0
    assert simple(tpm, TPM_CC.NV_Increment) == TPM_RC.ATTRIBUTES | H(2)
    assert simple(tpm, TPM_CC.NV_SetBits, body=bytes(8)) == TPM_RC.ATTRIBUTES | H(2)
    assert simple(tpm, TPM_CC.NV_Extend, body=tpm2b(b"x")) == TPM_RC.ATTRIBUTES | H(2)


def test_bits(tpm):
    assert define(tpm, attrs=OWNER_RW | nt(TPM_NT.BITS)) == 0
    assert write(tpm, bytes(8)) == TPM_RC.ATTRIBUTES
    assert simple(tpm, TPM_CC.NV_SetBits, body=(0x11).to_bytes(8, "big")) == 0
    assert simple(tpm, TPM_CC.NV_SetBits, body=(0x0100).to_bytes(8, "big")) == 0
    assert read(tpm) == (0, (0x0111).to_bytes(8, "big"))


def test_extend(tpm):
    assert define(tpm, attrs=OWNER_RW | nt(TPM_NT.EXTEND), size=32) == 0
    assert write(tpm, bytes(32)) == TPM_RC.ATTRIBUTES
    assert simple(tpm, TPM_CC.NV_Extend, body=tpm2b(b"abc")) == 0
    first = hashlib.sha256(bytes(32) + b"abc").digest()
    assert read(tpm, 32) == (0, first)
    assert simple(tpm, TPM_CC.NV_Extend, body=tpm2b(b"def")) == 0
    assert read(tpm, 32) == (0, hashlib.sha256(first + b"def").digest())


def test_extend_sha1(tpm):
    assert define(tpm, attrs=OWNER_RW | nt(TPM_NT.EXTEND), size=20, alg=TPM_ALG.SHA1) == 0
    assert simple(tpm, TPM_CC.NV_Extend, body=tpm2b(b"x")) == 0
    assert read(tpm, 20) == (0, hashlib.sha1(bytes(20) + b"x").digest())


def test_pin_pass(tpm):
    attrs = OWNER_RW | TPMA_NV.NO_DA | nt(TPM_NT.PIN_PASS)
    assert define(tpm, attrs=attrs, auth=b"pin") == 0
    # Not usable before it is written.
    assert read(tpm, by=INDEX, pw=b"pin") == (TPM_RC.AUTH_UNAVAILABLE, None)
    assert write(tpm, u32(0) + u32(2)) == 0  # pinCount 0, pinLimit 2
    assert read(tpm, by=INDEX, pw=b"pin") == (0, u32(0) + u32(2))
    assert read(tpm, by=INDEX, pw=b"pin") == (0, u32(1) + u32(2))
    assert read(tpm, by=INDEX, pw=b"pin") == (TPM_RC.AUTH_UNAVAILABLE, None)
    assert read(tpm) == (0, u32(2) + u32(2))


# --- locks ----------------------------------------------------------------------------------------------


def test_write_lock_stclear(tpm):
    assert define(tpm, attrs=OWNER_RW | TPMA_NV.WRITE_STCLEAR) == 0
    assert write(tpm, b"a") == 0
    assert simple(tpm, TPM_CC.NV_WriteLock) == 0
    assert simple(tpm, TPM_CC.NV_WriteLock) == 0  # already locked: no error
    assert write(tpm, b"b") == TPM_RC.NV_LOCKED
    assert attributes(tpm) & TPMA_NV.WRITELOCKED
    tpm = power_cycle(tpm)
    assert write(tpm, b"b") == 0


def test_write_lock_writedefine_is_permanent(tpm):
    assert define(tpm, attrs=OWNER_RW | TPMA_NV.WRITEDEFINE) == 0
    assert simple(tpm, TPM_CC.NV_WriteLock) == 0
    # Not written yet: the lock ends at the next Startup.
    tpm = power_cycle(tpm)
    assert write(tpm, b"a") == 0
    assert simple(tpm, TPM_CC.NV_WriteLock) == 0
    tpm = power_cycle(tpm)
    assert write(tpm, b"b") == TPM_RC.NV_LOCKED


def test_write_lock_needs_attribute(tpm):
    assert define(tpm) == 0
    assert simple(tpm, TPM_CC.NV_WriteLock) == TPM_RC.ATTRIBUTES | H(2)
    assert simple(tpm, TPM_CC.NV_ReadLock) == TPM_RC.ATTRIBUTES | H(2)


def test_read_lock(tpm):
    assert define(tpm, attrs=OWNER_RW | TPMA_NV.READ_STCLEAR) == 0
    assert write(tpm, b"a") == 0
    assert simple(tpm, TPM_CC.NV_ReadLock) == 0
    assert read(tpm, 1) == (TPM_RC.NV_LOCKED, None)
    assert simple(tpm, TPM_CC.NV_ReadLock) == 0
    tpm = power_cycle(tpm)
    assert read(tpm, 1) == (0, b"a")


def test_global_write_lock(tpm):
    assert define(tpm, attrs=OWNER_RW | TPMA_NV.GLOBALLOCK) == 0
    assert define(tpm, index=INDEX + 1) == 0
    assert rc(tpm, command(TPM_CC.NV_GlobalWriteLock, handles=u32(TPM_RH.OWNER), auth=b"")) == 0
    assert write(tpm, b"a") == TPM_RC.NV_LOCKED
    assert write(tpm, b"a", index=INDEX + 1) == 0
    tpm = power_cycle(tpm)
    assert write(tpm, b"a") == 0


def test_clear_stclear(tpm):
    assert define(tpm, attrs=OWNER_RW | TPMA_NV.CLEAR_STCLEAR) == 0
    assert write(tpm, b"a") == 0
    assert rc(tpm, SHUTDOWN_STATE) == 0
    tpm.volatile.started = False
    assert rc(tpm, STARTUP_STATE) == 0  # Resume keeps it
    assert read(tpm, 1) == (0, b"a")
    tpm = power_cycle(tpm)
    assert read(tpm, 1) == (TPM_RC.NV_UNINITIALIZED, None)


# --- ORDERLY -----------------------------------------------------------------------------------------------


def test_orderly_index_is_saved_by_orderly_shutdown(tpm):
    assert define(tpm, attrs=OWNER_RW | TPMA_NV.ORDERLY) == 0
    assert write(tpm, b"abc") == 0
    lost = power_cycle(tpm)  # no Shutdown: the RAM copy is gone
    assert read(lost, 3) == (TPM_RC.NV_UNINITIALIZED, None)
    assert write(tpm, b"abc") == 0
    assert rc(tpm, SHUTDOWN_STATE) == 0
    engine = EngineOracle(Engine.from_blobs(tpm.permanent_blob()))
    assert rc(engine, STARTUP_CLEAR) == 0  # TPM Restart keeps orderly data
    assert read(engine, 3) == (0, b"abc")


def test_orderly_counter_keeps_high_water_mark(tpm):
    assert define(tpm, attrs=OWNER_RW | TPMA_NV.ORDERLY | nt(TPM_NT.COUNTER)) == 0
    for _ in range(5):
        assert simple(tpm, TPM_CC.NV_Increment) == 0
    assert rc(tpm, SHUTDOWN_CLEAR) == 0
    tpm = power_cycle(tpm)
    assert read(tpm) == (0, (5).to_bytes(8, "big"))
    for _ in range(3):
        assert simple(tpm, TPM_CC.NV_Increment) == 0
    # Disorderly: the value (8) was only in RAM, the TPM must not go back below it.
    tpm = power_cycle(tpm)
    code, data = read(tpm)
    assert code == 0 and int.from_bytes(data, "big") == 0xFF
    assert simple(tpm, TPM_CC.NV_Increment) == 0
    assert read(tpm) == (0, (0x100).to_bytes(8, "big"))
    # The rollover wrote through: another disorderly reset keeps 0x100 as the floor.
    tpm = power_cycle(tpm)
    assert int.from_bytes(read(tpm)[1], "big") == 0x1FF


# --- undefine ----------------------------------------------------------------------------------------------


def test_undefine_rules(tpm):
    assert define(tpm, attrs=TPMA_NV.PPREAD | TPMA_NV.PPWRITE | TPMA_NV.PLATFORMCREATE, by=TPM_RH.PLATFORM) == 0
    assert simple(tpm, TPM_CC.NV_UndefineSpace) == TPM_RC.NV_AUTHORIZATION
    assert simple(tpm, TPM_CC.NV_UndefineSpace, by=TPM_RH.PLATFORM) == 0
    assert read_public(tpm)[0] == TPM_RC.HANDLE | H(1)


def test_undefine_space_special(tpm):
    policy = hashlib.sha256(bytes(32) + u32(TPM_CC.PolicyCommandCode) + u32(TPM_CC.NV_UndefineSpaceSpecial)).digest()
    attrs = TPMA_NV.PPREAD | TPMA_NV.PPWRITE | TPMA_NV.PLATFORMCREATE | TPMA_NV.POLICY_DELETE
    assert define(tpm, attrs=attrs, by=TPM_RH.PLATFORM, policy=policy) == 0
    assert simple(tpm, TPM_CC.NV_UndefineSpace, by=TPM_RH.PLATFORM) == TPM_RC.ATTRIBUTES | H(2)
    session = start_session(tpm.execute, SE_POLICY)
    resp = tpm.execute(command(TPM_CC.PolicyCommandCode, u32(TPM_CC.NV_UndefineSpaceSpecial), u32(session.handle)))
    assert Response(resp).rc == 0
    _, _, name = read_public(tpm)
    handles = [(INDEX, name), (TPM_RH.PLATFORM, u32(TPM_RH.PLATFORM))]
    uses = [Use(session, 0, name), Use(None, 1, u32(TPM_RH.PLATFORM))]
    assert run(tpm.execute, TPM_CC.NV_UndefineSpaceSpecial, handles, b"", uses).rc == 0
    assert read_public(tpm)[0] == TPM_RC.HANDLE | H(1)


def test_undefine_space_special_needs_policy_delete(tpm):
    assert define(tpm, attrs=TPMA_NV.PPREAD | TPMA_NV.PPWRITE | TPMA_NV.PLATFORMCREATE, by=TPM_RH.PLATFORM) == 0
    handles = u32(INDEX) + u32(TPM_RH.PLATFORM)
    cmd = command(TPM_CC.NV_UndefineSpaceSpecial, handles=handles, auth=b"")
    assert rc(tpm, cmd) == TPM_RC.AUTH_MISSING  # both handles need authorization
    pw = u32(TPM_RH.PW) + u16(0) + b"\x01" + u16(0)
    body = handles + u32(2 * len(pw)) + pw + pw
    cmd = u16(0x8002) + u32(10 + len(body)) + u32(TPM_CC.NV_UndefineSpaceSpecial) + body
    # A password for the ADMIN role of an NV index: a policy session is needed.
    assert rc(tpm, cmd) == TPM_RC.AUTH_TYPE


def test_clear_owner_indices(tpm):
    assert define(tpm) == 0
    assert define(tpm, index=INDEX + 1, attrs=TPMA_NV.PPREAD | TPMA_NV.PPWRITE | TPMA_NV.PLATFORMCREATE,
                  by=TPM_RH.PLATFORM) == 0  # fmt: skip
    nv_index.clear_owner_indices(tpm.engine)
    assert read_public(tpm)[0] == TPM_RC.HANDLE | H(1)
    assert read_public(tpm, INDEX + 1)[0] == 0


# --- hierarchy rules -------------------------------------------------------------------------------------


def test_ph_enable_nv_clear_hides_platform_indices(tpm):
    platform = TPMA_NV.PPREAD | TPMA_NV.PPWRITE | TPMA_NV.PLATFORMCREATE
    assert define(tpm, attrs=platform, by=TPM_RH.PLATFORM) == 0
    tpm.volatile.ph_enable_nv = False
    assert read_public(tpm)[0] == TPM_RC.HANDLE | H(1)
    assert define(tpm, index=INDEX + 1, attrs=platform, by=TPM_RH.PLATFORM) == TPM_RC.HIERARCHY | H(1)


# --- capability and persistence ------------------------------------------------------------------------------


def get_capability(tpm, cap: int, prop: int, count: int) -> bytes:
    resp = Response(tpm.execute(command(TPM_CC.GetCapability, u32(cap) + u32(prop) + u32(count))))
    assert resp.rc == 0
    return resp.params()


def test_capability_handles_paging_and_properties(tpm):
    for i in range(3):
        assert define(tpm, index=INDEX + i, attrs=OWNER_RW | (nt(TPM_NT.COUNTER) if i else 0)) == 0
    first = TPM_HT.NV_INDEX << 24
    data = get_capability(tpm, TPM_CAP.HANDLES, first, 2)
    assert data == b"\x01" + u32(TPM_CAP.HANDLES) + u32(2) + u32(INDEX) + u32(INDEX + 1)
    data = get_capability(tpm, TPM_CAP.HANDLES, INDEX + 2, 5)
    assert data == b"\x00" + u32(TPM_CAP.HANDLES) + u32(1) + u32(INDEX + 2)
    props = get_capability(tpm, TPM_CAP.TPM_PROPERTIES, TPM_PT.HR_NV_INDEX, 1)
    assert props[-8:] == u32(TPM_PT.HR_NV_INDEX) + u32(3)
    props = get_capability(tpm, TPM_CAP.TPM_PROPERTIES, TPM_PT.NV_COUNTERS, 2)
    assert props[9:13] == u32(TPM_PT.NV_COUNTERS) and props[13:17] == u32(2)
    assert int.from_bytes(props[-4:], "big") == nv_index.counters_available(tpm.engine) > 0


def test_state_survives_permanent_blob(tpm):
    assert define(tpm, attrs=AUTH_RW | TPMA_NV.NO_DA, auth=b"pw", size=4) == 0
    assert write(tpm, b"data", by=INDEX, pw=b"pw") == 0
    assert define(tpm, index=INDEX + 1, attrs=OWNER_RW | nt(TPM_NT.COUNTER)) == 0
    assert simple(tpm, TPM_CC.NV_Increment, INDEX + 1) == 0
    _, pub, name = read_public(tpm)
    tpm = power_cycle(tpm)
    assert read_public(tpm)[1:] == (pub, name)
    assert read(tpm, 4, by=INDEX, pw=b"pw") == (0, b"data")
    assert read(tpm, 8, index=INDEX + 1) == (0, (1).to_bytes(8, "big"))
