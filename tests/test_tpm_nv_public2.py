"""TPM2_NV_DefineSpace2 and TPM2_NV_ReadPublic2 (Library 1.83, TPMS_NV_PUBLIC_2) through
Engine.execute with real command bytes.  This TPM has ordinary NV indices only, so the one
handle type of TPMU_NV_PUBLIC_2 it accepts is TPM_HT_NV_INDEX; such an index is the same as
one NV_DefineSpace defines, and both ReadPublic commands agree on it.
"""

from __future__ import annotations

import pytest

from support.engine_oracle import EngineOracle
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH, TPMA_NV
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_P, TPM_RC

STARTUP_CLEAR = command(TPM_CC.Startup, u16(0))
INDEX, OTHER = 0x01500020, 0x01500021
OWNER_RW = TPMA_NV.OWNERREAD | TPMA_NV.OWNERWRITE
HT_NV_INDEX, HT_EXTERNAL_NV, HT_PERMANENT_NV = 0x01, 0x11, 0x12
N1, N2 = 1 << 8, 2 << 8


def nv_public(index: int, attrs: int = OWNER_RW, size: int = 8) -> bytes:
    """TPMS_NV_PUBLIC (unsized)."""
    return u32(index) + u16(TPM_ALG.SHA256) + u32(attrs) + tpm2b(b"") + u16(size)


def define2(public: bytes, handle_type: int = HT_NV_INDEX, auth: bytes = b"") -> bytes:
    return command(TPM_CC.NV_DefineSpace2, tpm2b(auth) + tpm2b(bytes([handle_type]) + public), u32(TPM_RH.OWNER), b"")


def define(public: bytes) -> bytes:
    return command(TPM_CC.NV_DefineSpace, tpm2b(b"") + tpm2b(public), u32(TPM_RH.OWNER), b"")


@pytest.fixture
def tpm():
    engine = EngineOracle(Engine())
    assert Response(engine.execute(STARTUP_CLEAR)).rc == 0
    return engine


def read_public(tpm, code: int, index: int) -> Response:
    return Response(tpm.execute(command(code, handles=u32(index))))


def test_define2_and_read_public2_agree_with_the_1_59_commands(tpm):
    assert Response(tpm.execute(define2(nv_public(INDEX)))).rc == 0
    assert Response(tpm.execute(define(nv_public(OTHER)))).rc == 0
    for index in (INDEX, OTHER):
        old, new = read_public(tpm, TPM_CC.NV_ReadPublic, index), read_public(tpm, TPM_CC.NV_ReadPublic2, index)
        assert old.rc == new.rc == 0
        public, name = old.params()[2:16], old.params()[16:]
        assert public == nv_public(index)
        # TPM2B_NV_PUBLIC_2: size, handleType, the same TPMS_NV_PUBLIC; then the same Name.
        assert new.params() == tpm2b(bytes([HT_NV_INDEX]) + public) + name


def test_define2_refuses_handle_types_this_tpm_does_not_have(tpm):
    for handle_type in (HT_EXTERNAL_NV, HT_PERMANENT_NV, 0x00, 0x80):
        assert Response(tpm.execute(define2(nv_public(INDEX), handle_type))).rc == TPM_RC.SELECTOR + RC_P + N2
    assert read_public(tpm, TPM_CC.NV_ReadPublic2, INDEX).rc == TPM_RC.HANDLE + N1


def test_define2_checks_are_those_of_define(tpm):
    assert Response(tpm.execute(define2(nv_public(INDEX), auth=b"\x01" * 33))).rc == TPM_RC.SIZE + RC_P + N1
    assert Response(tpm.execute(define2(nv_public(INDEX, size=0xFFFF)))).rc == define_rc(nv_public(INDEX, size=0xFFFF))
    assert Response(tpm.execute(define2(nv_public(INDEX)))).rc == 0
    assert Response(tpm.execute(define2(nv_public(INDEX)))).rc == TPM_RC.NV_DEFINED
    truncated = command(
        TPM_CC.NV_DefineSpace2, tpm2b(b"") + tpm2b(bytes([HT_NV_INDEX]) + nv_public(OTHER)[:-1]), u32(TPM_RH.OWNER), b""
    )
    assert Response(tpm.execute(truncated)).rc & 0xBF == TPM_RC.INSUFFICIENT & 0xBF


def define_rc(public: bytes) -> int:
    engine = EngineOracle(Engine())
    assert Response(engine.execute(STARTUP_CLEAR)).rc == 0
    return Response(engine.execute(define(public))).rc
