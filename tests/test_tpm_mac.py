"""TPM2_MAC and TPM2_MAC_Start with an AES key (CMAC), in the engine alone.

The codes and CMACs are compared with libtpms in tests/test_tpm_symmetric_vs_swtpm.py;
this module covers what libtpms cannot show: AES-192 keys (Debian's libtpms refuses
them), a CMAC sequence carried across a volatile-state snapshot, TPM_CAP_ALGS, and the
CMAC of every message length around the block size against ``cryptography``.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import cmac as cmac_
from cryptography.hazmat.primitives.ciphers import algorithms
from test_tpm_symmetric import P, hmac_cmd, hmac_start, load_sym

from support.engine_oracle import EngineOracle
from support.object_templates import SIGN, USER_WITH_AUTH
from support.tpm_client import Response, command, tpm2b, u32
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH, TPM_ST
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import TPM_RC, rc_name

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
SIGN_ONLY = USER_WITH_AUTH | SIGN


def cmac(key: bytes, data: bytes) -> bytes:
    mac = cmac_.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


@pytest.fixture
def tpm():
    engine = EngineOracle(Engine())
    assert Response(engine.execute(STARTUP_CLEAR)).rc == 0
    return engine


def ok(resp: Response) -> Response:
    assert resp.rc == 0, rc_name(resp.rc)
    return resp


@pytest.mark.parametrize("size", [16, 24, 32], ids=["aes128", "aes192", "aes256"])
def test_cmac_of_every_length_around_a_block(tpm, size):
    key = os.urandom(size)
    handle = load_sym(tpm, key, attrs=SIGN_ONLY)
    for length in (0, 1, 15, 16, 17, 31, 32, 33, 1024):
        data = os.urandom(length)
        resp = ok(Response(tpm.execute(hmac_cmd(handle, data, TPM_ALG.CMAC))))
        assert resp.params() == tpm2b(cmac(key, data))


def test_cmac_sequence_survives_a_volatile_snapshot(tpm):
    """A CMAC sequence is RAM that STORE_VOLATILE / migration carries, like an HMAC sequence."""
    from vtpm_cuse.tpm.state import BlobKind, deserialise, serialise

    key = os.urandom(24)
    handle = load_sym(tpm, key, attrs=SIGN_ONLY)
    seq = int.from_bytes(ok(hmac_start(tpm, handle, b"", TPM_ALG.CMAC)).raw[10:14], "big")
    ok(Response(tpm.execute(command(TPM_CC.SequenceUpdate, tpm2b(b"part one"), u32(seq), b""))))
    restored = deserialise(BlobKind.VOLATILE, serialise(BlobKind.VOLATILE, tpm.engine.volatile))
    sequence = restored.sequences[seq]
    sequence.update(b" and two")
    assert sequence.digests()[TPM_ALG.CMAC] == cmac(key, b"part one and two")
    # The live sequence is unchanged by the snapshot and completes with a NULL ticket.
    body = tpm2b(b" and two") + u32(TPM_RH.OWNER)
    resp = ok(Response(tpm.execute(command(TPM_CC.SequenceComplete, body, u32(seq), b""))))
    null_ticket = TPM_ST.HASHCHECK.to_bytes(2, "big") + u32(TPM_RH.NULL) + bytes(2)
    assert resp.params() == tpm2b(cmac(key, b"part one and two")) + null_ticket


def test_a_sequence_is_no_mac_key(tpm):
    resp = ok(Response(tpm.execute(command(TPM_CC.HashSequenceStart, tpm2b(b"") + TPM_ALG.SHA256.to_bytes(2, "big")))))
    seq = int.from_bytes(resp.raw[10:14], "big")
    assert Response(tpm.execute(hmac_cmd(seq, b"m", TPM_ALG.CMAC))).rc == TPM_RC.TYPE | (1 << 8)


def test_cmac_on_an_encryption_mode_key_and_a_mode_as_scheme(tpm):
    handle = load_sym(tpm, os.urandom(16), TPM_ALG.CBC, attrs=SIGN_ONLY)
    assert Response(tpm.execute(hmac_cmd(handle, b"m", TPM_ALG.CMAC))).rc == TPM_RC.VALUE | P(2)
    assert Response(tpm.execute(hmac_cmd(handle, b"m", TPM_ALG.NULL))).rc == TPM_RC.SCHEME | P(2)
    # An encryption mode is no TPMI_ALG_MAC_SCHEME.
    assert Response(tpm.execute(hmac_cmd(handle, b"m", TPM_ALG.CBC))).rc == TPM_RC.SYMMETRIC | P(2)


def test_cmac_is_in_tpm_cap_algs(tpm):
    resp = ok(Response(tpm.execute(command(TPM_CC.GetCapability, u32(0) + u32(TPM_ALG.CMAC) + u32(1)))))
    # moreData (the modes follow), TPM_CAP_ALGS, one TPMS_ALG_PROPERTY: CMAC, symmetric | signing.
    assert resp.params() == b"\x01" + u32(0) + u32(1) + TPM_ALG.CMAC.to_bytes(2, "big") + u32(0x102)
