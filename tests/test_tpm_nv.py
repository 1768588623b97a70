"""NV indices (Part 3, clause 31) through Engine.execute with real command bytes.

Each command, each index type, the attribute rules and the error paths with
their exact response codes (handle/parameter numbers included), Startup and
Shutdown effects, and state surviving a permanent-state round trip.
"""

from __future__ import annotations

import hashlib

import pytest

from support.engine_oracle import EngineOracle
from support.session_client import SE_HMAC, SE_POLICY, Use, run, start_session
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import nv_index
from vtpm_cuse.tpm.command import AuthRole, CommandTable
from vtpm_cuse.tpm.command import H as HandleSpec
from vtpm_cuse.tpm.command import command as declare_command
from vtpm_cuse.tpm.commands import COMMANDS
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_HT, TPM_NT, TPM_PT, TPM_RH, TPMA_NV
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_P, RC_S, TPM_RC
from vtpm_cuse.tpm.types import TPMI_DH_ENTITY

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
    # The use is counted when the session is checked, before the command reads the data.
    assert read(tpm, by=INDEX, pw=b"pin") == (0, u32(1) + u32(2))
    assert read(tpm, by=INDEX, pw=b"pin") == (0, u32(2) + u32(2))
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


# --- the index's own authorization, decided by the sessions -------------------------------------------


def name_of(tpm, index=INDEX) -> bytes:
    return read_public(tpm, index)[2]


def via_session(tpm, session, cc, params: bytes, auth: bytes = b"", index=INDEX, **use) -> int:
    """``cc`` with ``index`` authorizing itself through ``session`` (HMAC or policy)."""
    name = name_of(tpm, index)
    handles = [(index, name), (index, name)]
    code = run(tpm.execute, cc, handles, params, [Use(session, 0, name, auth, **use)], check=False).rc
    if code:  # a failed command leaves the session loaded
        assert rc(tpm, command(TPM_CC.FlushContext, u32(session.handle))) == 0
    return code


def hmac_read(tpm, auth: bytes, index=INDEX) -> int:
    return via_session(tpm, start_session(tpm.execute, SE_HMAC), TPM_CC.NV_Read, u16(8) + u16(0), auth, index)


def hmac_write(tpm, data: bytes, auth: bytes, index=INDEX) -> int:
    session = start_session(tpm.execute, SE_HMAC)
    return via_session(tpm, session, TPM_CC.NV_Write, tpm2b(data) + u16(0), auth, index)


def pin_count(tpm, index=INDEX) -> int:
    """pinCount of a PIN index with OWNERREAD."""
    code, data = read(tpm, 8, index=index)
    assert code == 0
    return int.from_bytes(data[:4], "big")


def test_authread_clear_refuses_value_before_checking_it(tpm):
    # DA-protected: a wrong password would be TPM_RC_AUTH_FAIL and counted, if it were looked at.
    assert define(tpm, attrs=TPMA_NV.AUTHWRITE | TPMA_NV.OWNERREAD, auth=b"pw") == 0
    assert write(tpm, b"12345678", by=INDEX, pw=b"pw") == 0
    assert read(tpm, by=INDEX, pw=b"wrong") == (TPM_RC.AUTH_UNAVAILABLE, None)
    assert read(tpm, by=INDEX, pw=b"pw") == (TPM_RC.AUTH_UNAVAILABLE, None)
    assert hmac_read(tpm, b"wrong") == TPM_RC.AUTH_UNAVAILABLE
    assert hmac_read(tpm, b"pw") == TPM_RC.AUTH_UNAVAILABLE
    assert tpm.permanent.da_failed_tries == 0
    # A write operation needs AUTHWRITE, which is SET: there the value is checked and counted.
    assert write(tpm, b"x", by=INDEX, pw=b"wrong") == TPM_RC.AUTH_FAIL | S(1)
    assert hmac_write(tpm, b"x", b"wrong") == TPM_RC.AUTH_FAIL | S(1)
    assert hmac_write(tpm, b"x", b"pw") == 0
    assert tpm.permanent.da_failed_tries == 2
    assert read(tpm) == (0, b"x2345678")


def test_authwrite_clear_refuses_every_write_operation(tpm):
    base = TPMA_NV.AUTHREAD | TPMA_NV.OWNERWRITE | TPMA_NV.NO_DA
    for i, (kind, code, body) in enumerate(
        [
            (TPM_NT.ORDINARY, TPM_CC.NV_Write, tpm2b(b"x") + u16(0)),
            (TPM_NT.COUNTER, TPM_CC.NV_Increment, b""),
            (TPM_NT.BITS, TPM_CC.NV_SetBits, bytes(8)),
            (TPM_NT.ORDINARY | 0, TPM_CC.NV_WriteLock, b""),
        ]
    ):
        attrs = base | nt(kind) | (TPMA_NV.WRITE_STCLEAR if code == TPM_CC.NV_WriteLock else 0)
        assert define(tpm, index=INDEX + i, attrs=attrs, auth=b"pw") == 0
        for pw in (b"pw", b"wrong"):
            assert simple(tpm, code, INDEX + i, by=INDEX + i, body=body, pw=pw) == TPM_RC.AUTH_UNAVAILABLE
    assert define(tpm, index=INDEX + 9, attrs=base | nt(TPM_NT.EXTEND), size=32, auth=b"pw") == 0
    assert simple(tpm, TPM_CC.NV_Extend, INDEX + 9, by=INDEX + 9, body=tpm2b(b"x"), pw=b"pw") == TPM_RC.AUTH_UNAVAILABLE
    assert hmac_write(tpm, b"x", b"wrong") == TPM_RC.AUTH_UNAVAILABLE
    # NV_ReadLock is a read operation: AUTHREAD is enough.
    assert define(tpm, index=INDEX + 10, attrs=base | TPMA_NV.READ_STCLEAR, auth=b"pw") == 0
    assert simple(tpm, TPM_CC.NV_ReadLock, INDEX + 10, by=INDEX + 10, pw=b"pw") == 0


def test_policy_bits(tpm):
    # The empty policy (a fresh session's digest) as authPolicy.
    assert define(tpm, attrs=TPMA_NV.POLICYWRITE | TPMA_NV.OWNERREAD | TPMA_NV.NO_DA, policy=bytes(32)) == 0
    policy_write = tpm2b(b"x") + u16(0)
    assert via_session(tpm, start_session(tpm.execute, SE_POLICY), TPM_CC.NV_Write, policy_write) == 0
    assert via_session(tpm, start_session(tpm.execute, SE_POLICY), TPM_CC.NV_Read, u16(1) + u16(0)) == (
        TPM_RC.AUTH_UNAVAILABLE
    )
    # POLICYREAD SET: the policy is checked (and here does not match).
    other = bytes([1]) * 32
    assert define(tpm, index=INDEX + 1, attrs=TPMA_NV.POLICYREAD | TPMA_NV.OWNERWRITE, policy=other) == 0
    assert write(tpm, b"x", index=INDEX + 1) == 0
    session = start_session(tpm.execute, SE_POLICY)
    assert via_session(tpm, session, TPM_CC.NV_Read, u16(1) + u16(0), index=INDEX + 1) == TPM_RC.POLICY_FAIL | S(1)
    # POLICYREAD CLEAR is answered before the digest is compared.
    assert define(tpm, index=INDEX + 2, attrs=TPMA_NV.POLICYWRITE | TPMA_NV.OWNERREAD, policy=other) == 0
    session = start_session(tpm.execute, SE_POLICY)
    assert via_session(tpm, session, TPM_CC.NV_Read, u16(1) + u16(0), index=INDEX + 2) == TPM_RC.AUTH_UNAVAILABLE
    # POLICYREAD SET but no authPolicy: nothing to satisfy.
    assert define(tpm, index=INDEX + 3, attrs=TPMA_NV.POLICYREAD | TPMA_NV.OWNERWRITE) == 0
    assert write(tpm, b"x", index=INDEX + 3) == 0
    session = start_session(tpm.execute, SE_POLICY)
    assert via_session(tpm, session, TPM_CC.NV_Read, u16(1) + u16(0), index=INDEX + 3) == TPM_RC.AUTH_UNAVAILABLE


@pytest.mark.parametrize("bits", [0, TPMA_NV.POLICYREAD, TPMA_NV.POLICYWRITE])
def test_admin_role_ignores_policy_bits(tpm, bits):
    """NV_ChangeAuth (ADMIN) is authorized by the authPolicy whatever POLICYREAD/POLICYWRITE say."""
    policy = hashlib.sha256(bytes(32) + u32(TPM_CC.PolicyCommandCode) + u32(TPM_CC.NV_ChangeAuth)).digest()
    assert define(tpm, attrs=OWNER_RW | TPMA_NV.AUTHREAD | TPMA_NV.NO_DA | bits, auth=b"old", policy=policy) == 0
    session = start_session(tpm.execute, SE_POLICY)
    resp = tpm.execute(command(TPM_CC.PolicyCommandCode, u32(TPM_CC.NV_ChangeAuth), u32(session.handle)))
    assert Response(resp).rc == 0
    name = name_of(tpm)
    assert run(tpm.execute, TPM_CC.NV_ChangeAuth, [(INDEX, name)], tpm2b(b"new"), [Use(session, 0, name)]).rc == 0


#: A command of another area that authorizes with any entity (as TPM2_PolicySecret does).
OTHER_CC = 0x20000300


@declare_command(OTHER_CC, handles=[HandleSpec("authHandle", TPMI_DH_ENTITY, AuthRole.USER)])
def _other_command(ctx, authHandle: int):
    pass


def test_index_rules_hold_for_other_commands():
    tpm = EngineOracle(Engine(table=CommandTable([*COMMANDS, _other_command])))
    assert rc(tpm, STARTUP_CLEAR) == 0
    assert define(tpm, attrs=TPMA_NV.AUTHWRITE | TPMA_NV.OWNERREAD, auth=b"pw") == 0
    other = command(OTHER_CC, handles=u32(INDEX), auth=b"wrong")
    assert rc(tpm, other) == TPM_RC.AUTH_UNAVAILABLE  # not a write operation: AUTHREAD is needed
    assert define(tpm, index=INDEX + 1, attrs=TPMA_NV.AUTHREAD | TPMA_NV.OWNERWRITE | TPMA_NV.NO_DA, auth=b"pw") == 0
    assert rc(tpm, command(OTHER_CC, handles=u32(INDEX + 1), auth=b"pw")) == 0
    assert rc(tpm, command(OTHER_CC, handles=u32(INDEX + 1), auth=b"wrong")) == TPM_RC.BAD_AUTH | S(1)
    # A PIN Pass index counts its use by any command.
    attrs = OWNER_RW | TPMA_NV.NO_DA | nt(TPM_NT.PIN_PASS)
    assert define(tpm, index=INDEX + 2, attrs=attrs, auth=b"pin") == 0
    assert write(tpm, u32(0) + u32(1), index=INDEX + 2) == 0
    assert rc(tpm, command(OTHER_CC, handles=u32(INDEX + 2), auth=b"pin")) == 0
    assert pin_count(tpm, INDEX + 2) == 1
    assert rc(tpm, command(OTHER_CC, handles=u32(INDEX + 2), auth=b"pin")) == TPM_RC.AUTH_UNAVAILABLE


PIN_FAIL = OWNER_RW | TPMA_NV.NO_DA | nt(TPM_NT.PIN_FAIL)
PIN_PASS = OWNER_RW | TPMA_NV.NO_DA | nt(TPM_NT.PIN_PASS)


def test_pin_fail_counts_failures_and_resets_on_success(tpm):
    assert define(tpm, attrs=PIN_FAIL, auth=b"pin") == 0
    # Not written: the authValue is unusable, right or wrong, and nothing is counted.
    assert read(tpm, by=INDEX, pw=b"pin") == (TPM_RC.AUTH_UNAVAILABLE, None)
    assert read(tpm, by=INDEX, pw=b"bad") == (TPM_RC.AUTH_UNAVAILABLE, None)
    assert write(tpm, u32(0) + u32(3)) == 0  # pinCount 0, pinLimit 3
    for count in (1, 2):
        assert read(tpm, by=INDEX, pw=b"bad") == (TPM_RC.BAD_AUTH | S(1), None)
        assert pin_count(tpm) == count
    # A right authValue sets pinCount back to 0 before the command reads the data (libtpms).
    assert read(tpm, by=INDEX, pw=b"pin") == (0, u32(0) + u32(3))
    assert hmac_read(tpm, b"bad") == TPM_RC.BAD_AUTH | S(1)
    assert pin_count(tpm) == 1
    assert hmac_read(tpm, b"pin") == 0
    assert pin_count(tpm) == 0
    for _ in range(3):
        assert read(tpm, by=INDEX, pw=b"bad") == (TPM_RC.BAD_AUTH | S(1), None)
    # pinCount reached pinLimit: refused before the value is looked at, and no more counting.
    assert read(tpm, by=INDEX, pw=b"bad") == (TPM_RC.AUTH_UNAVAILABLE, None)
    assert read(tpm, by=INDEX, pw=b"pin") == (TPM_RC.AUTH_UNAVAILABLE, None)
    assert hmac_read(tpm, b"pin") == TPM_RC.AUTH_UNAVAILABLE
    assert pin_count(tpm) == 3
    assert tpm.permanent.da_failed_tries == 0  # NO_DA: the DA counter never moves
    # The owner resets it by writing.
    assert write(tpm, u32(0) + u32(3)) == 0
    assert read(tpm, by=INDEX, pw=b"pin") == (0, u32(0) + u32(3))


def test_pin_fail_limit_zero_is_never_usable(tpm):
    assert define(tpm, attrs=PIN_FAIL, auth=b"pin") == 0
    assert write(tpm, u32(0) + u32(0)) == 0
    assert read(tpm, by=INDEX, pw=b"pin") == (TPM_RC.AUTH_UNAVAILABLE, None)
    assert write(tpm, u32(5) + u32(2)) == 0
    assert read(tpm, by=INDEX, pw=b"pin") == (TPM_RC.AUTH_UNAVAILABLE, None)


def test_pin_pass_counts_uses_in_both_session_kinds(tpm):
    assert define(tpm, attrs=PIN_PASS, auth=b"pin") == 0
    assert write(tpm, u32(0) + u32(3)) == 0
    assert read(tpm, by=INDEX, pw=b"bad") == (TPM_RC.BAD_AUTH | S(1), None)
    assert hmac_read(tpm, b"bad") == TPM_RC.BAD_AUTH | S(1)
    assert pin_count(tpm) == 0  # failures do not count
    assert hmac_read(tpm, b"pin") == 0
    assert read(tpm, by=INDEX, pw=b"pin") == (0, u32(2) + u32(3))
    # Counted when the authorization succeeds, even if the command then fails.
    assert rc(tpm, command(TPM_CC.NV_Read, u16(9) + u16(0), u32(INDEX) + u32(INDEX), auth=b"pin")) == (TPM_RC.NV_RANGE)
    assert pin_count(tpm) == 3
    assert read(tpm, by=INDEX, pw=b"pin") == (TPM_RC.AUTH_UNAVAILABLE, None)
    assert hmac_read(tpm, b"pin") == TPM_RC.AUTH_UNAVAILABLE
    assert pin_count(tpm) == 3


def test_pin_pass_with_da_protection(tpm):
    assert define(tpm, attrs=OWNER_RW | nt(TPM_NT.PIN_PASS), auth=b"pin") == 0
    assert write(tpm, u32(0) + u32(1)) == 0
    assert read(tpm, by=INDEX, pw=b"bad") == (TPM_RC.AUTH_FAIL | S(1), None)
    assert tpm.permanent.da_failed_tries == 1
    assert read(tpm, by=INDEX, pw=b"pin") == (0, u32(1) + u32(1))
    tpm.permanent.da_failed_tries = tpm.permanent.da_max_tries
    # Lockout is answered first, even for an index whose authValue is used up.
    assert read(tpm, by=INDEX, pw=b"pin") == (TPM_RC.LOCKOUT, None)


def test_pin_index_cannot_authorize_writes(tpm):
    assert define(tpm, attrs=PIN_PASS, auth=b"pin") == 0
    assert write(tpm, u32(0) + u32(5)) == 0
    assert write(tpm, u32(0) + u32(9), by=INDEX, pw=b"pin") == TPM_RC.AUTH_UNAVAILABLE
    assert pin_count(tpm) == 0


def test_pin_with_policy_auth_value(tpm):
    """PolicyAuthValue / PolicyPassword prove the authValue: counted as a password would be,
    but (as in libtpms) the policy is not held to pinCount < pinLimit."""
    policy = hashlib.sha256(bytes(32) + u32(TPM_CC.PolicyAuthValue)).digest()
    assert define(tpm, attrs=PIN_FAIL | TPMA_NV.POLICYREAD, auth=b"pin", policy=policy) == 0
    assert write(tpm, u32(0) + u32(1)) == 0

    def policy_read(auth: bytes, password: bool) -> int:
        session = start_session(tpm.execute, SE_POLICY)
        cc = TPM_CC.PolicyPassword if password else TPM_CC.PolicyAuthValue
        assert Response(tpm.execute(command(cc, handles=u32(session.handle)))).rc == 0
        return via_session(tpm, session, TPM_CC.NV_Read, u16(8) + u16(0), auth, include_auth=True, password=password)

    assert policy_read(b"bad", False) == TPM_RC.BAD_AUTH | S(1)
    assert pin_count(tpm) == 1
    assert policy_read(b"bad", True) == TPM_RC.BAD_AUTH | S(1)
    assert pin_count(tpm) == 2
    assert read(tpm, by=INDEX, pw=b"pin") == (TPM_RC.AUTH_UNAVAILABLE, None)
    assert policy_read(b"pin", True) == 0
    assert pin_count(tpm) == 0
    # A policy without PolicyAuthValue does not use the authValue: nothing counted.
    assert define(tpm, index=INDEX + 1, attrs=PIN_PASS | TPMA_NV.POLICYREAD, auth=b"pin", policy=bytes(32)) == 0
    assert write(tpm, u32(0) + u32(1), index=INDEX + 1) == 0
    for _ in range(2):
        session = start_session(tpm.execute, SE_POLICY)
        assert via_session(tpm, session, TPM_CC.NV_Read, u16(8) + u16(0), index=INDEX + 1) == 0
    assert pin_count(tpm, INDEX + 1) == 0


def test_pin_count_saturates(tpm):
    policy = hashlib.sha256(bytes(32) + u32(TPM_CC.PolicyAuthValue)).digest()
    assert define(tpm, attrs=PIN_PASS | TPMA_NV.POLICYREAD, auth=b"pin", policy=policy) == 0
    assert write(tpm, u32(0xFFFFFFFF) + u32(1)) == 0
    session = start_session(tpm.execute, SE_POLICY)
    assert Response(tpm.execute(command(TPM_CC.PolicyAuthValue, handles=u32(session.handle)))).rc == 0
    assert via_session(tpm, session, TPM_CC.NV_Read, u16(8) + u16(0), b"pin", include_auth=True) == 0
    assert read(tpm) == (0, u32(0xFFFFFFFF) + u32(1))


def saved_pin_count(tpm) -> int:
    """pinCount as the permanent state saved now holds it (what survives a power loss)."""
    return Engine.from_blobs(tpm.permanent_blob()).permanent.nv_indices[INDEX].pin[0]


@pytest.mark.parametrize("orderly", [False, True])
def test_pin_count_is_persisted_before_the_response(tpm, orderly):
    attrs = PIN_FAIL | (TPMA_NV.ORDERLY if orderly else 0)
    assert define(tpm, attrs=attrs, auth=b"pin") == 0
    assert write(tpm, u32(0) + u32(5)) == 0
    if orderly:
        assert rc(tpm, SHUTDOWN_STATE) == 0  # the written data reaches NV
        tpm.volatile.started = False
        assert rc(tpm, STARTUP_STATE) == 0
    tpm.engine.take_permanent_dirty()
    assert read(tpm, by=INDEX, pw=b"bad") == (TPM_RC.BAD_AUTH | S(1), None)
    assert tpm.engine.take_permanent_dirty()  # the transport saves it with the failing response
    # Power lost right after the failing response: the count is in the saved NV, ORDERLY or not.
    assert saved_pin_count(tpm) == 1
    # A success that resets the count is saved as well.
    tpm.engine.take_permanent_dirty()
    assert read(tpm, by=INDEX, pw=b"pin")[0] == 0
    assert tpm.engine.take_permanent_dirty()
    assert saved_pin_count(tpm) == 0
    if not orderly:
        restored = power_cycle(tpm)
        assert read(restored, by=INDEX, pw=b"bad") == (TPM_RC.BAD_AUTH | S(1), None)
        assert pin_count(restored) == 1
