"""Asymmetric primitives (Part 3, clause 14): RSA_Encrypt, RSA_Decrypt, ECDH_KeyGen, ECDH_ZGen,
ECC_Parameters, Commit, EC_Ephemeral and ZGen_2Phase (more of those two in test_tpm_two_phase.py),
through Engine.execute with real command bytes.

The other side of every exchange is ``cryptography`` outside the engine: ciphertexts made outside
are decrypted inside and the reverse, ECDH secrets are computed on both sides, and the
y-coordinates the TPM returns are checked against a small, independent affine point
multiplication written here (``cryptography`` exposes x-coordinates only).
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from support.engine_oracle import EngineOracle
from support.object_templates import (
    DECRYPT,
    FIXED_PARENT,
    FIXED_TPM,
    NO_SYM,
    SDO,
    SIGN,
    SIGNING,
    STORAGE,
    USER_WITH_AUTH,
    create_primary_cmd,
    ecc_template,
    rsa_template,
)
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_ECC_CURVE, TPM_RH
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import TPM_RC, rc_name
from vtpm_cuse.tpm.keys import rsa_private_key
from vtpm_cuse.tpm.marshal import UINT16, Reader, Struct
from vtpm_cuse.tpm.rng import Rng

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
SUCCESS = bytes.fromhex("80010000000a00000000")
UNRESTRICTED_DECRYPT = FIXED_TPM | FIXED_PARENT | SDO | USER_WITH_AUTH | DECRYPT
SIGN_AND_DECRYPT = UNRESTRICTED_DECRYPT | SIGN
RSA_BITS = 1024
EXPONENT = 65537
#: Format-one positions, written out from Part 2 (TPM_RC) rather than taken from the engine.
FMT1_PARAMETER, NUMBER_SHIFT = 0x040, 8

#: Field primes (FIPS 186-4, D.1.2), a = -3: for the independent point multiplication below.
FIELD_PRIMES = {
    TPM_ECC_CURVE.NIST_P192: 2**192 - 2**64 - 1,
    TPM_ECC_CURVE.NIST_P224: 2**224 - 2**96 + 1,
    TPM_ECC_CURVE.NIST_P256: 2**256 - 2**224 + 2**192 + 2**96 - 1,
    TPM_ECC_CURVE.NIST_P384: 2**384 - 2**128 - 2**96 + 2**32 - 1,
    TPM_ECC_CURVE.NIST_P521: 2**521 - 1,
}
CRYPTO_CURVES = {
    TPM_ECC_CURVE.NIST_P192: ec.SECP192R1,
    TPM_ECC_CURVE.NIST_P224: ec.SECP224R1,
    TPM_ECC_CURVE.NIST_P256: ec.SECP256R1,
    TPM_ECC_CURVE.NIST_P384: ec.SECP384R1,
    TPM_ECC_CURVE.NIST_P521: ec.SECP521R1,
}
SIZES = {
    TPM_ECC_CURVE.NIST_P192: 24,
    TPM_ECC_CURVE.NIST_P224: 28,
    TPM_ECC_CURVE.NIST_P256: 32,
    TPM_ECC_CURVE.NIST_P384: 48,
    TPM_ECC_CURVE.NIST_P521: 66,
}

CREATE_PRIMARY_OUT = Struct("CreatePrimary_Out", [("outPublic", T.TPM2B_PUBLIC)])
ECDH_KEYGEN_OUT = Struct("ECDH_KeyGen_Out", [("zPoint", T.TPM2B_ECC_POINT), ("pubPoint", T.TPM2B_ECC_POINT)])


def at_handle(rc: int, number: int = 1) -> int:
    return rc | (number << NUMBER_SHIFT)


def at_param(rc: int, number: int) -> int:
    return rc | FMT1_PARAMETER | (number << NUMBER_SHIFT)


# --- an independent affine point multiplication (tests only) -----------------------------------


def _add(p: int, a: int, P, Q):
    if P is None:
        return Q
    if Q is None:
        return P
    if P[0] == Q[0] and (P[1] + Q[1]) % p == 0:
        return None
    if P == Q:
        slope = (3 * P[0] * P[0] + a) * pow(2 * P[1], -1, p) % p
    else:
        slope = (Q[1] - P[1]) * pow(Q[0] - P[0], -1, p) % p
    x = (slope * slope - P[0] - Q[0]) % p
    return x, (slope * (P[0] - x) - P[1]) % p


def reference_multiply(curve_id: int, k: int, point: tuple[int, int]) -> tuple[int, int]:
    p = FIELD_PRIMES[curve_id]
    result, addend = None, point
    while k:
        if k & 1:
            result = _add(p, p - 3, result, addend)
        addend = _add(p, p - 3, addend, addend)
        k >>= 1
    return result


# --- fixtures and builders ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tpm() -> EngineOracle:
    """One engine for the module: the keys are created once (commands here change nothing else)."""
    engine = EngineOracle(Engine())
    assert engine.execute(STARTUP_CLEAR) == SUCCESS
    return engine


def run(tpm, cmd: bytes) -> Response:
    return Response(tpm.execute(cmd))


def ok(tpm, cmd: bytes) -> Response:
    resp = run(tpm, cmd)
    assert resp.rc == 0, rc_name(resp.rc)
    return resp


def expect(tpm, cmd: bytes, rc: int) -> None:
    assert rc_name(run(tpm, cmd).rc) == rc_name(rc)


def primary(tpm, area) -> tuple[int, object]:
    resp = ok(tpm, create_primary_cmd(area))
    return int.from_bytes(resp.raw[10:14], "big"), CREATE_PRIMARY_OUT.unmarshal(Reader(resp.params(1))).outPublic


_KEYS: dict = {}


def key(tpm, name: str) -> tuple[int, object]:
    """A primary key by role, created on first use."""
    if name not in _KEYS:
        rsa_key = lambda attrs, **kw: rsa_template(attrs=attrs, bits=RSA_BITS, sym=NO_SYM, **kw)  # noqa: E731
        ecc_key = lambda attrs, **kw: ecc_template(attrs=attrs, sym=NO_SYM, **kw)  # noqa: E731
        areas = {
            "rsa": rsa_key(UNRESTRICTED_DECRYPT),
            "rsa_oaep": rsa_key(UNRESTRICTED_DECRYPT, scheme=TPM_ALG.OAEP, hash_alg=TPM_ALG.SHA256),
            "rsa_rsaes": rsa_key(UNRESTRICTED_DECRYPT, scheme=TPM_ALG.RSAES),
            "rsa_storage": rsa_template(attrs=STORAGE, bits=RSA_BITS),
            "rsa_sign": rsa_key(SIGNING),
            "rsa_sign_decrypt": rsa_key(SIGN_AND_DECRYPT),
            "ecc_storage": ecc_template(attrs=STORAGE),
            "ecc_sign": ecc_key(SIGNING),
            "ecc_sign_decrypt": ecc_key(SIGN_AND_DECRYPT),
        }
        for curve in SIZES:
            areas[f"ecdh_{curve}"] = ecc_key(
                UNRESTRICTED_DECRYPT, curve=curve, scheme=TPM_ALG.ECDH, hash_alg=TPM_ALG.SHA256
            )
        _KEYS[name] = primary(tpm, areas[name])
    return _KEYS[name]


def rsa_public(area) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(EXPONENT, int.from_bytes(area.unique, "big")).public_key()


def rsa_private(tpm, handle: int) -> rsa.RSAPrivateKey:
    """The TPM's key outside (to check what RSA_Encrypt made): rebuilt from the loaded object."""
    return rsa_private_key(tpm.engine.volatile.objects.loaded[handle])


def scheme_bytes(scheme: int, hash_alg: int | None = None) -> bytes:
    details = None if hash_alg is None else T.TPMS_SCHEME_HASH(hashAlg=hash_alg)
    return T.TPMT_RSA_DECRYPT.pack(T.TPMT_RSA_DECRYPT(scheme=scheme, details=details))


def encrypt_cmd(handle: int, message: bytes, scheme: bytes, label: bytes = b"") -> bytes:
    return command(TPM_CC.RSA_Encrypt, tpm2b(message) + scheme + tpm2b(label), u32(handle))


def decrypt_cmd(handle: int, ciphertext: bytes, scheme: bytes, label: bytes = b"") -> bytes:
    return command(TPM_CC.RSA_Decrypt, tpm2b(ciphertext) + scheme + tpm2b(label), u32(handle), b"")


def tpm_encrypt(tpm, handle: int, message: bytes, scheme: bytes, label: bytes = b"") -> bytes:
    return T.TPM2B_PUBLIC_KEY_RSA.unpack(ok(tpm, encrypt_cmd(handle, message, scheme, label)).params())


def tpm_decrypt(tpm, handle: int, ciphertext: bytes, scheme: bytes, label: bytes = b"") -> bytes:
    return T.TPM2B_PUBLIC_KEY_RSA.unpack(ok(tpm, decrypt_cmd(handle, ciphertext, scheme, label)).params())


def oaep(alg=hashes.SHA256, label: bytes | None = None) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(alg()), algorithm=alg(), label=label)


OAEP_SHA256 = scheme_bytes(TPM_ALG.OAEP, TPM_ALG.SHA256)
OAEP_SHA1 = scheme_bytes(TPM_ALG.OAEP, TPM_ALG.SHA1)
RSAES = scheme_bytes(TPM_ALG.RSAES)
NULL = scheme_bytes(TPM_ALG.NULL)


# --- RSA_Encrypt / RSA_Decrypt ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tpm_scheme", "outside"),
    [
        (RSAES, padding.PKCS1v15()),
        (OAEP_SHA256, oaep()),
        (OAEP_SHA1, oaep(hashes.SHA1)),
    ],
    ids=["rsaes", "oaep-sha256", "oaep-sha1"],
)
def test_ciphertext_made_outside_decrypts_inside_and_the_reverse(tpm, tpm_scheme, outside):
    handle, area = key(tpm, "rsa")
    message = os.urandom(20)
    assert tpm_decrypt(tpm, handle, rsa_public(area).encrypt(message, outside), tpm_scheme) == message
    ciphertext = tpm_encrypt(tpm, handle, message, tpm_scheme)
    assert len(ciphertext) == RSA_BITS // 8
    assert rsa_private(tpm, handle).decrypt(ciphertext, outside) == message


def test_oaep_label_includes_its_terminating_zero(tpm):
    handle, area = key(tpm, "rsa")
    label = b"my label\0"
    ciphertext = rsa_public(area).encrypt(b"secret", oaep(label=label))
    assert tpm_decrypt(tpm, handle, ciphertext, OAEP_SHA256, label) == b"secret"
    # The same text without the zero is another label: the padding check fails.
    expect(
        tpm,
        decrypt_cmd(handle, rsa_public(area).encrypt(b"secret", oaep(label=b"my label")), OAEP_SHA256, label),
        TPM_RC.VALUE,
    )
    inside = tpm_encrypt(tpm, handle, b"secret", OAEP_SHA256, label)
    assert rsa_private(tpm, handle).decrypt(inside, oaep(label=label)) == b"secret"


@pytest.mark.parametrize("command_builder", [encrypt_cmd, decrypt_cmd], ids=["encrypt", "decrypt"])
def test_a_label_without_terminating_zero_is_value(tpm, command_builder):
    handle, _ = key(tpm, "rsa")
    expect(tpm, command_builder(handle, bytes(RSA_BITS // 8), OAEP_SHA256, b"label"), at_param(TPM_RC.VALUE, 3))
    # ... whatever the scheme: the label is checked before the scheme is looked at.
    expect(tpm, command_builder(handle, bytes(RSA_BITS // 8), RSAES, b"x"), at_param(TPM_RC.VALUE, 3))


def test_null_scheme_is_raw_rsa(tpm):
    handle, area = key(tpm, "rsa")
    n = int.from_bytes(area.unique, "big")
    m = int.from_bytes(os.urandom(RSA_BITS // 8 - 1), "big")
    ciphertext = tpm_encrypt(tpm, handle, m.to_bytes(RSA_BITS // 8 - 1, "big"), NULL)
    assert int.from_bytes(ciphertext, "big") == pow(m, EXPONENT, n)
    # Decryption answers the whole block, leading zeros included.
    assert tpm_decrypt(tpm, handle, ciphertext, NULL) == m.to_bytes(RSA_BITS // 8, "big")
    # Leading zero octets beyond the modulus size are only a number's padding.
    assert tpm_encrypt(tpm, handle, bytes(4) + m.to_bytes(RSA_BITS // 8, "big"), NULL) == ciphertext


def test_key_scheme_against_the_callers(tpm):
    handle, area = key(tpm, "rsa_oaep")
    # TPM_ALG_NULL from the caller: the key's OAEP-SHA256.
    assert tpm_decrypt(tpm, handle, rsa_public(area).encrypt(b"m", oaep()), NULL) == b"m"
    assert rsa_private(tpm, handle).decrypt(tpm_encrypt(tpm, handle, b"m", NULL), oaep()) == b"m"
    # The same scheme again is fine; another scheme, or OAEP with another hash, is not.
    assert tpm_decrypt(tpm, handle, rsa_public(area).encrypt(b"m", oaep()), OAEP_SHA256) == b"m"
    for other in (OAEP_SHA1, RSAES):
        expect(tpm, decrypt_cmd(handle, bytes(RSA_BITS // 8), other), at_param(TPM_RC.SCHEME, 2))
        expect(tpm, encrypt_cmd(handle, b"m", other), at_param(TPM_RC.SCHEME, 2))
    handle, area = key(tpm, "rsa_rsaes")
    assert tpm_decrypt(tpm, handle, rsa_public(area).encrypt(b"m", padding.PKCS1v15()), NULL) == b"m"
    expect(tpm, encrypt_cmd(handle, b"m", OAEP_SHA256), at_param(TPM_RC.SCHEME, 2))


@pytest.mark.parametrize("scheme", [RSAES, OAEP_SHA256], ids=["rsaes", "oaep"])
def test_bad_padding_is_value(tpm, scheme):
    handle, area = key(tpm, "rsa")
    n = int.from_bytes(area.unique, "big")
    # A random number below n is (almost surely) no valid encoding, and raw it is one to RSAEP.
    garbage = pow(int.from_bytes(os.urandom(64), "big") | 1, EXPONENT, n).to_bytes(RSA_BITS // 8, "big")
    expect(tpm, decrypt_cmd(handle, garbage, scheme), TPM_RC.VALUE)
    # RSAES with fewer than 8 padding octets: block 00 02 PS(7) 00 M.
    block = b"\x00\x02" + b"\x11" * 7 + b"\x00" + b"m" * (RSA_BITS // 8 - 10)
    short = pow(int.from_bytes(block, "big"), EXPONENT, n).to_bytes(RSA_BITS // 8, "big")
    expect(tpm, decrypt_cmd(handle, short, RSAES), TPM_RC.VALUE)
    assert len(tpm_decrypt(tpm, handle, short, NULL)) == RSA_BITS // 8


def test_ciphertext_size_and_value(tpm):
    handle, area = key(tpm, "rsa")
    expect(tpm, decrypt_cmd(handle, bytes(RSA_BITS // 8 - 1), NULL), TPM_RC.SIZE)
    expect(tpm, decrypt_cmd(handle, bytes(RSA_BITS // 8 + 1), NULL), TPM_RC.SIZE)
    expect(tpm, decrypt_cmd(handle, area.unique, NULL), TPM_RC.VALUE)
    expect(tpm, decrypt_cmd(handle, b"\xff" * (RSA_BITS // 8), OAEP_SHA256), TPM_RC.VALUE)


def test_message_sizes(tpm):
    handle, area = key(tpm, "rsa")
    k = RSA_BITS // 8
    assert len(tpm_encrypt(tpm, handle, bytes(k - 11), RSAES)) == k
    expect(tpm, encrypt_cmd(handle, bytes(k - 10), RSAES), TPM_RC.VALUE)
    assert len(tpm_encrypt(tpm, handle, bytes(k - 66), OAEP_SHA256)) == k
    expect(tpm, encrypt_cmd(handle, bytes(k - 65), OAEP_SHA256), TPM_RC.VALUE)
    expect(tpm, encrypt_cmd(handle, area.unique, NULL), TPM_RC.VALUE)
    expect(tpm, encrypt_cmd(handle, b"\x01" + bytes(k), NULL), TPM_RC.VALUE)
    # OAEP-SHA512 needs 2 * 64 + 2 octets: more than a 1024-bit key has.
    expect(tpm, encrypt_cmd(handle, b"m", scheme_bytes(TPM_ALG.OAEP, TPM_ALG.SHA512)), TPM_RC.HASH)
    expect(tpm, decrypt_cmd(handle, bytes(k), scheme_bytes(TPM_ALG.OAEP, TPM_ALG.SHA512)), TPM_RC.VALUE)


def test_restricted_and_signing_keys(tpm):
    storage, area = key(tpm, "rsa_storage")
    # Encryption uses the public key only: a storage key may encrypt, but never decrypt.
    ciphertext = tpm_encrypt(tpm, storage, b"m", RSAES)
    expect(tpm, decrypt_cmd(storage, ciphertext, RSAES), at_handle(TPM_RC.ATTRIBUTES))
    signing, _ = key(tpm, "rsa_sign")
    expect(tpm, encrypt_cmd(signing, b"m", RSAES), at_handle(TPM_RC.ATTRIBUTES))
    expect(tpm, decrypt_cmd(signing, bytes(RSA_BITS // 8), RSAES), at_handle(TPM_RC.ATTRIBUTES))
    both, area = key(tpm, "rsa_sign_decrypt")
    assert tpm_decrypt(tpm, both, rsa_public(area).encrypt(b"m", oaep()), OAEP_SHA256) == b"m"


def test_not_an_rsa_key(tpm):
    ecc, _ = key(tpm, "ecc_sign_decrypt")
    expect(tpm, encrypt_cmd(ecc, b"m", RSAES), at_handle(TPM_RC.KEY))
    expect(tpm, decrypt_cmd(ecc, bytes(RSA_BITS // 8), RSAES), at_handle(TPM_RC.KEY))
    sequence = ok(tpm, command(TPM_CC.HashSequenceStart, tpm2b(b"") + u16(TPM_ALG.SHA256)))
    handle = int.from_bytes(sequence.raw[10:14], "big")
    try:
        expect(tpm, encrypt_cmd(handle, b"m", RSAES), at_handle(TPM_RC.KEY))
    finally:
        ok(tpm, command(TPM_CC.FlushContext, u32(handle)))


def test_in_scheme_unmarshalling(tpm):
    handle, _ = key(tpm, "rsa")
    for bad in (TPM_ALG.RSASSA, TPM_ALG.ECDH, TPM_ALG.SHA256):
        expect(tpm, encrypt_cmd(handle, b"m", u16(bad)), at_param(TPM_RC.VALUE, 2))
    expect(tpm, encrypt_cmd(handle, b"m", u16(TPM_ALG.OAEP) + u16(TPM_ALG.NULL)), at_param(TPM_RC.HASH, 2))


def test_rsa_decrypt_can_be_cancelled():
    engine = Engine()
    assert engine.execute(STARTUP_CLEAR) == SUCCESS
    handle, area = primary(EngineOracle(engine), rsa_template(attrs=UNRESTRICTED_DECRYPT, bits=RSA_BITS, sym=NO_SYM))
    ciphertext = rsa_public(area).encrypt(b"m", padding.PKCS1v15())

    def cancelling_source(n: int) -> bytes:
        engine.request_cancel()  # the platform cancels while the command runs
        return os.urandom(n)

    engine.random = Rng(cancelling_source)
    assert Response(engine.execute(decrypt_cmd(handle, ciphertext, RSAES))).rc == TPM_RC.CANCELED
    engine.random = Rng()
    assert (
        T.TPM2B_PUBLIC_KEY_RSA.unpack(Response(engine.execute(decrypt_cmd(handle, ciphertext, RSAES))).params()) == b"m"
    )


def test_rsa_decrypt_is_declared_cancelable():
    from vtpm_cuse.tpm.commands import COMMANDS

    assert COMMANDS.get(TPM_CC.RSA_Decrypt).cancelable
    assert not COMMANDS.get(TPM_CC.RSA_Encrypt).cancelable


# --- ECDH_ZGen / ECDH_KeyGen --------------------------------------------------------------------


def tpm_point(area) -> tuple[int, int]:
    return int.from_bytes(area.unique.x, "big"), int.from_bytes(area.unique.y, "big")


def zgen_cmd(handle: int, point) -> bytes:
    return command(TPM_CC.ECDH_ZGen, T.TPM2B_ECC_POINT.pack(point), u32(handle), b"")


def zgen(tpm, handle: int, point):
    return T.TPM2B_ECC_POINT.unpack(ok(tpm, zgen_cmd(handle, point)).params())


def ecc_point(numbers: ec.EllipticCurvePublicNumbers, size: int):
    return T.TPMS_ECC_POINT(x=numbers.x.to_bytes(size, "big"), y=numbers.y.to_bytes(size, "big"))


@pytest.mark.parametrize("curve", list(SIZES), ids=lambda c: TPM_ECC_CURVE(c).name)
def test_zgen_equals_the_exchange_outside(tpm, curve):
    handle, area = key(tpm, f"ecdh_{curve}")
    size = SIZES[curve]
    theirs = ec.generate_private_key(CRYPTO_CURVES[curve]())
    ours_public = ec.EllipticCurvePublicNumbers(*tpm_point(area), CRYPTO_CURVES[curve]()).public_key()
    z = zgen(tpm, handle, ecc_point(theirs.public_key().public_numbers(), size))
    assert z.x == theirs.exchange(ec.ECDH(), ours_public)
    # The whole point, y included: d * (k * G) = k * Q, by the independent multiplication.
    k = theirs.private_numbers().private_value
    assert (int.from_bytes(z.x, "big"), int.from_bytes(z.y, "big")) == reference_multiply(curve, k, tpm_point(area))


def test_zgen_of_the_generator_is_the_public_key(tpm):
    curve = TPM_ECC_CURVE.NIST_P256
    handle, area = key(tpm, f"ecdh_{curve}")
    generator = ec.derive_private_key(1, ec.SECP256R1()).public_key().public_numbers()
    z = zgen(tpm, handle, ecc_point(generator, 32))
    assert (z.x, z.y) == (area.unique.x, area.unique.y)
    # Short coordinates are numbers: leading zeros may be left out.
    point = T.TPMS_ECC_POINT(x=generator.x.to_bytes(32, "big").lstrip(b"\0"), y=generator.y.to_bytes(32, "big"))
    assert zgen(tpm, handle, point) == z
    point = T.TPMS_ECC_POINT(x=b"\x00\x00" + generator.x.to_bytes(32, "big"), y=generator.y.to_bytes(32, "big"))
    assert zgen(tpm, handle, point) == z


def test_zgen_with_a_sign_and_decrypt_key(tpm):
    handle, area = key(tpm, "ecc_sign_decrypt")
    theirs = ec.generate_private_key(ec.SECP256R1())
    z = zgen(tpm, handle, ecc_point(theirs.public_key().public_numbers(), 32))
    mine = ec.EllipticCurvePublicNumbers(*tpm_point(area), ec.SECP256R1()).public_key()
    assert z.x == theirs.exchange(ec.ECDH(), mine)


def test_zgen_point_validation(tpm):
    handle, area = key(tpm, f"ecdh_{TPM_ECC_CURVE.NIST_P256}")
    x, y = area.unique.x, area.unique.y
    off_curve = T.TPMS_ECC_POINT(x=x, y=(int.from_bytes(y, "big") ^ 1).to_bytes(32, "big"))
    for bad in (
        off_curve,
        T.TPMS_ECC_POINT(x=b"", y=b""),
        T.TPMS_ECC_POINT(x=bytes(32), y=bytes(32)),
        T.TPMS_ECC_POINT(x=b"\x01" + x, y=y),
        T.TPMS_ECC_POINT(x=b"\xff" * 32, y=y),
    ):
        expect(tpm, zgen_cmd(handle, bad), at_param(TPM_RC.ECC_POINT, 1))
    # A P-384 point is no P-256 point.
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
    expect(tpm, zgen_cmd(handle, ecc_point(p384, 48)), at_param(TPM_RC.ECC_POINT, 1))
    expect(tpm, command(TPM_CC.ECDH_ZGen, u16(0), u32(handle), b""), at_param(TPM_RC.SIZE, 1))


def test_zgen_key_checks(tpm):
    point = T.TPMS_ECC_POINT(x=b"\x01", y=b"\x01")
    for name in ("ecc_storage", "ecc_sign"):
        expect(tpm, zgen_cmd(key(tpm, name)[0], point), at_handle(TPM_RC.ATTRIBUTES))
    expect(tpm, zgen_cmd(key(tpm, "rsa")[0], point), at_handle(TPM_RC.KEY))


@pytest.mark.parametrize("curve", [TPM_ECC_CURVE.NIST_P256, TPM_ECC_CURVE.NIST_P384], ids=["P256", "P384"])
def test_ecdh_keygen_matches_zgen(tpm, curve):
    handle, area = key(tpm, f"ecdh_{curve}")
    out = ECDH_KEYGEN_OUT.unpack(ok(tpm, command(TPM_CC.ECDH_KeyGen, handles=u32(handle))).params())
    size = SIZES[curve]
    assert len(out.pubPoint.x) == len(out.zPoint.x) == size
    # The TPM owner's side: d * Qe is the Z the caller got.
    assert zgen(tpm, handle, out.pubPoint) == out.zPoint
    ephemeral = ec.EllipticCurvePublicNumbers(
        int.from_bytes(out.pubPoint.x, "big"), int.from_bytes(out.pubPoint.y, "big"), CRYPTO_CURVES[curve]()
    )
    ephemeral.public_key()  # on the curve
    again = ECDH_KEYGEN_OUT.unpack(ok(tpm, command(TPM_CC.ECDH_KeyGen, handles=u32(handle))).params())
    assert again.pubPoint != out.pubPoint


def test_ecdh_keygen_uses_only_the_public_key(tpm):
    for name in ("ecc_sign", "ecc_storage"):
        handle, _ = key(tpm, name)
        out = ECDH_KEYGEN_OUT.unpack(ok(tpm, command(TPM_CC.ECDH_KeyGen, handles=u32(handle))).params())
        assert out.zPoint.x and out.pubPoint.x
    expect(tpm, command(TPM_CC.ECDH_KeyGen, handles=u32(key(tpm, "rsa")[0])), at_handle(TPM_RC.KEY))


# --- ECC_Parameters -----------------------------------------------------------------------------


def capability(tpm, cap: int, prop: int, count: int):
    resp = ok(tpm, command(TPM_CC.GetCapability, u32(cap) + u32(prop) + u32(count)))
    return T.TPMS_CAPABILITY_DATA.unpack(resp.params()[1:]).data


def test_every_reported_curve_has_its_parameters(tpm):
    curves = capability(tpm, TPM_CAP.ECC_CURVES, 0, 100)
    assert sorted(curves) == sorted(SIZES)
    for curve in curves:
        detail = T.TPMS_ALGORITHM_DETAIL_ECC.unpack(ok(tpm, command(TPM_CC.ECC_Parameters, u16(curve))).params())
        size = SIZES[curve]
        generator = ec.derive_private_key(1, CRYPTO_CURVES[curve]()).public_key().public_numbers()
        p = FIELD_PRIMES[curve]
        assert detail.curveID == curve
        assert detail.keySize == CRYPTO_CURVES[curve]().key_size
        assert (detail.p, detail.a) == (p.to_bytes(size, "big"), (p - 3).to_bytes(size, "big"))
        assert (detail.gX, detail.gY) == (generator.x.to_bytes(size, "big"), generator.y.to_bytes(size, "big"))
        assert detail.h == b"\x01"
        gx, gy, b = generator.x, generator.y, int.from_bytes(detail.b, "big")
        assert (gy * gy - gx**3 + 3 * gx - b) % p == 0
        n = int.from_bytes(detail.n, "big")
        # n * G is the point at infinity: (n - 1) * G = -G.
        assert reference_multiply(curve, n - 1, (gx, gy)) == (gx, p - gy)
        assert detail.kdf.scheme == TPM_ALG.KDF1_SP800_56A
        assert detail.sign.scheme == TPM_ALG.NULL


@pytest.mark.parametrize("curve", [TPM_ECC_CURVE.NONE, TPM_ECC_CURVE.BN_P256, TPM_ECC_CURVE.SM2_P256, 0x7777])
def test_unimplemented_curves_are_curve(tpm, curve):
    expect(tpm, command(TPM_CC.ECC_Parameters, u16(curve)), at_param(TPM_RC.CURVE, 1))


# --- Commit, EC_Ephemeral, ZGen_2Phase, capabilities --------------------------------------------


def commit_cmd(handle: int) -> bytes:
    empty_point = T.TPM2B_ECC_POINT.pack(T.TPMS_ECC_POINT(x=b"", y=b""))
    return command(TPM_CC.Commit, empty_point + tpm2b(b"") + tpm2b(b""), u32(handle), b"")


def test_commit_refuses_every_key(tpm):
    expect(tpm, commit_cmd(key(tpm, "ecc_sign")[0]), at_handle(TPM_RC.SCHEME))
    expect(tpm, commit_cmd(key(tpm, "ecc_sign_decrypt")[0]), at_handle(TPM_RC.SCHEME))
    expect(tpm, commit_cmd(key(tpm, "rsa")[0]), at_handle(TPM_RC.KEY))


def test_no_anonymous_or_mqv_scheme_is_reported_or_accepted(tpm):
    algs = {prop.alg for prop in capability(tpm, TPM_CAP.ALGS, 0, 200)}
    assert {TPM_ALG.ECDH, TPM_ALG.OAEP, TPM_ALG.RSAES} <= algs
    assert not algs & {TPM_ALG.ECDAA, TPM_ALG.ECMQV, TPM_ALG.SM2}
    # A key with the ECDAA scheme cannot even be created (TPMI_ALG_ECC_SCHEME refuses it).
    area = ecc_template(attrs=SIGNING, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256)
    public = bytearray(T.TPMT_PUBLIC.pack(area))
    scheme_at = 2 + 2 + 4 + 2 + 2  # type, nameAlg, objectAttributes, empty authPolicy, symmetric NULL
    assert public[scheme_at : scheme_at + 2] == u16(TPM_ALG.ECDSA)
    public[scheme_at : scheme_at + 2] = u16(TPM_ALG.ECDAA)
    sensitive = T.TPM2B_SENSITIVE_CREATE.pack(T.TPMS_SENSITIVE_CREATE(userAuth=b"", data=b""))
    params = sensitive + tpm2b(bytes(public)) + tpm2b(b"") + u32(0)
    expect(tpm, command(TPM_CC.CreatePrimary, params, u32(TPM_RH.OWNER), b""), at_param(TPM_RC.SCHEME, 2))


EC_EPHEMERAL_OUT = Struct("EC_Ephemeral_Out", [("Q", T.TPM2B_ECC_POINT), ("counter", UINT16)])
ZGEN_2PHASE_OUT = Struct("ZGen_2Phase_Out", [("outZ1", T.TPM2B_ECC_POINT), ("outZ2", T.TPM2B_ECC_POINT)])


def zgen_2phase_cmd(handle: int, qs_b, qe_b, counter: int, scheme: int = TPM_ALG.ECDH) -> bytes:
    points = T.TPM2B_ECC_POINT.pack(qs_b) + T.TPM2B_ECC_POINT.pack(qe_b)
    return command(TPM_CC.ZGen_2Phase, points + u16(scheme) + u16(counter), u32(handle), b"")


def test_ec_ephemeral_and_zgen_2phase(tpm):
    """The full unified model: outZ1 = dsA * QsB, outZ2 = r * QeB for the r behind EC_Ephemeral's
    Q and counter, once (tests/test_tpm_two_phase.py has the rest)."""
    curve = TPM_ECC_CURVE.NIST_P256
    handle, area = key(tpm, f"ecdh_{curve}")
    ephemeral = EC_EPHEMERAL_OUT.unpack(ok(tpm, command(TPM_CC.EC_Ephemeral, u16(curve))).params())
    static_b, ephemeral_b = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    qs_b, qe_b = (ecc_point(k.public_key().public_numbers(), 32) for k in (static_b, ephemeral_b))
    cmd = zgen_2phase_cmd(handle, qs_b, qe_b, ephemeral.counter)
    out = ZGEN_2PHASE_OUT.unpack(ok(tpm, cmd).params())
    qs_a = ec.EllipticCurvePublicNumbers(*tpm_point(area), ec.SECP256R1()).public_key()
    qe_a = ec.EllipticCurvePublicNumbers(
        int.from_bytes(ephemeral.Q.x, "big"), int.from_bytes(ephemeral.Q.y, "big"), ec.SECP256R1()
    ).public_key()
    assert out.outZ1.x == static_b.exchange(ec.ECDH(), qs_a)
    assert out.outZ2.x == ephemeral_b.exchange(ec.ECDH(), qe_a)
    k = ephemeral_b.private_numbers().private_value
    assert (int.from_bytes(out.outZ2.x, "big"), int.from_bytes(out.outZ2.y, "big")) == reference_multiply(
        curve, k, (int.from_bytes(ephemeral.Q.x, "big"), int.from_bytes(ephemeral.Q.y, "big"))
    )
    expect(tpm, cmd, at_param(TPM_RC.VALUE, 4))
    expect(tpm, zgen_2phase_cmd(key(tpm, "ecc_sign")[0], qs_b, qe_b, 0), at_handle(TPM_RC.ATTRIBUTES))
    expect(tpm, zgen_2phase_cmd(key(tpm, "rsa")[0], qs_b, qe_b, 0), at_handle(TPM_RC.KEY))
    expect(tpm, zgen_2phase_cmd(handle, qs_b, qe_b, 0, TPM_ALG.ECMQV), at_param(TPM_RC.SCHEME, 3))
    expect(tpm, command(TPM_CC.EC_Ephemeral, u16(TPM_ECC_CURVE.BN_P256)), at_param(TPM_RC.CURVE, 1))
