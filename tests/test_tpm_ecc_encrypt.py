"""TPM2_ECC_Encrypt and TPM2_ECC_Decrypt (revision 1.83) through Engine.execute.

The ciphertexts made outside follow Part 1's steps with ``cryptography`` for the ECDH
x-coordinate and the independent point multiplication of tests/test_tpm_asymmetric.py for
the whole point:  C1 = [k]G, (x2, y2) = [k]Q, C2 = M XOR KDF2_H(x2 || y2), C3 = H(x2 || M || y2),
every coordinate at the curve's octet size.  Debian's libtpms has neither command (it answers
TPM_RC_COMMAND_CODE), so nothing here is compared with it.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from test_tpm_asymmetric import CRYPTO_CURVES, SIZES, at_handle, at_param, reference_multiply
from test_tpm_symmetric import load_external_cmd

from support.engine_oracle import EngineOracle
from support.object_templates import (
    DECRYPT,
    NO_SYM,
    SIGN,
    SIGNING,
    USER_WITH_AUTH,
    create_primary_cmd,
    ecc_template,
    rsa_template,
)
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_ECC_CURVE
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import TPM_RC, rc_name
from vtpm_cuse.tpm.marshal import Struct

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
HASHLIB = {TPM_ALG.SHA1: "sha1", TPM_ALG.SHA256: "sha256", TPM_ALG.SHA384: "sha384", TPM_ALG.SHA512: "sha512"}
ENCRYPT_OUT = Struct("ECC_Encrypt_Out", [("C1", T.TPM2B_ECC_POINT), ("C2", T.TPM2B_MAX_BUFFER), ("C3", T.TPM2B_DIGEST)])
CURVES = [TPM_ECC_CURVE.NIST_P192, TPM_ECC_CURVE.NIST_P256, TPM_ECC_CURVE.NIST_P384, TPM_ECC_CURVE.NIST_P521]
MESSAGE = b"encrypted to an ECC key, " * 5


def kdf(alg: int = TPM_ALG.KDF2, hash_alg: int | None = TPM_ALG.SHA256) -> bytes:
    return u16(alg) + (u16(hash_alg) if hash_alg is not None else b"")


def encrypt_cmd(handle: int, message: bytes, scheme: bytes) -> bytes:
    return command(TPM_CC.ECC_Encrypt, tpm2b(message) + scheme, u32(handle))


def decrypt_cmd(handle: int, c1: bytes, c2: bytes, c3: bytes, scheme: bytes) -> bytes:
    return command(TPM_CC.ECC_Decrypt, c1 + tpm2b(c2) + tpm2b(c3) + scheme, u32(handle), b"")


def point(x: int, y: int, size: int) -> bytes:
    return T.TPM2B_ECC_POINT.pack(T.TPMS_ECC_POINT(x=x.to_bytes(size, "big"), y=y.to_bytes(size, "big")))


def kdf2(name: str, z: bytes, size: int) -> bytes:
    out, counter = b"", 0
    while len(out) < size:
        counter += 1
        out += hashlib.new(name, z + counter.to_bytes(4, "big")).digest()
    return out[:size]


def shared_point(curve_id: int, scalar: int, peer: ec.EllipticCurvePublicKey) -> tuple[bytes, bytes]:
    """(x2, y2) = scalar * peer at the curve's size: x from cryptography's ECDH, checked
    against the independent multiplication, which also gives y."""
    size = SIZES[curve_id]
    numbers = peer.public_numbers()
    x, y = reference_multiply(curve_id, scalar, (numbers.x, numbers.y))
    exchanged = ec.derive_private_key(scalar, CRYPTO_CURVES[curve_id]()).exchange(ec.ECDH(), peer)
    assert exchanged == x.to_bytes(size, "big")
    return x.to_bytes(size, "big"), y.to_bytes(size, "big")


def outside_encrypt(curve_id: int, recipient: ec.EllipticCurvePublicKey, message: bytes, name: str = "sha256"):
    """(C1, C2, C3) as the TPM takes them, following Part 1's steps."""
    ephemeral = ec.generate_private_key(CRYPTO_CURVES[curve_id]())
    k = ephemeral.private_numbers().private_value
    x2, y2 = shared_point(curve_id, k, recipient)
    c2 = bytes(a ^ b for a, b in zip(message, kdf2(name, x2 + y2, len(message)), strict=True))
    c3 = hashlib.new(name, x2 + message + y2).digest()
    numbers = ephemeral.public_key().public_numbers()
    return point(numbers.x, numbers.y, SIZES[curve_id]), c2, c3


@pytest.fixture(scope="module")
def tpm() -> EngineOracle:
    engine = EngineOracle(Engine())
    assert Response(engine.execute(STARTUP_CLEAR)).rc == 0
    return engine


def run(tpm, cmd: bytes) -> Response:
    return Response(tpm.execute(cmd))


def ok(tpm, cmd: bytes) -> Response:
    resp = run(tpm, cmd)
    assert resp.rc == 0, rc_name(resp.rc)
    return resp


def expect(tpm, cmd: bytes, rc: int) -> None:
    assert rc_name(run(tpm, cmd).rc) == rc_name(rc)


def handle_of(resp: Response) -> int:
    return int.from_bytes(resp.raw[10:14], "big")


DECRYPT_KEY = USER_WITH_AUTH | DECRYPT


def external_key(tpm, curve_id: int, attrs: int = DECRYPT_KEY) -> tuple[int, ec.EllipticCurvePrivateKey]:
    """An ECC key the test knows, loaded with TPM2_LoadExternal (NULL hierarchy)."""
    private = ec.generate_private_key(CRYPTO_CURVES[curve_id]())
    numbers, size = private.public_key().public_numbers(), SIZES[curve_id]
    area = ecc_template(attrs=attrs, curve=curve_id, sym=NO_SYM)
    area = T.TPMT_PUBLIC(
        type=area.type,
        nameAlg=area.nameAlg,
        objectAttributes=attrs,
        authPolicy=b"",
        parameters=area.parameters,
        unique=T.TPMS_ECC_POINT(x=numbers.x.to_bytes(size, "big"), y=numbers.y.to_bytes(size, "big")),
    )
    scalar = private.private_numbers().private_value.to_bytes(size, "big")
    return handle_of(ok(tpm, load_external_cmd(area, TPM_ALG.ECC, scalar, b""))), private


@pytest.fixture(scope="module")
def keys(tpm):
    made = {curve: external_key(tpm, curve) for curve in CURVES}
    made["sign"] = external_key(tpm, TPM_ECC_CURVE.NIST_P256, USER_WITH_AUTH | SIGN)
    return made


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: TPM_ECC_CURVE(c).name)
def test_a_ciphertext_made_outside_decrypts_inside(tpm, keys, curve):
    handle, private = keys[curve]
    c1, c2, c3 = outside_encrypt(curve, private.public_key(), MESSAGE)
    assert ok(tpm, decrypt_cmd(handle, c1, c2, c3, kdf())).params() == tpm2b(MESSAGE)


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: TPM_ECC_CURVE(c).name)
def test_a_ciphertext_made_inside_decrypts_outside(tpm, keys, curve):
    handle, private = keys[curve]
    out = ENCRYPT_OUT.unpack(ok(tpm, encrypt_cmd(handle, MESSAGE, kdf())).params())
    size = SIZES[curve]
    assert len(out.C1.x) == len(out.C1.y) == size and len(out.C2) == len(MESSAGE) and len(out.C3) == 32
    c1 = ec.EllipticCurvePublicNumbers(
        int.from_bytes(out.C1.x, "big"), int.from_bytes(out.C1.y, "big"), CRYPTO_CURVES[curve]()
    ).public_key()
    x2, y2 = shared_point(curve, private.private_numbers().private_value, c1)
    message = bytes(a ^ b for a, b in zip(out.C2, kdf2("sha256", x2 + y2, len(out.C2)), strict=True))
    assert message == MESSAGE
    assert out.C3 == hashlib.sha256(x2 + message + y2).digest()
    # And round trip through the TPM, C1 a fresh point each time.
    again = ENCRYPT_OUT.unpack(ok(tpm, encrypt_cmd(handle, MESSAGE, kdf())).params())
    assert again.C1 != out.C1
    c1_bytes = T.TPM2B_ECC_POINT.pack(out.C1)
    assert ok(tpm, decrypt_cmd(handle, c1_bytes, out.C2, out.C3, kdf())).params() == tpm2b(MESSAGE)


@pytest.mark.parametrize("alg", list(HASHLIB), ids=lambda a: TPM_ALG(a).name)
def test_every_hash_and_empty_and_long_messages(tpm, keys, alg):
    handle, private = keys[TPM_ECC_CURVE.NIST_P256]
    for message in (b"", os.urandom(1), os.urandom(1024)):
        c1, c2, c3 = outside_encrypt(TPM_ECC_CURVE.NIST_P256, private.public_key(), message, HASHLIB[alg])
        assert ok(tpm, decrypt_cmd(handle, c1, c2, c3, kdf(hash_alg=alg))).params() == tpm2b(message)
        parsed = ENCRYPT_OUT.unpack(ok(tpm, encrypt_cmd(handle, message, kdf(hash_alg=alg))).params())
        assert len(parsed.C3) == hashlib.new(HASHLIB[alg]).digest_size and len(parsed.C2) == len(message)


def test_a_changed_ciphertext_or_another_key_is_value(tpm, keys):
    handle, private = keys[TPM_ECC_CURVE.NIST_P256]
    c1, c2, c3 = outside_encrypt(TPM_ECC_CURVE.NIST_P256, private.public_key(), MESSAGE)
    expect(tpm, decrypt_cmd(handle, c1, c2, bytes([c3[0] ^ 1]) + c3[1:], kdf()), TPM_RC.VALUE)
    expect(tpm, decrypt_cmd(handle, c1, bytes([c2[0] ^ 1]) + c2[1:], c3, kdf()), TPM_RC.VALUE)
    expect(tpm, decrypt_cmd(handle, c1, c2, c3, kdf(hash_alg=TPM_ALG.SHA384)), TPM_RC.VALUE)
    other, _ = keys[TPM_ECC_CURVE.NIST_P384]
    c1_384, c2_384, c3_384 = outside_encrypt(TPM_ECC_CURVE.NIST_P256, private.public_key(), MESSAGE)
    # C1 of P-256 is no point of P-384.
    expect(tpm, decrypt_cmd(other, c1_384, c2_384, c3_384, kdf()), at_param(TPM_RC.ECC_POINT, 1))


def test_key_and_scheme_codes(tpm, keys):
    handle, private = keys[TPM_ECC_CURVE.NIST_P256]
    sign_only, _ = keys["sign"]
    c1, c2, c3 = outside_encrypt(TPM_ECC_CURVE.NIST_P256, private.public_key(), MESSAGE)
    rsa = handle_of(ok(tpm, create_primary_cmd(rsa_template(attrs=SIGNING, bits=1024, sym=NO_SYM))))
    try:
        expect(tpm, encrypt_cmd(rsa, MESSAGE, kdf()), at_handle(TPM_RC.KEY))
        expect(tpm, decrypt_cmd(rsa, c1, c2, c3, kdf()), at_handle(TPM_RC.KEY))
    finally:
        ok(tpm, command(TPM_CC.FlushContext, u32(rsa)))
    # Encrypting needs the public key only; decrypting an unrestricted decryption key.
    ok(tpm, encrypt_cmd(sign_only, MESSAGE, kdf()))
    expect(tpm, decrypt_cmd(sign_only, c1, c2, c3, kdf()), at_handle(TPM_RC.ATTRIBUTES))
    # A KDF must be named (the key names none) and it must be KDF2.
    for scheme in (kdf(TPM_ALG.NULL, None), kdf(TPM_ALG.MGF1), kdf(TPM_ALG.KDF1_SP800_56A)):
        expect(tpm, encrypt_cmd(handle, MESSAGE, scheme), at_param(TPM_RC.SCHEME, 2))
        expect(tpm, decrypt_cmd(handle, c1, c2, c3, scheme), at_param(TPM_RC.SCHEME, 4))
    # Unmarshalling: an unknown KDF, an unknown hash, a point off the curve.
    expect(tpm, encrypt_cmd(handle, MESSAGE, kdf(0x7777, None)), at_param(TPM_RC.KDF, 2))
    expect(tpm, encrypt_cmd(handle, MESSAGE, kdf(hash_alg=0x7777)), at_param(TPM_RC.HASH, 2))
    numbers = T.TPM2B_ECC_POINT.unpack(c1)
    off_curve = point(int.from_bytes(numbers.x, "big"), int.from_bytes(numbers.y, "big") ^ 1, 32)
    expect(tpm, decrypt_cmd(handle, off_curve, c2, c3, kdf()), at_param(TPM_RC.ECC_POINT, 1))
