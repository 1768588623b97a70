"""TPM conversations every QEMU path runs through its TIS/CRB (tests/support/qtest_tpm.py).

The vectors are QEMU's own (tests/qtest/tpm-util.c, tpm-tests.c): TPM2_Startup(CLEAR),
TPM2_PCR_Extend of PCR 10 with the SHA-256 digest "test" + 28 zero bytes, and
TPM2_PCR_Read of PCR 10; the expected PCR value is computed here, not copied.
Shared by the host tests (emulator backend), the in-guest tests (passthrough on the
CUSE device) and the benchmark, so every path is held to the same bytes.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Protocol

from support.object_templates import NO_SYM, SIGNING, create_primary_cmd, ecc_template, rsa_template
from support.tpm_client import Response, command, u16, u32
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH, TPM_RS_PW, TPM_ST, TPM_SU
from vtpm_cuse.tpm.errors import TPM_RC

QEMU_PCR = 10
QEMU_DIGEST = b"test" + bytes(28)
QEMU_PCR_VALUE = hashlib.sha256(bytes(32) + QEMU_DIGEST).digest()
"""What PCR 10 holds after QEMU's extend vector (tpm-tests.c expects f68598e5...)."""
RC_COMMAND_CODE = 0x143
RC_BAD_TAG = 0x1E


class Transport(Protocol):
    def transfer(self, command: bytes, timeout: float = ...) -> bytes: ...


def startup(clear: bool = True) -> bytes:
    return command(TPM_CC.Startup, u16(TPM_SU.CLEAR if clear else TPM_SU.STATE))


def pcr_extend(pcr: int = QEMU_PCR, digest: bytes = QEMU_DIGEST) -> bytes:
    """As QEMU's vector: the password session has sessionAttributes 0 (no
    continueSession); a password acknowledgement sets it anyway (Part 1, 19.6.5)."""
    session = u32(TPM_RS_PW) + u16(0) + b"\x00" + u16(0)
    rest = u32(pcr) + u32(len(session)) + session + u32(1) + u16(TPM_ALG.SHA256) + digest
    return u16(TPM_ST.SESSIONS) + u32(10 + len(rest)) + u32(TPM_CC.PCR_Extend) + rest


def pcr_read(pcr: int = QEMU_PCR) -> bytes:
    mask = (1 << pcr).to_bytes(3, "little")
    return command(TPM_CC.PCR_Read, u32(1) + u16(TPM_ALG.SHA256) + b"\x03" + mask)


def get_random(count: int) -> bytes:
    return command(TPM_CC.GetRandom, u16(count))


def expect_ok(response: bytes, what: str) -> Response:
    reply = Response(response)
    if reply.rc != TPM_RC.SUCCESS or reply.size != len(response):
        raise AssertionError(f"{what}: rc 0x{reply.rc:x}, {len(response)} bytes: {response[:32].hex()}")
    return reply


def read_pcr_value(tpm: Transport, pcr: int = QEMU_PCR) -> bytes:
    """PCR_Read's digest of ``pcr`` (asserting the selection is echoed back whole)."""
    body = expect_ok(tpm.transfer(pcr_read(pcr)), "PCR_Read").params()
    # pcrUpdateCounter, pcrSelectionOut (1 bank: SHA-256, 3 bytes), pcrValues (1 digest)
    selection = u32(1) + u16(TPM_ALG.SHA256) + b"\x03" + (1 << pcr).to_bytes(3, "little")
    assert body[4:14] == selection, body.hex()
    count, size = struct.unpack(">IH", body[14:20])
    assert (count, size) == (1, 32), body.hex()
    return body[20:52]


def qemu_vectors(tpm: Transport) -> None:
    """QEMU's own TPM test: Startup, Extend PCR 10, Read it back."""
    assert tpm.transfer(startup()) == bytes.fromhex("80010000000a00000000")
    extend = expect_ok(tpm.transfer(pcr_extend()), "PCR_Extend")
    # TPM_ST_SESSIONS, parameterSize 0, one password acknowledgement (continueSession)
    assert extend.raw == struct.pack(">HII", 0x8002, 19, 0) + u32(0) + b"\x00\x00\x01\x00\x00"
    assert read_pcr_value(tpm) == QEMU_PCR_VALUE


def random_bytes(tpm: Transport, count: int = 32) -> bytes:
    body = expect_ok(tpm.transfer(get_random(count)), "GetRandom").params()
    assert int.from_bytes(body[:2], "big") == count == len(body) - 2, body.hex()
    return body[2:]


def create_primary(tpm: Transport, area=None, timeout: float = 600) -> bytes:
    """CreatePrimary under the owner hierarchy; returns outPublic's bytes."""
    area = area or ecc_template(attrs=SIGNING, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256)
    response = expect_ok(tpm.transfer(create_primary_cmd(area), timeout), "CreatePrimary")
    handle = int.from_bytes(response.raw[10:14], "big")
    assert handle >> 24 == 0x80, f"CreatePrimary returned handle 0x{handle:08x}"
    expect_ok(tpm.transfer(command(TPM_CC.FlushContext, u32(handle))), "FlushContext")
    public = response.params(handles=1)
    return public[: 2 + int.from_bytes(public[:2], "big")]


def rsa_primary(bits: int) -> bytes:
    """A CreatePrimary slow enough to cancel: an RSA key of ``bits`` (prime search)."""
    return create_primary_cmd(rsa_template(attrs=SIGNING, bits=bits, sym=NO_SYM), TPM_RH.OWNER)


def malformed_then_valid(tpm: Transport) -> None:
    """Three malformed commands (unknown code, bad tag, trailing bytes after the
    parameters), each answered with its TPM error code; the next valid command works."""
    unknown = Response(tpm.transfer(command(0x0000FFFF)))
    assert unknown.rc == RC_COMMAND_CODE, f"unknown command answered 0x{unknown.rc:x}"
    bad_tag = bytearray(get_random(8))
    bad_tag[0:2] = b"\x80\x03"
    assert Response(tpm.transfer(bytes(bad_tag))).rc == RC_BAD_TAG
    trailing = get_random(8) + bytes(4)
    trailing = trailing[:2] + len(trailing).to_bytes(4, "big") + trailing[6:]
    extra = Response(tpm.transfer(trailing))
    assert extra.rc not in (TPM_RC.SUCCESS, TPM_RC.FAILURE) and extra.size == 10, f"0x{extra.rc:x}"
    assert len(random_bytes(tpm, 8)) == 8
