"""NV commands against Debian's swtpm (libtpms): the same command bytes, byte-identical
responses where the result is deterministic -- NV_ReadPublic and Names, data of a
partly written index, counter / bits / extend values, locks, and the response codes
(with handle and parameter numbers) of bad input."""

from __future__ import annotations

import pytest

from support.engine_oracle import EngineOracle
from support.swtpm_oracle import SwtpmOracle
from support.tpm_client import command, tpm2b, u16, u32
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_NT, TPM_RH, TPMA_NV
from vtpm_cuse.tpm.engine import Engine

pytestmark = pytest.mark.swtpm

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
BASE = 0x01500100
OWNER_RW = TPMA_NV.OWNERREAD | TPMA_NV.OWNERWRITE
PLATFORM_RW = TPMA_NV.PPREAD | TPMA_NV.PPWRITE | TPMA_NV.PLATFORMCREATE


def nv_public(index: int, attrs: int, size: int, policy: bytes = b"", alg: int = TPM_ALG.SHA256) -> bytes:
    return tpm2b(u32(index) + u16(alg) + u32(attrs) + tpm2b(policy) + u16(size))


def define(index, attrs=OWNER_RW, size=8, auth=b"", policy=b"", by=TPM_RH.OWNER, alg=TPM_ALG.SHA256):
    return command(TPM_CC.NV_DefineSpace, tpm2b(auth) + nv_public(index, attrs, size, policy, alg), u32(by), b"")


def on(code, index, by=TPM_RH.OWNER, body=b"", pw=b""):
    return command(code, body, u32(by) + u32(index), pw)


def read_public(index):
    return command(TPM_CC.NV_ReadPublic, handles=u32(index))


def nt(kind: int) -> int:
    return kind << 4


COUNTER, BITS, EXTEND = (OWNER_RW | nt(k) for k in (TPM_NT.COUNTER, TPM_NT.BITS, TPM_NT.EXTEND))

SEQUENCE = [
    # ordinary index: partial write, reads, Name before and after WRITTEN
    ("define", define(BASE, size=16)),
    ("define_twice", define(BASE, size=16)),
    ("read_public", read_public(BASE)),
    ("read_unwritten", on(TPM_CC.NV_Read, BASE, body=u16(4) + u16(0))),
    ("write_partial", on(TPM_CC.NV_Write, BASE, body=tpm2b(b"hello") + u16(3))),
    ("read_all", on(TPM_CC.NV_Read, BASE, body=u16(16) + u16(0))),
    ("read_public_written", read_public(BASE)),
    ("write_offset_beyond", on(TPM_CC.NV_Write, BASE, body=tpm2b(b"x") + u16(17))),
    ("write_range", on(TPM_CC.NV_Write, BASE, body=tpm2b(b"x" * 10) + u16(8))),
    ("read_range", on(TPM_CC.NV_Read, BASE, body=u16(10) + u16(8))),
    ("read_offset_beyond", on(TPM_CC.NV_Read, BASE, body=u16(1) + u16(17))),
    ("read_too_big", on(TPM_CC.NV_Read, BASE, body=u16(1025) + u16(0))),
    ("increment_ordinary", on(TPM_CC.NV_Increment, BASE)),
    ("setbits_ordinary", on(TPM_CC.NV_SetBits, BASE, body=bytes(8))),
    ("extend_ordinary", on(TPM_CC.NV_Extend, BASE, body=tpm2b(b"x"))),
    ("writelock_no_attr", on(TPM_CC.NV_WriteLock, BASE)),
    ("readlock_no_attr", on(TPM_CC.NV_ReadLock, BASE)),
    ("undefined_read_public", read_public(BASE + 0x50)),
    ("undefined_write", on(TPM_CC.NV_Write, BASE + 0x50, body=tpm2b(b"x") + u16(0))),
    ("other_index_auth", on(TPM_CC.NV_Read, BASE, by=BASE + 1, body=u16(1) + u16(0))),
    # define checks
    ("def_written", define(BASE + 1, OWNER_RW | TPMA_NV.WRITTEN)),
    ("def_no_read", define(BASE + 1, TPMA_NV.OWNERWRITE)),
    ("def_no_write", define(BASE + 1, TPMA_NV.OWNERREAD)),
    ("def_platformcreate_by_owner", define(BASE + 1, OWNER_RW | TPMA_NV.PLATFORMCREATE)),
    ("def_platform_without_platformcreate", define(BASE + 1, OWNER_RW, by=TPM_RH.PLATFORM)),
    ("def_policy_delete_owner", define(BASE + 1, OWNER_RW | TPMA_NV.POLICY_DELETE)),
    ("def_bad_nt", define(BASE + 1, OWNER_RW | nt(3))),
    ("def_reserved", define(BASE + 1, OWNER_RW | (1 << 8))),
    ("def_too_big", define(BASE + 1, size=2049)),
    ("def_counter_size", define(BASE + 1, COUNTER, size=4)),
    ("def_extend_size", define(BASE + 1, EXTEND, size=20)),
    ("def_policy_size", define(BASE + 1, policy=bytes(20))),
    ("def_auth_size", define(BASE + 1, auth=bytes(range(1, 34)))),
    ("def_counter_clear_stclear", define(BASE + 1, COUNTER | TPMA_NV.CLEAR_STCLEAR)),
    ("def_clear_stclear_writedefine", define(BASE + 1, OWNER_RW | TPMA_NV.CLEAR_STCLEAR | TPMA_NV.WRITEDEFINE)),
    ("def_writeall_big", define(BASE + 1, OWNER_RW | TPMA_NV.WRITEALL, size=1025)),
    ("def_pin_fail_no_da", define(BASE + 1, OWNER_RW | nt(TPM_NT.PIN_FAIL))),
    ("def_null_alg", define(BASE + 1, alg=TPM_ALG.NULL)),
    # counter
    ("counter_define", define(BASE + 2, COUNTER)),
    ("counter_write", on(TPM_CC.NV_Write, BASE + 2, body=tpm2b(bytes(8)) + u16(0))),
    ("counter_inc1", on(TPM_CC.NV_Increment, BASE + 2)),
    ("counter_inc2", on(TPM_CC.NV_Increment, BASE + 2)),
    ("counter_read", on(TPM_CC.NV_Read, BASE + 2, body=u16(8) + u16(0))),
    ("counter_read_public", read_public(BASE + 2)),
    ("counter_undefine", on(TPM_CC.NV_UndefineSpace, BASE + 2)),
    ("counter_redefine", define(BASE + 2, COUNTER)),
    ("counter_inc_again", on(TPM_CC.NV_Increment, BASE + 2)),
    ("counter_read_again", on(TPM_CC.NV_Read, BASE + 2, body=u16(8) + u16(0))),
    # bits
    ("bits_define", define(BASE + 3, BITS)),
    ("bits_set1", on(TPM_CC.NV_SetBits, BASE + 3, body=(0x8001).to_bytes(8, "big"))),
    ("bits_set2", on(TPM_CC.NV_SetBits, BASE + 3, body=(0x0300).to_bytes(8, "big"))),
    ("bits_read", on(TPM_CC.NV_Read, BASE + 3, body=u16(8) + u16(0))),
    # extend
    ("extend_define", define(BASE + 4, EXTEND, size=32)),
    ("extend_1", on(TPM_CC.NV_Extend, BASE + 4, body=tpm2b(b"abc"))),
    ("extend_2", on(TPM_CC.NV_Extend, BASE + 4, body=tpm2b(b"defg"))),
    ("extend_read", on(TPM_CC.NV_Read, BASE + 4, body=u16(32) + u16(0))),
    ("extend_read_public", read_public(BASE + 4)),
    # locks
    ("lock_define", define(BASE + 5, OWNER_RW | TPMA_NV.WRITE_STCLEAR | TPMA_NV.READ_STCLEAR | TPMA_NV.GLOBALLOCK)),
    ("lock_write", on(TPM_CC.NV_Write, BASE + 5, body=tpm2b(b"a") + u16(0))),
    ("lock_writelock", on(TPM_CC.NV_WriteLock, BASE + 5)),
    ("lock_writelock_again", on(TPM_CC.NV_WriteLock, BASE + 5)),
    ("lock_write_locked", on(TPM_CC.NV_Write, BASE + 5, body=tpm2b(b"b") + u16(0))),
    ("lock_readlock", on(TPM_CC.NV_ReadLock, BASE + 5)),
    ("lock_read_locked", on(TPM_CC.NV_Read, BASE + 5, body=u16(1) + u16(0))),
    ("lock_read_public", read_public(BASE + 5)),
    ("global_define", define(BASE + 6, OWNER_RW | TPMA_NV.GLOBALLOCK)),
    ("global_lock", command(TPM_CC.NV_GlobalWriteLock, handles=u32(TPM_RH.OWNER), auth=b"")),
    ("global_read_public", read_public(BASE + 6)),
    ("global_write", on(TPM_CC.NV_Write, BASE + 6, body=tpm2b(b"a") + u16(0))),
    # authorization attributes and index authValues
    ("auth_define", define(BASE + 7, TPMA_NV.AUTHREAD | TPMA_NV.PPWRITE | TPMA_NV.NO_DA, auth=b"pw")),
    ("auth_owner_write", on(TPM_CC.NV_Write, BASE + 7, body=tpm2b(b"a") + u16(0))),
    ("auth_self_write", on(TPM_CC.NV_Write, BASE + 7, by=BASE + 7, body=tpm2b(b"a") + u16(0), pw=b"pw")),
    ("auth_pp_write", on(TPM_CC.NV_Write, BASE + 7, by=TPM_RH.PLATFORM, body=tpm2b(b"a") + u16(0))),
    ("auth_owner_read", on(TPM_CC.NV_Read, BASE + 7, body=u16(1) + u16(0))),
    ("auth_self_read", on(TPM_CC.NV_Read, BASE + 7, by=BASE + 7, body=u16(1) + u16(0), pw=b"pw")),
    ("auth_self_wrong", on(TPM_CC.NV_Read, BASE + 7, by=BASE + 7, body=u16(1) + u16(0), pw=b"no")),
    ("changeauth_password", command(TPM_CC.NV_ChangeAuth, tpm2b(b"new"), u32(BASE + 7), b"pw")),
    # platform indices and undefine rules
    ("pp_define", define(BASE + 8, PLATFORM_RW, by=TPM_RH.PLATFORM)),
    ("pp_owner_undefine", on(TPM_CC.NV_UndefineSpace, BASE + 8)),
    ("pd_define", define(BASE + 9, PLATFORM_RW | TPMA_NV.POLICY_DELETE, by=TPM_RH.PLATFORM, policy=bytes(32))),
    ("pd_undefine", on(TPM_CC.NV_UndefineSpace, BASE + 9, by=TPM_RH.PLATFORM)),
    ("pd_read_public", read_public(BASE + 9)),
    ("pp_undefine", on(TPM_CC.NV_UndefineSpace, BASE + 8, by=TPM_RH.PLATFORM)),
    ("pp_gone", read_public(BASE + 8)),
    # capability
    ("cap_nv_handles", command(TPM_CC.GetCapability, u32(TPM_CAP.HANDLES) + u32(0x01000000) + u32(3))),
    ("cap_nv_handles_rest", command(TPM_CC.GetCapability, u32(TPM_CAP.HANDLES) + u32(BASE + 4) + u32(20))),
]


@pytest.fixture(scope="module")
def transcripts():
    oracle = SwtpmOracle()
    ours = EngineOracle(Engine())
    try:
        results = {}
        for tpm in (oracle, ours):
            assert tpm.execute(STARTUP_CLEAR) == bytes.fromhex("80010000000a00000000")
        for name, cmd in SEQUENCE:
            results[name] = (oracle.execute(cmd), ours.execute(cmd))
        yield results
    finally:
        oracle.close()


@pytest.mark.parametrize("name", [name for name, _ in SEQUENCE])
def test_same_bytes_as_libtpms(transcripts, name):
    theirs, ours = transcripts[name]
    assert ours.hex() == theirs.hex()
