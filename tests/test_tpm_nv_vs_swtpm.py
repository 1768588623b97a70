"""NV commands against Debian's swtpm (libtpms): the same command bytes, byte-identical
responses where the result is deterministic -- NV_ReadPublic and Names, data of a
partly written index, counter / bits / extend values, locks, the response codes
(with handle and parameter numbers) of bad input, and an index's own authorization:
AUTHREAD/AUTHWRITE checked before the password, PIN Fail and PIN Pass counting.

The indices that authorize themselves here are NO_DA: libtpms answers the first
authorization of a DA-protected entity after Startup with TPM_RC_RETRY (it records
in NV that DA state is in use), which this engine does not do."""

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
PIN_FAIL, PIN_PASS = (OWNER_RW | TPMA_NV.NO_DA | nt(k) for k in (TPM_NT.PIN_FAIL, TPM_NT.PIN_PASS))


def read8(index, by=TPM_RH.OWNER, pw=b""):
    return on(TPM_CC.NV_Read, index, by=by, body=u16(8) + u16(0), pw=pw)


def pin(count: int, limit: int):
    return u32(count) + u32(limit)


def pin_write(index, count: int, limit: int):
    return on(TPM_CC.NV_Write, index, body=tpm2b(pin(count, limit)) + u16(0))


AUTH_CLEAR, FAIL, PASS = BASE + 10, BASE + 11, BASE + 12

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
    # the index's own authorization: AUTHREAD CLEAR refuses even a wrong password first
    ("authread_clear_define", define(AUTH_CLEAR, TPMA_NV.AUTHWRITE | TPMA_NV.OWNERREAD | TPMA_NV.NO_DA, auth=b"pw")),
    ("authread_clear_write_self", on(TPM_CC.NV_Write, AUTH_CLEAR, by=AUTH_CLEAR, body=tpm2b(b"a") + u16(0), pw=b"pw")),
    ("authread_clear_read_wrong", read8(AUTH_CLEAR, by=AUTH_CLEAR, pw=b"wrong")),
    ("authread_clear_read_right", read8(AUTH_CLEAR, by=AUTH_CLEAR, pw=b"pw")),
    ("authwrite_clear_write_wrong", on(TPM_CC.NV_Write, BASE + 7, by=BASE + 7, body=tpm2b(b"a") + u16(0), pw=b"no")),
    ("authwrite_clear_writelock", on(TPM_CC.NV_WriteLock, BASE + 7, by=BASE + 7, pw=b"pw")),
    # PIN Fail: wrong passwords count, the right one resets, pinLimit ends it
    ("pin_fail_define", define(FAIL, PIN_FAIL, auth=b"pin")),
    ("pin_fail_unwritten", read8(FAIL, by=FAIL, pw=b"pin")),
    ("pin_fail_unwritten_wrong", read8(FAIL, by=FAIL, pw=b"bad")),
    ("pin_fail_write", pin_write(FAIL, 0, 3)),
    ("pin_fail_wrong_1", read8(FAIL, by=FAIL, pw=b"bad")),
    ("pin_fail_wrong_2", read8(FAIL, by=FAIL, pw=b"bad")),
    ("pin_fail_count_2", read8(FAIL)),
    ("pin_fail_right", read8(FAIL, by=FAIL, pw=b"pin")),
    ("pin_fail_count_0", read8(FAIL)),
    *[(f"pin_fail_wrong_{n}_of_3", read8(FAIL, by=FAIL, pw=b"bad")) for n in (1, 2, 3)],
    ("pin_fail_count_3", read8(FAIL)),
    ("pin_fail_wrong_at_limit", read8(FAIL, by=FAIL, pw=b"bad")),
    ("pin_fail_right_at_limit", read8(FAIL, by=FAIL, pw=b"pin")),
    ("pin_fail_count_still_3", read8(FAIL)),
    ("pin_fail_as_writer", on(TPM_CC.NV_Write, FAIL, by=FAIL, body=tpm2b(pin(0, 3)) + u16(0), pw=b"pin")),
    ("pin_fail_reset_by_owner", pin_write(FAIL, 0, 3)),
    ("pin_fail_right_again", read8(FAIL, by=FAIL, pw=b"pin")),
    # PIN Pass: each right password counts, until pinLimit
    ("pin_pass_define", define(PASS, PIN_PASS, auth=b"pin")),
    ("pin_pass_unwritten", read8(PASS, by=PASS, pw=b"pin")),
    ("pin_pass_write", pin_write(PASS, 0, 2)),
    ("pin_pass_wrong", read8(PASS, by=PASS, pw=b"bad")),
    ("pin_pass_read_1", read8(PASS, by=PASS, pw=b"pin")),
    ("pin_pass_read_2", read8(PASS, by=PASS, pw=b"pin")),
    ("pin_pass_read_3", read8(PASS, by=PASS, pw=b"pin")),
    ("pin_pass_wrong_at_limit", read8(PASS, by=PASS, pw=b"bad")),
    ("pin_pass_count", read8(PASS)),
    ("pin_pass_limit_zero", pin_write(PASS, 0, 0)),
    ("pin_pass_read_limit_zero", read8(PASS, by=PASS, pw=b"pin")),
    # a session bound to a PIN Fail index would bypass its failure count: refused (TPM_RC_HANDLE, handle 2)
    (
        "bind_pin_fail",
        command(
            TPM_CC.StartAuthSession,
            tpm2b(bytes(16)) + tpm2b(b"") + b"\x00" + u16(TPM_ALG.NULL) + u16(TPM_ALG.SHA256),
            u32(TPM_RH.NULL) + u32(FAIL),
        ),
    ),
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
