"""The asymmetric primitives against Debian's swtpm (libtpms): the same command bytes to both.

ECC_Parameters is deterministic and compared byte for byte.  Keys come from each TPM's own
seeds, so for the key commands the response codes of the bad-input cases are compared.
Not compared, because libtpms answers TPM_RC_FAILURE (its OpenSSL path turns every padding
failure into it) where Part 3 has TPM_RC_VALUE / TPM_RC_HASH: messages too long for the
padding, undecodable ciphertexts, OAEP hashes too large for the key.
"""

from __future__ import annotations

import pytest

from support.engine_oracle import EngineOracle
from support.object_templates import (
    DECRYPT,
    FIXED_PARENT,
    FIXED_TPM,
    NO_SYM,
    SDO,
    SIGNING,
    STORAGE,
    USER_WITH_AUTH,
    create_primary_cmd,
    ecc_template,
    rsa_template,
)
from support.swtpm_oracle import SwtpmOracle
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_ECC_CURVE
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import rc_name

pytestmark = pytest.mark.swtpm

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
SUCCESS = bytes.fromhex("80010000000a00000000")
LIBTPMS_SLOTS = 3
UNRESTRICTED_DECRYPT = FIXED_TPM | FIXED_PARENT | SDO | USER_WITH_AUTH | DECRYPT
RSA_BYTES = 128


@pytest.fixture(scope="module")
def pair():
    oracle = SwtpmOracle()
    ours = EngineOracle(Engine(max_objects=LIBTPMS_SLOTS))
    for tpm in (oracle, ours):
        assert tpm.execute(STARTUP_CLEAR) == SUCCESS
    yield oracle, ours
    oracle.close()


def both(pair, cmd: bytes) -> tuple[Response, Response]:
    oracle, ours = pair
    return Response(oracle.execute(cmd)), Response(ours.execute(cmd))


def same_rc(pair, cmd: bytes) -> int:
    theirs, mine = both(pair, cmd)
    assert rc_name(mine.rc) == rc_name(theirs.rc), cmd.hex()
    return mine.rc


def with_primary(pair, area):
    """Create ``area`` on both (same slot), yield its handle, flush it afterwards."""
    theirs, mine = both(pair, create_primary_cmd(area))
    assert theirs.rc == mine.rc == 0, (rc_name(theirs.rc), rc_name(mine.rc))
    assert theirs.raw[10:14] == mine.raw[10:14]
    return int.from_bytes(mine.raw[10:14], "big")


def flush(pair, handle: int) -> None:
    assert same_rc(pair, command(TPM_CC.FlushContext, u32(handle))) == 0


def scheme(alg: int, hash_alg: int | None = None) -> bytes:
    return u16(alg) + (u16(hash_alg) if hash_alg is not None else b"")


def encrypt_cmd(handle: int, message: bytes, in_scheme: bytes, label: bytes = b"") -> bytes:
    return command(TPM_CC.RSA_Encrypt, tpm2b(message) + in_scheme + tpm2b(label), u32(handle))


def decrypt_cmd(handle: int, ciphertext: bytes, in_scheme: bytes, label: bytes = b"") -> bytes:
    return command(TPM_CC.RSA_Decrypt, tpm2b(ciphertext) + in_scheme + tpm2b(label), u32(handle), b"")


def zgen_cmd(handle: int, x: bytes, y: bytes) -> bytes:
    point = T.TPM2B_ECC_POINT.pack(T.TPMS_ECC_POINT(x=x, y=y))
    return command(TPM_CC.ECDH_ZGen, point, u32(handle), b"")


def test_ecc_parameters_are_byte_identical(pair):
    _, ours = pair
    resp = Response(ours.execute(command(TPM_CC.GetCapability, u32(TPM_CAP.ECC_CURVES) + u32(0) + u32(100))))
    curves = T.TPMS_CAPABILITY_DATA.unpack(resp.params()[1:]).data
    assert curves
    for curve in [*curves, TPM_ECC_CURVE.NONE, 0x7777]:
        theirs, mine = both(pair, command(TPM_CC.ECC_Parameters, u16(curve)))
        assert mine.raw == theirs.raw, f"curve 0x{curve:04x}"


def test_rsa_bad_input_codes(pair):
    rsa = with_primary(pair, rsa_template(attrs=UNRESTRICTED_DECRYPT, bits=1024, sym=NO_SYM))
    oaep_key = with_primary(
        pair,
        rsa_template(attrs=UNRESTRICTED_DECRYPT, bits=1024, sym=NO_SYM, scheme=TPM_ALG.OAEP, hash_alg=TPM_ALG.SHA256),
    )
    try:
        for cmd in (
            encrypt_cmd(rsa, b"m", scheme(TPM_ALG.RSAES), b"no zero"),
            decrypt_cmd(rsa, bytes(RSA_BYTES), scheme(TPM_ALG.OAEP, TPM_ALG.SHA256), b"no zero"),
            encrypt_cmd(rsa, b"m", scheme(TPM_ALG.RSASSA, TPM_ALG.SHA256)),
            encrypt_cmd(rsa, b"m", scheme(TPM_ALG.OAEP, TPM_ALG.NULL)),
            encrypt_cmd(oaep_key, b"m", scheme(TPM_ALG.OAEP, TPM_ALG.SHA1)),
            encrypt_cmd(oaep_key, b"m", scheme(TPM_ALG.RSAES)),
            decrypt_cmd(oaep_key, bytes(RSA_BYTES), scheme(TPM_ALG.RSAES)),
            decrypt_cmd(rsa, bytes(RSA_BYTES - 1), scheme(TPM_ALG.RSAES)),
            decrypt_cmd(rsa, bytes(RSA_BYTES + 1), scheme(TPM_ALG.NULL)),
        ):
            assert same_rc(pair, cmd) != 0
        # What works on both: labelled OAEP and RSAES encryptions of the right size.
        assert same_rc(pair, encrypt_cmd(rsa, b"m" * 62, scheme(TPM_ALG.OAEP, TPM_ALG.SHA256), b"label\0")) == 0
        assert same_rc(pair, encrypt_cmd(rsa, b"m" * 117, scheme(TPM_ALG.RSAES))) == 0
        assert same_rc(pair, encrypt_cmd(oaep_key, b"m", scheme(TPM_ALG.NULL))) == 0
    finally:
        flush(pair, oaep_key)
        flush(pair, rsa)


def test_key_kind_and_attribute_codes(pair):
    storage = with_primary(pair, rsa_template(attrs=STORAGE, bits=1024))
    signing = with_primary(pair, ecc_template(attrs=SIGNING, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256))
    try:
        for cmd in (
            decrypt_cmd(storage, bytes(RSA_BYTES), scheme(TPM_ALG.RSAES)),
            encrypt_cmd(signing, b"m", scheme(TPM_ALG.RSAES)),
            zgen_cmd(storage, b"\x01", b"\x01"),
            zgen_cmd(signing, b"\x01", b"\x01"),
            command(TPM_CC.ECDH_KeyGen, handles=u32(storage)),
            command(
                TPM_CC.Commit,
                T.TPM2B_ECC_POINT.pack(T.TPMS_ECC_POINT(x=b"", y=b"")) + tpm2b(b"") + tpm2b(b""),
                u32(signing),
                b"",
            ),
        ):
            assert same_rc(pair, cmd) != 0
        assert same_rc(pair, encrypt_cmd(storage, b"m", scheme(TPM_ALG.RSAES))) == 0
        assert same_rc(pair, command(TPM_CC.ECDH_KeyGen, handles=u32(signing))) == 0
    finally:
        flush(pair, signing)
        flush(pair, storage)


def test_zgen_point_codes(pair):
    handle = with_primary(
        pair, ecc_template(attrs=UNRESTRICTED_DECRYPT, sym=NO_SYM, scheme=TPM_ALG.ECDH, hash_alg=TPM_ALG.SHA256)
    )
    gx = bytes.fromhex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296")
    gy = bytes.fromhex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")
    try:
        for x, y in (
            (gx, bytes(31) + b"\x01"),
            (b"", b""),
            (bytes(32), bytes(32)),
            (b"\xff" * 32, gy),
            (b"\x01" + gx, gy),
        ):
            assert same_rc(pair, zgen_cmd(handle, x, y)) != 0
        assert same_rc(pair, command(TPM_CC.ECDH_ZGen, u16(0), u32(handle), b"")) != 0
        # The generator is a point, with or without extra leading zeros; d * G is each TPM's own key.
        assert same_rc(pair, zgen_cmd(handle, gx, gy)) == 0
        assert same_rc(pair, zgen_cmd(handle, b"\x00" + gx, gy)) == 0
    finally:
        flush(pair, handle)


def test_sequence_handle_is_no_key(pair):
    theirs, mine = both(pair, command(TPM_CC.HashSequenceStart, tpm2b(b"") + u16(TPM_ALG.SHA256)))
    assert theirs.rc == mine.rc == 0 and theirs.raw[10:14] == mine.raw[10:14]
    handle = int.from_bytes(mine.raw[10:14], "big")
    try:
        assert same_rc(pair, encrypt_cmd(handle, b"m", scheme(TPM_ALG.RSAES))) != 0
        assert same_rc(pair, command(TPM_CC.ECDH_KeyGen, handles=u32(handle))) != 0
    finally:
        flush(pair, handle)
