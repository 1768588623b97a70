"""TPM2_EncryptDecrypt, TPM2_EncryptDecrypt2, TPM2_HMAC and TPM2_HMAC_Start (with the
sequence commands), through Engine.execute with real command bytes.

Every result is recomputed outside the TPM with ``cryptography`` (AES modes) or Python's
``hmac``; IV chaining is checked by splitting a message over two calls.  Keys are loaded
with TPM2_LoadExternal (the key is known to the test) or created under a primary.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

try:  # cryptography >= 43 keeps CFB and OFB among the "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB, OFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB, OFB

from support.engine_oracle import EngineOracle
from support.object_templates import DECRYPT, NO_DA, RESTRICTED, SIGN, USER_WITH_AUTH, create_cmd, create_primary_cmd
from support.object_templates import ecc_template as _ecc_template
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH, TPM_ST
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_P, RC_S, TPM_RC, rc_name

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
MODES = (TPM_ALG.CFB, TPM_ALG.CBC, TPM_ALG.CTR, TPM_ALG.OFB, TPM_ALG.ECB)
BLOCK = 16


def P(n: int) -> int:
    return RC_P | (n << 8)


def H(n: int) -> int:
    return n << 8


@pytest.fixture
def tpm():
    engine = EngineOracle(Engine())
    assert Response(engine.execute(STARTUP_CLEAR)).rc == 0
    return engine


# --- building keys ---------------------------------------------------------------------


def sym_public(key: bytes, seed: bytes, mode: int = TPM_ALG.NULL, attrs: int = USER_WITH_AUTH | DECRYPT | SIGN):
    return T.TPMT_PUBLIC(
        type=TPM_ALG.SYMCIPHER,
        nameAlg=TPM_ALG.SHA256,
        objectAttributes=attrs,
        authPolicy=b"",
        parameters=T.TPMS_SYMCIPHER_PARMS(
            sym=T.TPMT_SYM_DEF_OBJECT(algorithm=TPM_ALG.AES, keyBits=8 * len(key), mode=mode)
        ),
        unique=hashlib.sha256(seed + key).digest(),
    )


def hmac_public(key: bytes, seed: bytes, hash_alg: int | None = TPM_ALG.SHA256, attrs: int = USER_WITH_AUTH | SIGN):
    scheme = (
        T.TPMT_KEYEDHASH_SCHEME(scheme=TPM_ALG.NULL, details=None)
        if hash_alg is None
        else T.TPMT_KEYEDHASH_SCHEME(scheme=TPM_ALG.HMAC, details=T.TPMS_SCHEME_HASH(hashAlg=hash_alg))
    )
    return T.TPMT_PUBLIC(
        type=TPM_ALG.KEYEDHASH,
        nameAlg=TPM_ALG.SHA256,
        objectAttributes=attrs,
        authPolicy=b"",
        parameters=T.TPMS_KEYEDHASH_PARMS(scheme=scheme),
        unique=hashlib.sha256(seed + key).digest(),
    )


def load_external_cmd(public, kind: int, key: bytes, seed: bytes, auth: bytes = b"", hierarchy=TPM_RH.NULL) -> bytes:
    sensitive = T.TPMT_SENSITIVE(sensitiveType=kind, authValue=auth, seedValue=seed, sensitive=key)
    body = T.TPM2B_SENSITIVE_OR_EMPTY.pack(sensitive) + T.TPM2B_PUBLIC.pack(public) + u32(hierarchy)
    return command(TPM_CC.LoadExternal, body)


def load_key(tpm, public, kind: int, key: bytes, seed: bytes) -> int:
    resp = Response(tpm.execute(load_external_cmd(public, kind, key, seed)))
    assert resp.rc == 0, rc_name(resp.rc)
    return int.from_bytes(resp.raw[10:14], "big")


def load_sym(tpm, key: bytes, mode: int = TPM_ALG.NULL, **kw) -> int:
    seed = os.urandom(32)
    return load_key(tpm, sym_public(key, seed, mode, **kw), TPM_ALG.SYMCIPHER, key, seed)


def load_hmac(tpm, key: bytes, hash_alg: int | None = TPM_ALG.SHA256, **kw) -> int:
    seed = os.urandom(32)
    return load_key(tpm, hmac_public(key, seed, hash_alg, **kw), TPM_ALG.KEYEDHASH, key, seed)


# --- commands --------------------------------------------------------------------------


def encrypt_decrypt_cmd(handle: int, decrypt: bool, mode: int, iv: bytes, data: bytes, two: bool = False) -> bytes:
    if two:
        body = tpm2b(data) + bytes([decrypt]) + u16(mode) + tpm2b(iv)
        return command(TPM_CC.EncryptDecrypt2, body, u32(handle), b"")
    return command(TPM_CC.EncryptDecrypt, bytes([decrypt]) + u16(mode) + tpm2b(iv) + tpm2b(data), u32(handle), b"")


def encrypt_decrypt(tpm, handle, decrypt, mode, iv, data, two=False) -> tuple[bytes, bytes]:
    resp = Response(tpm.execute(encrypt_decrypt_cmd(handle, decrypt, mode, iv, data, two)))
    assert resp.rc == 0, rc_name(resp.rc)
    params = resp.params()
    size = int.from_bytes(params[:2], "big")
    out, rest = params[2 : 2 + size], params[2 + size :]
    iv_size = int.from_bytes(rest[:2], "big")
    assert len(rest) == 2 + iv_size
    return out, rest[2:]


def reference(key: bytes, mode: int, iv: bytes, data: bytes, decrypt: bool) -> bytes:
    mode_obj = {
        TPM_ALG.CFB: lambda: CFB(iv),
        TPM_ALG.CBC: lambda: modes.CBC(iv),
        TPM_ALG.CTR: lambda: modes.CTR(iv),
        TPM_ALG.OFB: lambda: OFB(iv),
        TPM_ALG.ECB: lambda: modes.ECB(),
    }[mode]()
    cipher = Cipher(algorithms.AES(key), mode_obj)
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def iv_for(mode: int) -> bytes:
    return b"" if mode == TPM_ALG.ECB else os.urandom(BLOCK)


# --- EncryptDecrypt ----------------------------------------------------------------------


@pytest.mark.parametrize("bits", [128, 192, 256])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("two", [False, True])
def test_encrypt_then_decrypt_matches_cryptography(tpm, bits, mode, two):
    key = os.urandom(bits // 8)
    handle = load_sym(tpm, key)
    iv = iv_for(mode)
    data = os.urandom(4 * BLOCK)
    ciphertext, _ = encrypt_decrypt(tpm, handle, False, mode, iv, data, two)
    assert ciphertext == reference(key, mode, iv, data, False)
    plaintext, _ = encrypt_decrypt(tpm, handle, True, mode, iv, ciphertext, two)
    assert plaintext == data


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("decrypt", [False, True])
def test_iv_chaining_two_calls_equal_one(tpm, mode, decrypt):
    key = os.urandom(16)
    handle = load_sym(tpm, key)
    iv = iv_for(mode)
    data = os.urandom(5 * BLOCK)
    whole, _ = encrypt_decrypt(tpm, handle, decrypt, mode, iv, data)
    first, iv_out = encrypt_decrypt(tpm, handle, decrypt, mode, iv, data[: 2 * BLOCK])
    second, _ = encrypt_decrypt(tpm, handle, decrypt, mode, iv_out, data[2 * BLOCK :])
    assert first + second == whole == reference(key, mode, iv, data, decrypt)


def test_iv_out_values(tpm):
    """ivOut is what each mode carries into the next block (checked value by value)."""
    key = os.urandom(16)
    handle = load_sym(tpm, key)
    iv = os.urandom(BLOCK)
    data = os.urandom(3 * BLOCK)
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    out, iv_out = encrypt_decrypt(tpm, handle, False, TPM_ALG.CBC, iv, data)
    assert iv_out == out[-BLOCK:]
    out, iv_out = encrypt_decrypt(tpm, handle, False, TPM_ALG.CFB, iv, data)
    assert iv_out == out[-BLOCK:]
    out, iv_out = encrypt_decrypt(tpm, handle, True, TPM_ALG.CFB, iv, data)
    assert iv_out == data[-BLOCK:]  # decrypting: the last ciphertext block is the input's
    _, iv_out = encrypt_decrypt(tpm, handle, False, TPM_ALG.CTR, iv, data)
    assert iv_out == ((int.from_bytes(iv, "big") + 3) % (1 << 128)).to_bytes(BLOCK, "big")
    _, iv_out = encrypt_decrypt(tpm, handle, False, TPM_ALG.OFB, iv, data)
    stream = iv
    for _ in range(3):
        stream = ecb.update(stream)
    assert iv_out == stream
    _, iv_out = encrypt_decrypt(tpm, handle, False, TPM_ALG.ECB, b"", data)
    assert iv_out == b""
    # No data: the IV comes back unchanged.
    assert encrypt_decrypt(tpm, handle, False, TPM_ALG.CBC, iv, b"") == (b"", iv)


def test_ctr_counter_wraps(tpm):
    key = os.urandom(16)
    handle = load_sym(tpm, key)
    iv = b"\xff" * BLOCK
    data = os.urandom(2 * BLOCK)
    out, iv_out = encrypt_decrypt(tpm, handle, False, TPM_ALG.CTR, iv, data)
    assert iv_out == (1).to_bytes(BLOCK, "big")
    assert out == reference(key, TPM_ALG.CTR, iv, data, False)


@pytest.mark.parametrize("mode", [TPM_ALG.CFB, TPM_ALG.CTR, TPM_ALG.OFB])
def test_stream_modes_take_partial_blocks(tpm, mode):
    key = os.urandom(32)
    handle = load_sym(tpm, key)
    iv = os.urandom(BLOCK)
    data = os.urandom(37)
    out, iv_out = encrypt_decrypt(tpm, handle, False, mode, iv, data)
    assert out == reference(key, mode, iv, data, False)
    assert len(iv_out) == BLOCK
    # CTR and OFB continue exactly from ivOut even after a partial block.
    if mode == TPM_ALG.CTR:
        assert iv_out == ((int.from_bytes(iv, "big") + 3) % (1 << 128)).to_bytes(BLOCK, "big")


def test_key_mode_fixes_the_mode(tpm):
    key = os.urandom(16)
    handle = load_sym(tpm, key, TPM_ALG.CBC)
    iv = os.urandom(BLOCK)
    data = os.urandom(2 * BLOCK)
    # TPM_ALG_NULL in the command takes the key's mode.
    out, _ = encrypt_decrypt(tpm, handle, False, TPM_ALG.NULL, iv, data)
    assert out == reference(key, TPM_ALG.CBC, iv, data, False)
    out, _ = encrypt_decrypt(tpm, handle, False, TPM_ALG.CBC, iv, data)
    assert out == reference(key, TPM_ALG.CBC, iv, data, False)
    rc = Response(tpm.execute(encrypt_decrypt_cmd(handle, False, TPM_ALG.CFB, iv, data))).rc
    assert rc == TPM_RC.MODE | P(2)
    rc = Response(tpm.execute(encrypt_decrypt_cmd(handle, False, TPM_ALG.CFB, iv, data, two=True))).rc
    assert rc == TPM_RC.MODE | P(3)


def test_null_mode_in_key_and_command(tpm):
    handle = load_sym(tpm, os.urandom(16))
    iv = os.urandom(BLOCK)
    assert Response(tpm.execute(encrypt_decrypt_cmd(handle, False, TPM_ALG.NULL, iv, b"x"))).rc == TPM_RC.MODE | P(2)
    rc = Response(tpm.execute(encrypt_decrypt_cmd(handle, False, TPM_ALG.NULL, iv, b"x", two=True))).rc
    assert rc == TPM_RC.MODE | P(3)
    # An unknown mode is refused while unmarshalling.
    assert Response(tpm.execute(encrypt_decrypt_cmd(handle, False, 0x0099, iv, b"x"))).rc == TPM_RC.MODE | P(2)


@pytest.mark.parametrize("two", [False, True])
def test_iv_and_block_size_rules(tpm, two):
    handle = load_sym(tpm, os.urandom(16))
    iv_param, data_param = (4, 1) if two else (3, 4)

    def rc(mode, iv, data):
        return Response(tpm.execute(encrypt_decrypt_cmd(handle, False, mode, iv, data, two))).rc

    assert rc(TPM_ALG.CFB, os.urandom(8), b"abc") == TPM_RC.SIZE | P(iv_param)
    assert rc(TPM_ALG.CBC, b"", bytes(BLOCK)) == TPM_RC.SIZE | P(iv_param)
    assert rc(TPM_ALG.ECB, os.urandom(BLOCK), bytes(BLOCK)) == TPM_RC.SIZE | P(iv_param)
    assert rc(TPM_ALG.CBC, os.urandom(BLOCK), bytes(BLOCK + 1)) == TPM_RC.SIZE | P(data_param)
    assert rc(TPM_ALG.ECB, b"", bytes(BLOCK - 1)) == TPM_RC.SIZE | P(data_param)
    assert rc(TPM_ALG.CFB, os.urandom(BLOCK), bytes(BLOCK + 1)) == 0


def test_attribute_rules(tpm):
    iv = os.urandom(BLOCK)
    decrypt_only = load_sym(tpm, os.urandom(16), attrs=USER_WITH_AUTH | DECRYPT)
    sign_only = load_sym(tpm, os.urandom(16), attrs=USER_WITH_AUTH | SIGN)
    assert Response(tpm.execute(encrypt_decrypt_cmd(decrypt_only, True, TPM_ALG.CFB, iv, b"a"))).rc == 0
    rc = Response(tpm.execute(encrypt_decrypt_cmd(decrypt_only, False, TPM_ALG.CFB, iv, b"a"))).rc
    assert rc == TPM_RC.ATTRIBUTES | H(1)
    assert Response(tpm.execute(encrypt_decrypt_cmd(sign_only, False, TPM_ALG.CFB, iv, b"a"))).rc == 0
    rc = Response(tpm.execute(encrypt_decrypt_cmd(sign_only, True, TPM_ALG.CFB, iv, b"a", two=True))).rc
    assert rc == TPM_RC.ATTRIBUTES | H(1)


def test_restricted_and_non_symmetric_keys_are_refused(tpm):
    primary = Response(tpm.execute(create_primary_cmd(_ecc_template())))
    assert primary.rc == 0
    parent = int.from_bytes(primary.raw[10:14], "big")
    iv = os.urandom(BLOCK)
    # An ECC storage key is not a symmetric key: TPM_RC_KEY.
    assert Response(tpm.execute(encrypt_decrypt_cmd(parent, False, TPM_ALG.CFB, iv, b"a"))).rc == TPM_RC.KEY | H(1)
    # A restricted symmetric key (a storage parent) may not encrypt data.
    restricted = T.TPMT_PUBLIC(
        type=TPM_ALG.SYMCIPHER,
        nameAlg=TPM_ALG.SHA256,
        objectAttributes=(1 << 1) | (1 << 4) | (1 << 5) | USER_WITH_AUTH | NO_DA | RESTRICTED | DECRYPT,
        authPolicy=b"",
        parameters=T.TPMS_SYMCIPHER_PARMS(
            sym=T.TPMT_SYM_DEF_OBJECT(algorithm=TPM_ALG.AES, keyBits=128, mode=TPM_ALG.CFB)
        ),
        unique=b"",
    )
    resp = Response(tpm.execute(create_primary_cmd(restricted)))
    assert resp.rc == 0, rc_name(resp.rc)
    handle = int.from_bytes(resp.raw[10:14], "big")
    rc = Response(tpm.execute(encrypt_decrypt_cmd(handle, True, TPM_ALG.CFB, iv, b"a"))).rc
    assert rc == TPM_RC.ATTRIBUTES | H(1)
    # A key made by the TPM (Create under the primary) works as one loaded from outside.
    resp = Response(
        tpm.execute(create_cmd(parent, sym_public(bytes(16), b"", attrs=USER_WITH_AUTH | DECRYPT | SIGN | (1 << 5))))
    )
    assert resp.rc == 0, rc_name(resp.rc)


def test_encrypt_decrypt2_with_decrypt_session(tpm):
    """EncryptDecrypt2's inData is its first parameter, so a session can encrypt it in transit."""
    from support.session_client import AES128, CONTINUE, Use, run, start_session
    from support.session_client import DECRYPT as S_DECRYPT
    from support.session_client import ENCRYPT as S_ENCRYPT

    key = os.urandom(16)
    handle = load_sym(tpm, key)
    name = Response(tpm.execute(command(TPM_CC.ReadPublic, handles=u32(handle)))).params()
    name = name[2 + int.from_bytes(name[:2], "big") :]
    name = name[2 : 2 + int.from_bytes(name[:2], "big")]
    session = start_session(tpm.execute, sym=AES128)
    iv = os.urandom(BLOCK)
    data = os.urandom(40)
    params = tpm2b(data) + b"\x00" + u16(TPM_ALG.CFB) + tpm2b(iv)
    use = Use(session, CONTINUE | S_DECRYPT | S_ENCRYPT, name)
    result = run(tpm.execute, TPM_CC.EncryptDecrypt2, [(handle, name)], params, [use])
    assert result.rc == 0, rc_name(result.rc)
    size = int.from_bytes(result.params[:2], "big")
    assert result.params[2 : 2 + size] == reference(key, TPM_ALG.CFB, iv, data, False)
    # EncryptDecrypt's first parameter is not a TPM2B: a decrypt session is refused.
    params = b"\x00" + u16(TPM_ALG.CFB) + tpm2b(iv) + tpm2b(data)
    result = run(
        tpm.execute, TPM_CC.EncryptDecrypt, [(handle, name)], params, [Use(session, CONTINUE | S_DECRYPT, name)]
    )
    assert result.rc == TPM_RC.ATTRIBUTES | RC_S | (1 << 8)


# --- HMAC ----------------------------------------------------------------------------------


HASHLIB = {TPM_ALG.SHA1: "sha1", TPM_ALG.SHA256: "sha256", TPM_ALG.SHA384: "sha384", TPM_ALG.SHA512: "sha512"}


def hmac_cmd(handle: int, data: bytes, hash_alg: int) -> bytes:
    return command(TPM_CC.HMAC, tpm2b(data) + u16(hash_alg), u32(handle), b"")


@pytest.mark.parametrize("alg", list(HASHLIB))
def test_hmac_matches_python(tpm, alg):
    key = os.urandom(20)
    data = os.urandom(300)
    handle = load_hmac(tpm, key, alg)
    expected = hmac.new(key, data, HASHLIB[alg]).digest()
    for asked in (TPM_ALG.NULL, alg):
        resp = Response(tpm.execute(hmac_cmd(handle, data, asked)))
        assert resp.rc == 0, rc_name(resp.rc)
        assert resp.params() == tpm2b(expected)


def test_hmac_hash_selection(tpm):
    key = os.urandom(32)
    fixed = load_hmac(tpm, key, TPM_ALG.SHA256)
    free = load_hmac(tpm, key, None, attrs=USER_WITH_AUTH | SIGN | DECRYPT)
    assert Response(tpm.execute(hmac_cmd(fixed, b"m", TPM_ALG.SHA1))).rc == TPM_RC.VALUE | P(2)
    assert Response(tpm.execute(hmac_cmd(free, b"m", TPM_ALG.NULL))).rc == TPM_RC.VALUE | P(2)
    resp = Response(tpm.execute(hmac_cmd(free, b"m", TPM_ALG.SHA384)))
    assert resp.params() == tpm2b(hmac.new(key, b"m", "sha384").digest())


def test_hmac_key_rules(tpm):
    # TPM2_MAC's rule (it shares the code): a hash does not suit a symmetric key.
    sym = load_sym(tpm, os.urandom(16))
    assert Response(tpm.execute(hmac_cmd(sym, b"m", TPM_ALG.SHA256))).rc == TPM_RC.SCHEME | P(2)
    ecc = int.from_bytes(tpm.execute(create_primary_cmd(_ecc_template()))[10:14], "big")
    assert Response(tpm.execute(hmac_cmd(ecc, b"m", TPM_ALG.SHA256))).rc == TPM_RC.TYPE | H(1)
    not_sign = load_hmac(tpm, os.urandom(16), None, attrs=USER_WITH_AUTH)  # a data object
    assert Response(tpm.execute(hmac_cmd(not_sign, b"m", TPM_ALG.SHA256))).rc == TPM_RC.KEY | H(1)
    # A sequence is no key either.
    resp = Response(tpm.execute(command(TPM_CC.HashSequenceStart, tpm2b(b"") + u16(TPM_ALG.SHA256))))
    seq = int.from_bytes(resp.raw[10:14], "big")
    assert Response(tpm.execute(hmac_cmd(seq, b"m", TPM_ALG.SHA256))).rc == TPM_RC.TYPE | H(1)


# --- HMAC_Start and the sequence commands ------------------------------------------------


def hmac_start(tpm, handle: int, auth: bytes, alg: int) -> Response:
    return Response(tpm.execute(command(TPM_CC.HMAC_Start, tpm2b(auth) + u16(alg), u32(handle), b"")))


def test_hmac_sequence_matches_python_and_has_no_ticket(tpm):
    key = os.urandom(64)
    handle = load_hmac(tpm, key, TPM_ALG.SHA256)
    resp = hmac_start(tpm, handle, b"seqauth", TPM_ALG.NULL)
    assert resp.rc == 0, rc_name(resp.rc)
    seq = int.from_bytes(resp.raw[10:14], "big")
    chunks = [os.urandom(1000), os.urandom(5), b""]
    for chunk in chunks[:2]:
        assert Response(tpm.execute(command(TPM_CC.SequenceUpdate, tpm2b(chunk), u32(seq), b"seqauth"))).rc == 0
    last = os.urandom(77)
    resp = Response(
        tpm.execute(command(TPM_CC.SequenceComplete, tpm2b(last) + u32(TPM_RH.OWNER), u32(seq), b"seqauth"))
    )
    assert resp.rc == 0, rc_name(resp.rc)
    expected = hmac.new(key, b"".join(chunks) + last, "sha256").digest()
    null_ticket = u16(TPM_ST.HASHCHECK) + u32(TPM_RH.NULL) + u16(0)
    assert resp.params() == tpm2b(expected) + null_ticket
    # The sequence is gone.
    assert Response(tpm.execute(command(TPM_CC.SequenceUpdate, tpm2b(b""), u32(seq), b"seqauth"))).rc != 0


def test_hmac_sequence_wrong_auth_and_event_complete(tpm):
    handle = load_hmac(tpm, os.urandom(32), TPM_ALG.SHA1)
    seq = int.from_bytes(hmac_start(tpm, handle, b"pw", TPM_ALG.SHA1).raw[10:14], "big")
    rc = Response(tpm.execute(command(TPM_CC.SequenceUpdate, tpm2b(b"x"), u32(seq), b"wrong"))).rc
    assert rc == TPM_RC.BAD_AUTH | RC_S | (1 << 8)  # a sequence is DA-exempt: session 1
    # EventSequenceComplete wants an event sequence (two password sessions: PCR, sequence).
    sessions = b"".join(u32(TPM_RH.PW) + u16(0) + b"\x01" + tpm2b(pw) for pw in (b"", b"pw"))
    body = u32(TPM_RH.NULL) + u32(seq) + u32(len(sessions)) + sessions + tpm2b(b"")
    raw = u16(TPM_ST.SESSIONS) + u32(10 + len(body)) + u32(TPM_CC.EventSequenceComplete) + body
    assert Response(tpm.execute(raw)).rc == TPM_RC.MODE | H(2)


def test_hmac_start_errors(tpm):
    sym = load_sym(tpm, os.urandom(16))
    assert hmac_start(tpm, sym, b"", TPM_ALG.SHA256).rc == TPM_RC.SCHEME | P(2)
    fixed = load_hmac(tpm, os.urandom(16), TPM_ALG.SHA256)
    assert hmac_start(tpm, fixed, b"", TPM_ALG.SHA512).rc == TPM_RC.VALUE | P(2)
    free = load_hmac(tpm, os.urandom(16), None, attrs=USER_WITH_AUTH | SIGN | DECRYPT)
    assert hmac_start(tpm, free, b"", TPM_ALG.NULL).rc == TPM_RC.VALUE | P(2)
    assert hmac_start(tpm, free, b"", TPM_ALG.SHA384).rc == 0
    not_sign = load_hmac(tpm, os.urandom(16), None, attrs=USER_WITH_AUTH)  # a data object
    assert hmac_start(tpm, not_sign, b"", TPM_ALG.SHA256).rc == TPM_RC.KEY | H(1)


def test_hmac_start_needs_a_free_slot():
    engine = EngineOracle(Engine(max_objects=3))
    assert Response(engine.execute(STARTUP_CLEAR)).rc == 0
    handle = load_hmac(engine, os.urandom(16))
    assert hmac_start(engine, handle, b"", TPM_ALG.NULL).rc == 0
    assert hmac_start(engine, handle, b"", TPM_ALG.NULL).rc == 0
    assert hmac_start(engine, handle, b"", TPM_ALG.NULL).rc == TPM_RC.OBJECT_MEMORY


def test_hmac_sequence_survives_a_volatile_snapshot(tpm):
    """An HMAC sequence is part of the RAM that STORE_VOLATILE / migration carries."""
    from vtpm_cuse.tpm.state import BlobKind, deserialise, serialise

    key = os.urandom(32)
    handle = load_hmac(tpm, key, TPM_ALG.SHA512)
    seq = int.from_bytes(hmac_start(tpm, handle, b"", TPM_ALG.NULL).raw[10:14], "big")
    assert Response(tpm.execute(command(TPM_CC.SequenceUpdate, tpm2b(b"part one"), u32(seq), b""))).rc == 0
    restored = deserialise(BlobKind.VOLATILE, serialise(BlobKind.VOLATILE, tpm.engine.volatile))
    sequence = restored.sequences[seq]
    sequence.update(b" and two")
    assert sequence.digests()[TPM_ALG.SHA512] == hmac.new(key, b"part one and two", "sha512").digest()
