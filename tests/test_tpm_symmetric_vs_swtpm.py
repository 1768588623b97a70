"""TPM2_EncryptDecrypt(2), TPM2_MAC (HMAC), TPM2_MAC_Start and TPM2_Unseal against Debian's
swtpm (libtpms): the same command bytes to both TPMs, whole responses compared.

A symmetric or keyed-hash key the caller knows is loaded into both with TPM2_LoadExternal
(public and sensitive area, TPM_RH_NULL; unique = H_nameAlg(seedValue || key), Part 1
"unique" of a symmetric object), so every answer is deterministic: the ciphertexts, the
ivOut of each mode (also after a partial final block), the HMACs, the handles, the
response codes of the bad inputs (handle or parameter number included).  Sealed data
objects are made by each TPM under its own primary; their Unseal answers are compared.

TPM2_MAC/TPM2_MAC_Start (CMAC with an AES key) share their command codes with
TPM2_HMAC/TPM2_HMAC_Start; both TPMs implement the MAC forms, so their answers are
compared too, and the CMACs against ``cryptography``'s.  One known difference, asserted as
such: libtpms also lets a symmetric key be made with TPM_ALG_CMAC as its mode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

import pytest
from test_tpm_symmetric import (
    BLOCK,
    MODES,
    encrypt_decrypt_cmd,
    hmac_cmd,
    hmac_public,
    load_external_cmd,
    reference,
    sym_public,
)

from support.engine_oracle import EngineOracle
from support.object_templates import (
    DECRYPT,
    FIXED_PARENT,
    FIXED_TPM,
    NO_DA,
    RESTRICTED,
    SDO,
    SEALED,
    SIGN,
    USER_WITH_AUTH,
    create_cmd,
    create_primary_cmd,
    ecc_template,
    keyedhash_template,
    load_cmd,
)
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH, TPM_ST
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_P, RC_S, TPM_RC, rc_name
from vtpm_cuse.tpm.marshal import Reader, Struct

pytestmark = pytest.mark.swtpm

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
SUCCESS = bytes.fromhex("80010000000a00000000")
LIBTPMS_SLOTS = 3
TRANSIENT = 0x80000000

AES128_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
AES256_KEY = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
HMAC_KEY = (b"the same HMAC key in both TPMs, as long as a SHA-256 block " * 2)[:64]
SEED = bytes(range(0x20, 0x40))
IV = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
STREAM_MODES = (TPM_ALG.CFB, TPM_ALG.CTR, TPM_ALG.OFB)
HASHES = {TPM_ALG.SHA1: "sha1", TPM_ALG.SHA256: "sha256", TPM_ALG.SHA384: "sha384", TPM_ALG.SHA512: "sha512"}
MESSAGE = bytes((7 * i + 3) % 256 for i in range(5 * BLOCK + 9))  # 89 octets: a partial last block
SECRET = b"sealed in both TPMs"
CREATE_OUT = Struct("Create_Out", [("outPrivate", T.TPM2B_PRIVATE), ("outPublic", T.TPM2B_PUBLIC)])


def P(n: int, two: bool = False) -> int:
    """TPM_RC_P for EncryptDecrypt's parameter ``n`` (the same parameter in EncryptDecrypt2)."""
    if two:  # EncryptDecrypt2 moves inData (4th) to the front
        n = 1 if n == 4 else n + 1
    return RC_P | (n << 8)


def H(n: int) -> int:
    return n << 8


@pytest.fixture(scope="module")
def pair():
    from support.swtpm_oracle import SwtpmOracle

    oracle = SwtpmOracle()
    ours = EngineOracle(Engine(max_objects=LIBTPMS_SLOTS))  # as many transient slots as libtpms
    try:
        for tpm in (oracle, ours):
            assert tpm.execute(STARTUP_CLEAR) == SUCCESS
        yield oracle, ours
    finally:
        oracle.close()


def same(pair, cmd: bytes) -> Response:
    """Both TPMs answer ``cmd`` with the same bytes; our answer."""
    theirs, ours = (t.execute(cmd) for t in pair)
    assert ours == theirs, (
        f"command {cmd.hex()}\n theirs {theirs.hex()} ({rc_name(Response(theirs).rc)})"
        f"\n ours   {ours.hex()} ({rc_name(Response(ours).rc)})"
    )
    return Response(ours)


def same_ok(pair, cmd: bytes) -> Response:
    resp = same(pair, cmd)
    assert resp.rc == 0, rc_name(resp.rc)
    return resp


def same_rc(pair, cmd: bytes, expected: int) -> None:
    resp = same(pair, cmd)
    assert resp.rc == expected, (rc_name(resp.rc), rc_name(expected))


def handle_of(resp: Response) -> int:
    return int.from_bytes(resp.raw[10:14], "big")


def flush(pair, handle: int) -> None:
    for tpm in pair:
        assert Response(tpm.execute(command(TPM_CC.FlushContext, u32(handle)))).rc == 0


@pytest.fixture
def loaded(pair):
    """LoadExternal the same (public, sensitive) into both: the responses (handle, Name) match."""
    handles: list[int] = []

    def load(public, kind: int, key: bytes, auth: bytes = b"") -> int:
        handle = handle_of(same_ok(pair, load_external_cmd(public, kind, key, SEED, auth=auth)))
        handles.append(handle)
        return handle

    yield load
    for handle in handles:
        flush(pair, handle)


@pytest.fixture
def primary(pair):
    """A primary made by each TPM from ``area`` (other seeds, same handle); flushed afterwards."""
    handles: list[int] = []

    def make(area) -> int:
        resps = [Response(t.execute(create_primary_cmd(area))) for t in pair]
        assert [r.rc for r in resps] == [0, 0], [rc_name(r.rc) for r in resps]
        assert handle_of(resps[0]) == handle_of(resps[1])
        handles.append(handle_of(resps[1]))
        return handles[-1]

    yield make
    for handle in handles:
        flush(pair, handle)


def split_out(resp: Response) -> tuple[bytes, bytes]:
    """(outData, ivOut) of an EncryptDecrypt(2) response."""
    params = resp.params()
    size = int.from_bytes(params[:2], "big")
    out, rest = params[2 : 2 + size], params[2 + size :]
    return out, rest[2 : 2 + int.from_bytes(rest[:2], "big")]


def iv_for(mode: int) -> bytes:
    return b"" if mode == TPM_ALG.ECB else IV


def data_for(mode: int) -> bytes:
    return MESSAGE if mode in STREAM_MODES else MESSAGE[: 5 * BLOCK]


def aes_block(key: bytes, block: bytes) -> bytes:
    return reference(key, TPM_ALG.ECB, b"", block, False)


# --- EncryptDecrypt and EncryptDecrypt2 --------------------------------------------------


@pytest.mark.parametrize("key", [AES128_KEY, AES256_KEY], ids=["aes128", "aes256"])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: f"mode{m:#x}")
@pytest.mark.parametrize("two", [False, True], ids=["EncryptDecrypt", "EncryptDecrypt2"])
def test_every_mode_gives_identical_responses(pair, loaded, key, mode, two):
    handle = loaded(sym_public(key, SEED), TPM_ALG.SYMCIPHER, key)
    iv, data = iv_for(mode), data_for(mode)
    out, iv_out = split_out(same_ok(pair, encrypt_decrypt_cmd(handle, False, mode, iv, data, two)))
    assert out == reference(key, mode, iv, data, False)
    assert len(iv_out) == len(iv)
    plain, _ = split_out(same_ok(pair, encrypt_decrypt_cmd(handle, True, mode, iv, out, two)))
    assert plain == data
    # Decrypting data that was never encrypted is just as deterministic.
    same_ok(pair, encrypt_decrypt_cmd(handle, True, mode, iv, data, two))


@pytest.mark.parametrize("decrypt", [False, True], ids=["encrypt", "decrypt"])
@pytest.mark.parametrize("two", [False, True], ids=["EncryptDecrypt", "EncryptDecrypt2"])
def test_partial_cfb_block_iv_out(pair, loaded, decrypt, two):
    """After a partial CFB block ivOut is the partial ciphertext followed by the rest of that
    block's keystream, E(previous ciphertext block)[n:], in both directions and on both TPMs."""
    handle = loaded(sym_public(AES128_KEY, SEED), TPM_ALG.SYMCIPHER, AES128_KEY)
    data = MESSAGE[: 2 * BLOCK + 5]
    out, iv_out = split_out(same_ok(pair, encrypt_decrypt_cmd(handle, decrypt, TPM_ALG.CFB, IV, data, two)))
    ciphertext = data if decrypt else out
    keystream = aes_block(AES128_KEY, ciphertext[BLOCK : 2 * BLOCK])
    assert iv_out == ciphertext[2 * BLOCK :] + keystream[5:]
    # Shorter than one block: the keystream block is E(ivIn).
    out, iv_out = split_out(same_ok(pair, encrypt_decrypt_cmd(handle, decrypt, TPM_ALG.CFB, IV, data[:3], two)))
    assert iv_out == (data[:3] if decrypt else out) + aes_block(AES128_KEY, IV)[3:]


@pytest.mark.parametrize("mode", [TPM_ALG.CTR, TPM_ALG.OFB], ids=["CTR", "OFB"])
def test_partial_ctr_ofb_block_iv_out(pair, loaded, mode):
    handle = loaded(sym_public(AES256_KEY, SEED), TPM_ALG.SYMCIPHER, AES256_KEY)
    _, iv_out = split_out(same_ok(pair, encrypt_decrypt_cmd(handle, False, mode, IV, MESSAGE)))
    if mode == TPM_ALG.CTR:  # the counter of the block after the partial one
        assert iv_out == (int.from_bytes(IV, "big") + 6).to_bytes(BLOCK, "big")
    else:  # the partial block's whole keystream block
        assert iv_out == reference(AES256_KEY, TPM_ALG.OFB, IV, bytes(6 * BLOCK), False)[-BLOCK:]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: f"mode{m:#x}")
@pytest.mark.parametrize("decrypt", [False, True], ids=["encrypt", "decrypt"])
def test_iv_chaining_across_two_calls(pair, loaded, mode, decrypt):
    handle = loaded(sym_public(AES128_KEY, SEED), TPM_ALG.SYMCIPHER, AES128_KEY)
    iv, data = iv_for(mode), MESSAGE[: 5 * BLOCK]
    first, iv_out = split_out(same_ok(pair, encrypt_decrypt_cmd(handle, decrypt, mode, iv, data[: 2 * BLOCK])))
    second, _ = split_out(same_ok(pair, encrypt_decrypt_cmd(handle, decrypt, mode, iv_out, data[2 * BLOCK :], True)))
    whole, _ = split_out(same_ok(pair, encrypt_decrypt_cmd(handle, decrypt, mode, iv, data)))
    assert first + second == whole == reference(AES128_KEY, mode, iv, data, decrypt)


def test_key_mode_and_empty_data(pair, loaded):
    handle = loaded(sym_public(AES128_KEY, SEED, TPM_ALG.CBC), TPM_ALG.SYMCIPHER, AES128_KEY)
    for two in (False, True):
        same_ok(pair, encrypt_decrypt_cmd(handle, False, TPM_ALG.NULL, IV, MESSAGE[:32], two))  # the key's mode
        same_ok(pair, encrypt_decrypt_cmd(handle, False, TPM_ALG.CBC, IV, b"", two))
        same_rc(pair, encrypt_decrypt_cmd(handle, False, TPM_ALG.CFB, IV, MESSAGE[:32], two), TPM_RC.MODE | P(2, two))


@pytest.mark.parametrize("two", [False, True], ids=["EncryptDecrypt", "EncryptDecrypt2"])
def test_bad_iv_size_alignment_and_mode(pair, loaded, two):
    handle = loaded(sym_public(AES128_KEY, SEED), TPM_ALG.SYMCIPHER, AES128_KEY)
    cases = [
        (TPM_ALG.CFB, IV[:8], b"abc", TPM_RC.SIZE | P(3, two)),
        (TPM_ALG.CTR, IV + b"x", b"abc", TPM_RC.SIZE | P(3, two)),
        (TPM_ALG.CBC, b"", bytes(BLOCK), TPM_RC.SIZE | P(3, two)),
        (TPM_ALG.CBC, b"", b"", TPM_RC.SIZE | P(3, two)),
        (TPM_ALG.ECB, IV, bytes(BLOCK), TPM_RC.SIZE | P(3, two)),
        (TPM_ALG.CBC, IV, bytes(BLOCK + 1), TPM_RC.SIZE | P(4, two)),
        (TPM_ALG.ECB, b"", bytes(BLOCK - 1), TPM_RC.SIZE | P(4, two)),
        (TPM_ALG.NULL, IV, b"x", TPM_RC.MODE | P(2, two)),  # neither key nor command names a mode
        (0x0099, IV, b"x", TPM_RC.MODE | P(2, two)),  # not an algorithm
        (TPM_ALG.SHA256, IV, b"x", TPM_RC.MODE | P(2, two)),  # an algorithm, not a mode
    ]
    for mode, iv, data, rc in cases:
        for decrypt in (False, True):
            same_rc(pair, encrypt_decrypt_cmd(handle, decrypt, mode, iv, data, two), rc)


def test_decrypt_and_sign_attributes(pair, loaded):
    decrypt_only = loaded(sym_public(AES128_KEY, SEED, attrs=USER_WITH_AUTH | DECRYPT), TPM_ALG.SYMCIPHER, AES128_KEY)
    sign_only = loaded(sym_public(AES128_KEY, SEED, attrs=USER_WITH_AUTH | SIGN), TPM_ALG.SYMCIPHER, AES128_KEY)
    for two in (False, True):
        same_rc(pair, encrypt_decrypt_cmd(decrypt_only, False, TPM_ALG.CFB, IV, b"a", two), TPM_RC.ATTRIBUTES | H(1))
        same_ok(pair, encrypt_decrypt_cmd(decrypt_only, True, TPM_ALG.CFB, IV, b"a", two))
        same_ok(pair, encrypt_decrypt_cmd(sign_only, False, TPM_ALG.CFB, IV, b"a", two))
        same_rc(pair, encrypt_decrypt_cmd(sign_only, True, TPM_ALG.CFB, IV, b"a", two), TPM_RC.ATTRIBUTES | H(1))


def test_keys_that_are_not_symmetric_or_restricted(pair, loaded, primary):
    mac = loaded(hmac_public(HMAC_KEY, SEED), TPM_ALG.KEYEDHASH, HMAC_KEY)
    ecc = primary(ecc_template())
    for two in (False, True):
        same_rc(pair, encrypt_decrypt_cmd(mac, False, TPM_ALG.CFB, IV, b"a", two), TPM_RC.KEY | H(1))
        same_rc(pair, encrypt_decrypt_cmd(ecc, False, TPM_ALG.CFB, IV, b"a", two), TPM_RC.KEY | H(1))
    restricted = T.TPMT_PUBLIC(
        type=TPM_ALG.SYMCIPHER,
        nameAlg=TPM_ALG.SHA256,
        objectAttributes=FIXED_TPM | FIXED_PARENT | SDO | USER_WITH_AUTH | NO_DA | RESTRICTED | DECRYPT,
        authPolicy=b"",
        parameters=T.TPMS_SYMCIPHER_PARMS(
            sym=T.TPMT_SYM_DEF_OBJECT(algorithm=TPM_ALG.AES, keyBits=128, mode=TPM_ALG.CFB)
        ),
        unique=b"",
    )
    handle = primary(restricted)  # a storage parent: the same handle, the key from each TPM's seed
    for two in (False, True):
        for decrypt in (False, True):
            same_rc(pair, encrypt_decrypt_cmd(handle, decrypt, TPM_ALG.CFB, IV, b"a", two), TPM_RC.ATTRIBUTES | H(1))


# --- HMAC ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", list(HASHES), ids=list(HASHES.values()))
def test_hmac_with_each_hash(pair, loaded, alg):
    handle = loaded(hmac_public(HMAC_KEY, SEED, alg), TPM_ALG.KEYEDHASH, HMAC_KEY)
    expected = tpm2b(hmac.new(HMAC_KEY, MESSAGE, HASHES[alg]).digest())
    for asked in (TPM_ALG.NULL, alg):
        assert same_ok(pair, hmac_cmd(handle, MESSAGE, asked)).params() == expected
    assert same_ok(pair, hmac_cmd(handle, b"", alg)).params() == tpm2b(hmac.new(HMAC_KEY, b"", HASHES[alg]).digest())


def test_hmac_with_a_scheme_free_key(pair, loaded):
    handle = loaded(
        hmac_public(HMAC_KEY, SEED, None, attrs=USER_WITH_AUTH | SIGN | DECRYPT), TPM_ALG.KEYEDHASH, HMAC_KEY
    )
    for alg, name in HASHES.items():
        assert same_ok(pair, hmac_cmd(handle, MESSAGE, alg)).params() == tpm2b(
            hmac.new(HMAC_KEY, MESSAGE, name).digest()
        )
    same_rc(pair, hmac_cmd(handle, MESSAGE, TPM_ALG.NULL), TPM_RC.VALUE | P(2))


def hmac_start_cmd(handle: int, auth: bytes, alg: int) -> bytes:
    return command(TPM_CC.HMAC_Start, tpm2b(auth) + u16(alg), u32(handle), b"")


@pytest.mark.parametrize("alg", [TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA512], ids=["sha1", "sha256", "sha512"])
def test_hmac_sequence(pair, loaded, alg):
    handle = loaded(hmac_public(HMAC_KEY, SEED, alg), TPM_ALG.KEYEDHASH, HMAC_KEY)
    seq = handle_of(same_ok(pair, hmac_start_cmd(handle, b"seq auth", TPM_ALG.NULL)))
    chunks = [MESSAGE * 10, b"", MESSAGE[:5]]
    for chunk in chunks:
        same_ok(pair, command(TPM_CC.SequenceUpdate, tpm2b(chunk), u32(seq), b"seq auth"))
    same_rc(pair, command(TPM_CC.SequenceUpdate, tpm2b(b"x"), u32(seq), b"wrong"), TPM_RC.BAD_AUTH | RC_S | H(1))
    resp = same_ok(pair, command(TPM_CC.SequenceComplete, tpm2b(b"last") + u32(TPM_RH.OWNER), u32(seq), b"seq auth"))
    expected = hmac.new(HMAC_KEY, b"".join(chunks) + b"last", HASHES[alg]).digest()
    assert resp.params() == tpm2b(expected) + u16(TPM_ST.HASHCHECK) + u32(TPM_RH.NULL) + u16(0)
    same_rc(pair, command(TPM_CC.SequenceUpdate, tpm2b(b""), u32(seq), b"seq auth"), TPM_RC.REFERENCE_H0)


def test_hmac_bad_inputs(pair, loaded):
    fixed = loaded(hmac_public(HMAC_KEY, SEED, TPM_ALG.SHA256), TPM_ALG.KEYEDHASH, HMAC_KEY)
    data_object = loaded(hmac_public(HMAC_KEY, SEED, None, attrs=USER_WITH_AUTH), TPM_ALG.KEYEDHASH, HMAC_KEY)
    cases = [
        (hmac_cmd(fixed, b"m", TPM_ALG.SHA1), TPM_RC.VALUE | P(2)),
        (hmac_cmd(data_object, b"m", TPM_ALG.SHA256), TPM_RC.KEY | H(1)),
        (hmac_start_cmd(fixed, b"", TPM_ALG.SHA512), TPM_RC.VALUE | P(2)),
        (hmac_start_cmd(data_object, b"", TPM_ALG.SHA256), TPM_RC.KEY | H(1)),
        (hmac_start_cmd(fixed, bytes(65), TPM_ALG.SHA256), TPM_RC.SIZE | P(1)),  # more than a TPM2B_AUTH
    ]
    for cmd, rc in cases:
        same_rc(pair, cmd, rc)
    # An auth longer than the sequence's digest is accepted (no Part 3 rule limits it).
    flush(pair, handle_of(same_ok(pair, hmac_start_cmd(fixed, bytes(range(64)), TPM_ALG.SHA256))))


@pytest.mark.parametrize("alg", [0x7777, TPM_ALG.AES, TPM_ALG.SHA3_256, TPM_ALG.CFB], ids=lambda a: f"{a:#x}")
def test_mac_scheme_that_is_neither_hash_nor_mac_mode(pair, loaded, alg):
    """TPM2_MAC/TPM2_MAC_Start share 0x0155/0x015B with TPM2_HMAC/TPM2_HMAC_Start: inScheme is a
    TPMI_ALG_MAC_SCHEME, so anything but an implemented hash or TPM_ALG_CMAC is TPM_RC_SYMMETRIC."""
    handle = loaded(hmac_public(HMAC_KEY, SEED), TPM_ALG.KEYEDHASH, HMAC_KEY)
    for cmd in (hmac_cmd(handle, b"m", alg), hmac_start_cmd(handle, b"", alg)):
        same_rc(pair, cmd, TPM_RC.SYMMETRIC | P(2))
    # TPM2_Hash has no MAC twin: TPM_RC_HASH from both.
    same_rc(pair, command(TPM_CC.Hash, tpm2b(b"d") + u16(alg) + u32(TPM_RH.OWNER)), TPM_RC.HASH | P(2))


def cmac(key: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import cmac as cmac_
    from cryptography.hazmat.primitives.ciphers import algorithms

    mac = cmac_.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


MAC_MESSAGES = [b"", MESSAGE[:BLOCK], MESSAGE[: BLOCK + 1], MESSAGE * 11]


@pytest.mark.parametrize("key", [AES128_KEY, AES256_KEY], ids=["aes128", "aes256"])
def test_cmac_is_identical_and_is_sp800_38b(pair, loaded, key):
    """TPM2_MAC with TPM_ALG_CMAC: both TPMs give the SP 800-38B CMAC, block-sized messages or not."""
    handle = loaded(sym_public(key, SEED, attrs=USER_WITH_AUTH | SIGN), TPM_ALG.SYMCIPHER, key)
    for message in MAC_MESSAGES:
        resp = same_ok(pair, hmac_cmd(handle, message, TPM_ALG.CMAC))
        assert resp.params() == tpm2b(cmac(key, message))


@pytest.mark.parametrize("key", [AES128_KEY, AES256_KEY], ids=["aes128", "aes256"])
def test_cmac_sequence(pair, loaded, key):
    """MAC_Start + SequenceUpdate + SequenceComplete: the CMAC of the whole input, a NULL ticket."""
    handle = loaded(sym_public(key, SEED, attrs=USER_WITH_AUTH | SIGN), TPM_ALG.SYMCIPHER, key)
    seq = handle_of(same_ok(pair, hmac_start_cmd(handle, b"seq auth", TPM_ALG.CMAC)))
    chunks = [MESSAGE * 10, b"", MESSAGE[:5], MESSAGE[:BLOCK]]
    for chunk in chunks:
        same_ok(pair, command(TPM_CC.SequenceUpdate, tpm2b(chunk), u32(seq), b"seq auth"))
    resp = same_ok(pair, command(TPM_CC.SequenceComplete, tpm2b(b"last") + u32(TPM_RH.OWNER), u32(seq), b"seq auth"))
    expected = cmac(key, b"".join(chunks) + b"last")
    assert resp.params() == tpm2b(expected) + u16(TPM_ST.HASHCHECK) + u32(TPM_RH.NULL) + u16(0)
    same_rc(pair, command(TPM_CC.SequenceUpdate, tpm2b(b""), u32(seq), b"seq auth"), TPM_RC.REFERENCE_H0)


RESTRICTED_HMAC = T.TPMT_PUBLIC(
    type=TPM_ALG.KEYEDHASH,
    nameAlg=TPM_ALG.SHA256,
    objectAttributes=FIXED_TPM | FIXED_PARENT | SDO | USER_WITH_AUTH | RESTRICTED | SIGN,
    authPolicy=b"",
    parameters=T.TPMS_KEYEDHASH_PARMS(
        scheme=T.TPMT_KEYEDHASH_SCHEME(scheme=TPM_ALG.HMAC, details=T.TPMS_SCHEME_HASH(hashAlg=TPM_ALG.SHA256))
    ),
    unique=b"",
)
#: key -> (inScheme, the code of TPM2_MAC and TPM2_MAC_Start), both TPMs.
CMAC, NULL, SHA256, SHA1 = TPM_ALG.CMAC, TPM_ALG.NULL, TPM_ALG.SHA256, TPM_ALG.SHA1
MAC_RULES = {
    "aes-no-mode": [(SHA256, TPM_RC.SCHEME | P(2)), (NULL, TPM_RC.VALUE | P(2)), (CMAC, TPM_RC.SUCCESS)],
    "aes-decrypt-only": [(SHA256, TPM_RC.SCHEME | P(2)), (CMAC, TPM_RC.KEY | H(1))],
    "aes-cfb": [(CMAC, TPM_RC.VALUE | P(2)), (SHA256, TPM_RC.VALUE | P(2)), (NULL, TPM_RC.SCHEME | P(2))],
    "hmac-sha256": [(CMAC, TPM_RC.VALUE | P(2)), (SHA1, TPM_RC.VALUE | P(2)), (NULL, TPM_RC.SUCCESS)],
    "ecc": [(CMAC, TPM_RC.TYPE | H(1)), (SHA256, TPM_RC.TYPE | H(1))],
    "restricted-hmac": [(NULL, TPM_RC.ATTRIBUTES | H(1)), (SHA1, TPM_RC.VALUE | P(2)), (CMAC, TPM_RC.VALUE | P(2))],
}


def mac_rule_key(name: str, loaded, primary) -> int:
    if name == "ecc":
        return primary(ecc_template())
    if name == "restricted-hmac":
        return primary(RESTRICTED_HMAC)
    if name == "hmac-sha256":
        return loaded(hmac_public(HMAC_KEY, SEED, TPM_ALG.SHA256), TPM_ALG.KEYEDHASH, HMAC_KEY)
    mode, attrs = {
        "aes-no-mode": (TPM_ALG.NULL, USER_WITH_AUTH | SIGN | DECRYPT),
        "aes-decrypt-only": (TPM_ALG.NULL, USER_WITH_AUTH | DECRYPT),
        "aes-cfb": (TPM_ALG.CFB, USER_WITH_AUTH | SIGN | DECRYPT),
    }[name]
    return loaded(sym_public(AES128_KEY, SEED, mode, attrs=attrs), TPM_ALG.SYMCIPHER, AES128_KEY)


@pytest.mark.parametrize("name", list(MAC_RULES))
def test_mac_scheme_and_key_rules(pair, loaded, primary, name):
    """Which inScheme TPM2_MAC and TPM2_MAC_Start accept for a key, and the codes otherwise: the
    MAC must be the key's (keyed-hash scheme, symmetric mode) or, for a key naming none, the
    caller's (TPM_RC_VALUE); it must suit the key -- a hash for a keyed-hash key, CMAC for a
    symmetric one, so a key made for an encryption mode does no MAC (TPM_RC_SCHEME) -- and
    only then restricted (TPM_RC_ATTRIBUTES) and sign (TPM_RC_KEY) count."""
    handle = mac_rule_key(name, loaded, primary)
    for alg, rc in MAC_RULES[name]:
        for cmd in (hmac_cmd(handle, b"m", alg), hmac_start_cmd(handle, b"", alg)):
            resp = same(pair, cmd)
            assert resp.rc == rc, (hex(alg), rc_name(resp.rc), rc_name(rc))
            if rc == 0 and cmd[6:10] == u32(TPM_CC.MAC_Start):
                flush(pair, handle_of(resp))


def test_a_key_made_for_cmac_is_a_known_difference(pair):
    """libtpms takes TPM_ALG_CMAC as a TPMI_ALG_SYM_MODE, so a symmetric key can be made for it
    (sign only; with decrypt too it is TPM_RC_SCHEME).  This TPM keeps TPMI_ALG_SYM_MODE to the
    encryption modes, so such a template is TPM_RC_MODE; a key with no mode does CMAC here as
    there, TPM_ALG_CMAC named in TPM2_MAC (test_cmac_is_identical_and_is_sp800_38b)."""
    cases = ((USER_WITH_AUTH | SIGN, TPM_RC.SUCCESS), (USER_WITH_AUTH | SIGN | DECRYPT, TPM_RC.SCHEME | P(2)))
    for attrs, rc_theirs in cases:
        public = T.TPMT_PUBLIC.pack(sym_public(AES128_KEY, SEED, TPM_ALG.CFB, attrs=attrs))
        cmac_mode = public.replace(
            u16(TPM_ALG.AES) + u16(128) + u16(TPM_ALG.CFB), u16(TPM_ALG.AES) + u16(128) + u16(CMAC)
        )
        sensitive = T.TPMT_SENSITIVE(
            sensitiveType=TPM_ALG.SYMCIPHER, authValue=b"", seedValue=SEED, sensitive=AES128_KEY
        )
        body = T.TPM2B_SENSITIVE_OR_EMPTY.pack(sensitive) + tpm2b(cmac_mode) + u32(TPM_RH.NULL)
        theirs, ours = (Response(t.execute(command(TPM_CC.LoadExternal, body))) for t in pair)
        if theirs.rc == 0:
            flush(pair[:1], handle_of(theirs))
        assert (theirs.rc, ours.rc) == (rc_theirs, TPM_RC.MODE | P(2)), (rc_name(theirs.rc), rc_name(ours.rc))


def test_cmac_is_reported_as_libtpms_reports_it(pair):
    """TPM_CAP_ALGS for TPM_ALG_CMAC: the same TPMS_ALG_PROPERTY (symmetric | signing)."""
    same_ok(pair, command(TPM_CC.GetCapability, u32(0) + u32(TPM_ALG.CMAC) + u32(1)))


def test_hmac_key_rules_on_load(pair):
    """Both refuse an HMAC key longer than its hash's block, and a signing key with no scheme."""
    long_key = HMAC_KEY + b"!"
    for alg, rc in ((TPM_ALG.SHA256, TPM_RC.KEY_SIZE | P(1)), (TPM_ALG.SHA512, 0)):
        resp = same(pair, load_external_cmd(hmac_public(long_key, SEED, alg), TPM_ALG.KEYEDHASH, long_key, SEED))
        assert resp.rc == rc, rc_name(resp.rc)
        if rc == 0:
            flush(pair, handle_of(resp))
    no_scheme = hmac_public(HMAC_KEY, SEED, None, attrs=USER_WITH_AUTH | SIGN)
    same_rc(pair, load_external_cmd(no_scheme, TPM_ALG.KEYEDHASH, HMAC_KEY, SEED), TPM_RC.SCHEME | P(2))


# --- Unseal ------------------------------------------------------------------------------


def unseal_cmd(handle: int, password: bytes = b"") -> bytes:
    return command(TPM_CC.Unseal, b"", u32(handle), password)


def test_unseal_of_a_load_external_data_object(pair, loaded):
    area = dataclasses.replace(
        keyedhash_template(attrs=USER_WITH_AUTH | NO_DA), unique=hashlib.sha256(SEED + SECRET).digest()
    )
    handle = loaded(area, TPM_ALG.KEYEDHASH, SECRET, auth=b"pw")
    assert same_ok(pair, unseal_cmd(handle, b"pw")).params() == tpm2b(SECRET)
    same_rc(pair, unseal_cmd(handle, b"wrong"), TPM_RC.BAD_AUTH | RC_S | H(1))


def test_unseal_of_a_created_sealed_object(pair, primary):
    parent = primary(ecc_template())
    publics, handles = [], set()
    for tpm in pair:
        resp = Response(tpm.execute(create_cmd(parent, keyedhash_template(SEALED), auth=b"pw", data=SECRET)))
        assert resp.rc == 0, rc_name(resp.rc)
        out = CREATE_OUT.unmarshal(Reader(resp.params()))
        publics.append(dataclasses.replace(out.outPublic, unique=b""))
        loaded = Response(tpm.execute(load_cmd(parent, out.outPrivate, out.outPublic)))
        assert loaded.rc == 0, rc_name(loaded.rc)
        handles.add(handle_of(loaded))
    assert publics[0] == publics[1]  # the same public area but for unique (H(seedValue || data))
    assert len(handles) == 1
    handle = handles.pop()
    try:
        assert same_ok(pair, unseal_cmd(handle, b"pw")).params() == tpm2b(SECRET)
        same_rc(pair, unseal_cmd(handle, b"wrong"), TPM_RC.BAD_AUTH | RC_S | H(1))
        # A key is not sealed data.
        same_rc(pair, unseal_cmd(parent), TPM_RC.TYPE | H(1))
    finally:
        flush(pair, handle)


def test_unseal_refuses_an_hmac_key(pair, loaded):
    handle = loaded(hmac_public(HMAC_KEY, SEED), TPM_ALG.KEYEDHASH, HMAC_KEY)
    same_rc(pair, unseal_cmd(handle), TPM_RC.ATTRIBUTES | H(1))
