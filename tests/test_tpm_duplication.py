"""TPM2_Duplicate, TPM2_Rewrap and TPM2_Import (Part 3, clause 13; Part 1, "Duplication")
through Engine.execute with real command bytes.

Duplicate needs the DUP role: the duplicable objects here carry the authPolicy
PolicyCommandCode(TPM_CC_Duplicate) and are authorized by a policy session.  Wrappers are
also built and opened here from Part 1's text (test-side KDFa, HMAC, AES-CFB), so a duplicate
made outside the TPM is imported and the TPM's inner wrapper is checked octet by octet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from support.object_templates import (
    AES128_CFB,
    ENC_DUP,
    NO_SYM,
    SDO,
    SIGN,
    SIGNING,
    USER_WITH_AUTH,
    create_cmd,
    ecc_template,
    load_cmd,
)
from support.session_client import SE_POLICY, SHA256, Use, digest, kdfa, mac, run, start_session
from support.tpm_client import Response, command, tpm2b, u16, u32
from tests.test_tpm_credentials import H, Key, P, name_of, outside_seed, primary
from tests.test_tpm_credentials import tpm as tpm  # the fixture
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH
from vtpm_cuse.tpm.errors import TPM_RC, rc_name

try:  # cryptography >= 43 keeps CFB among the "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

DUP_POLICY = digest(SHA256, bytes(32) + u32(TPM_CC.PolicyCommandCode) + u32(TPM_CC.Duplicate))
#: A duplicable ECDSA key (fixedTPM and fixedParent CLEAR) whose DUP role a policy grants.
DUPLICABLE = dataclasses.replace(
    ecc_template(SDO | USER_WITH_AUTH | SIGN, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256),
    authPolicy=DUP_POLICY,
)
NULL = (TPM_RH.NULL, u32(TPM_RH.NULL))
SIGNER = ecc_template(SIGNING, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256)


def cfb(key: bytes, data: bytes, encrypt: bool = True) -> bytes:
    cipher = Cipher(algorithms.AES(key), CFB(bytes(16)))
    worker = cipher.encryptor() if encrypt else cipher.decryptor()
    return worker.update(data) + worker.finalize()


def tpm2bs(data: bytes, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        size = int.from_bytes(data[:2], "big")
        out.append(data[2 : 2 + size])
        data = data[2 + size :]
    assert data == b""
    return out


@dataclasses.dataclass
class World:
    tpm: object
    srk: Key
    other: Key  # a second storage parent
    obj: Key  # a loaded duplicable object under srk
    private: bytes


def child(tpm, parent: Key, area) -> tuple[Key, bytes]:
    resp = Response(tpm.execute(create_cmd(parent.handle, area)))
    assert resp.rc == 0, rc_name(resp.rc)
    private, public = tpm2bs(resp.params(), 5)[:2]
    area = T.TPMT_PUBLIC.unpack(public)
    loaded = Response(tpm.execute(load_cmd(parent.handle, private, area)))
    assert loaded.rc == 0, rc_name(loaded.rc)
    return Key(int.from_bytes(loaded.raw[10:14], "big"), area, name_of(area)), private


def make_world(tpm, area=DUPLICABLE) -> World:
    srk = primary(tpm, ecc_template())
    other = primary(tpm, ecc_template(unique_x=b"other parent"))
    obj, private = child(tpm, srk, area)
    return World(tpm, srk, other, obj, private)


@pytest.fixture
def world(tpm) -> World:
    return make_world(tpm)


def sym(definition) -> bytes:
    return T.TPMT_SYM_DEF_OBJECT_PLUS.pack(definition)


def duplicate(w: World, new_parent: tuple[int, bytes], key: bytes = b"", symmetric=NO_SYM, policy: bool = True):
    """TPM2_Duplicate through a policy session (or, with ``policy`` False, a password)."""
    if policy:
        session = start_session(w.tpm.execute, SE_POLICY)
        resp = Response(w.tpm.execute(command(TPM_CC.PolicyCommandCode, u32(TPM_CC.Duplicate), u32(session.handle))))
        assert resp.rc == 0
        use = Use(session, 0, name=w.obj.name, include_auth=False)
    else:
        use = Use(None, name=w.obj.name)
    result = run(w.tpm.execute, TPM_CC.Duplicate, [w.obj.ref, new_parent], tpm2b(key) + sym(symmetric), [use])
    if policy:  # continueSession CLEAR ends it after success; a failed command leaves it loaded
        w.tpm.execute(command(TPM_CC.FlushContext, u32(session.handle)))
    return result


def dup_out(result) -> tuple[bytes, bytes, bytes]:
    assert result.rc == 0, rc_name(result.rc)
    key_out, blob, seed = tpm2bs(result.params, 3)
    return key_out, blob, seed


def import_(w: World, parent: Key, blob: bytes, seed: bytes, key: bytes = b"", symmetric=NO_SYM, area=None):
    params = tpm2b(key) + T.TPM2B_PUBLIC.pack(area or w.obj.area) + tpm2b(blob) + tpm2b(seed) + sym(symmetric)
    return run(w.tpm.execute, TPM_CC.Import, [parent.ref], params, [Use(None, name=parent.name)])


def import_and_load(w: World, parent: Key, blob: bytes, seed: bytes, key: bytes = b"", symmetric=NO_SYM) -> int:
    result = import_(w, parent, blob, seed, key, symmetric)
    assert result.rc == 0, rc_name(result.rc)
    (private,) = tpm2bs(result.params, 1)
    loaded = Response(w.tpm.execute(load_cmd(parent.handle, private, w.obj.area)))
    assert loaded.rc == 0, rc_name(loaded.rc)
    handle = int.from_bytes(loaded.raw[10:14], "big")
    original = w.tpm.volatile.objects.loaded[w.obj.handle]
    assert w.tpm.volatile.objects.loaded[handle].sensitive == original.sensitive
    w.tpm.execute(command(TPM_CC.FlushContext, u32(handle)))
    return handle


# --- round trips ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("inner", ["none", "tpm-key", "caller-key"])
def test_duplicate_and_import_under_another_parent(world, inner):
    symmetric = NO_SYM if inner == "none" else AES128_CFB
    key_in = os.urandom(16) if inner == "caller-key" else b""
    key_out, blob, seed = dup_out(duplicate(world, world.other.ref, key_in, symmetric))
    assert len(key_out) == (16 if inner == "tpm-key" else 0)
    assert len(seed) == 2 + 32 + 2 + 32  # an ephemeral P-256 point
    import_and_load(world, world.other, blob, seed, key_in or key_out, symmetric)
    # The outer wrapper is for the new parent only.
    assert import_(world, world.srk, blob, seed, key_in or key_out, symmetric).rc == TPM_RC.INTEGRITY | P(3)


def test_duplicate_without_any_wrapper_is_the_plain_sensitive_area(world):
    key_out, blob, seed = dup_out(duplicate(world, NULL))
    assert key_out == seed == b""
    sensitive = T.TPM2B_SENSITIVE.unpack(blob)
    assert sensitive.sensitiveType == TPM_ALG.ECC
    assert sensitive.sensitive == world.tpm.volatile.objects.loaded[world.obj.handle].sensitive
    import_and_load(world, world.other, blob, b"")


def test_inner_wrapper_matches_part_1(world):
    """CFB(key, 0, TPM2B_DIGEST(H(TPM2B_SENSITIVE || Name)) || TPM2B_SENSITIVE), computed here."""
    key = os.urandom(16)
    key_out, blob, _ = dup_out(duplicate(world, NULL, key, AES128_CFB))
    assert key_out == b""
    plain = cfb(key, blob, encrypt=False)
    integrity, sensitive = plain[2:34], plain[34:]
    assert plain[:2] == u16(32) and integrity == hashlib.sha256(sensitive + world.obj.name).digest()
    original = world.tpm.volatile.objects.loaded[world.obj.handle]
    assert T.TPM2B_SENSITIVE.unpack(sensitive).sensitive == original.sensitive
    import_and_load(world, world.other, blob, b"", key, AES128_CFB)
    # With a wrong key the decrypted integrity field is noise: as in the reference code, an
    # impossible size of it is TPM_RC_SIZE / _INSUFFICIENT, a possible one fails the digest.
    wrong = import_(world, world.other, blob, b"", os.urandom(16), AES128_CFB).rc
    assert wrong in {rc | P(3) for rc in (TPM_RC.INTEGRITY, TPM_RC.SIZE, TPM_RC.INSUFFICIENT)}


def test_duplicate_made_outside_the_tpm_imports(world):
    """The outer wrapper written from Part 1: seed by ECDH + KDFe ("DUPLICATE"), then
    KDFa "STORAGE" / "INTEGRITY", CFB with IV 0 and HMAC(encData || Name)."""
    duplicate_plain = dup_out(duplicate(world, NULL))[1]  # the TPM2B_SENSITIVE
    seed, encrypted = outside_seed(world.other, b"DUPLICATE")
    sym_key = kdfa(SHA256, seed, b"STORAGE", world.obj.name, b"", 128)
    hmac_key = kdfa(SHA256, seed, b"INTEGRITY", b"", b"", 256)
    enc = cfb(sym_key, duplicate_plain)
    blob = tpm2b(mac(SHA256, hmac_key, enc + world.obj.name)) + enc
    import_and_load(world, world.other, blob, encrypted)


# --- encryptedDuplication ----------------------------------------------------------------------------------


def test_encrypted_duplication_needs_both_wrappers(tpm):
    w = make_world(tpm, dataclasses.replace(DUPLICABLE, objectAttributes=DUPLICABLE.objectAttributes | ENC_DUP))
    assert duplicate(w, w.other.ref).rc == TPM_RC.SYMMETRIC | P(2)
    assert duplicate(w, NULL, symmetric=AES128_CFB).rc == TPM_RC.HIERARCHY | H(2)
    key, blob, seed = dup_out(duplicate(w, w.other.ref, symmetric=AES128_CFB))
    assert import_(w, w.other, blob, b"", key, AES128_CFB).rc == TPM_RC.ATTRIBUTES | P(4)
    assert import_(w, w.other, blob, seed).rc == TPM_RC.ATTRIBUTES | P(1)
    import_and_load(w, w.other, blob, seed, key, AES128_CFB)


# --- errors ----------------------------------------------------------------------------------------------


def test_duplicate_needs_a_policy_session_for_dup(world):
    assert duplicate(world, NULL, policy=False).rc == TPM_RC.AUTH_TYPE


def test_fixed_parent_objects_are_not_duplicated(tpm):
    w = make_world(tpm, dataclasses.replace(SIGNER, authPolicy=DUP_POLICY))
    assert duplicate(w, NULL).rc == TPM_RC.ATTRIBUTES | H(1)
    blob = T.TPM2B_SENSITIVE.pack(w.tpm.volatile.objects.loaded[w.obj.handle].sensitive_area())
    assert import_(w, w.other, blob, b"").rc == TPM_RC.ATTRIBUTES | P(2)


def test_duplicate_parameter_errors(world):
    signer = primary(world.tpm, SIGNER)
    assert duplicate(world, signer.ref).rc == TPM_RC.TYPE | H(2)
    assert duplicate(world, NULL, b"k" * 16).rc == TPM_RC.SIZE | P(1)
    assert duplicate(world, NULL, b"k" * 5, AES128_CFB).rc == TPM_RC.SIZE | P(1)
    assert duplicate(world, NULL, b"k" * 16, AES128_CFB).rc == 0


def test_import_errors(world):
    key, blob, seed = dup_out(duplicate(world, world.other.ref, symmetric=AES128_CFB))
    signer = primary(world.tpm, SIGNER)
    assert import_(world, signer, blob, seed, key, AES128_CFB).rc == TPM_RC.TYPE | H(1)
    assert import_(world, world.other, blob, seed, b"", AES128_CFB).rc == TPM_RC.SIZE | P(1)
    assert import_(world, world.other, blob, seed, key).rc == TPM_RC.SIZE | P(1)
    assert import_(world, world.other, blob, b"\x00\x01", key, AES128_CFB).rc == TPM_RC.VALUE | P(4)
    for position in (3, 40, len(blob) - 1):  # the outer HMAC, then the encrypted content
        bad = bytearray(blob)
        bad[position] ^= 0x80
        assert import_(world, world.other, bytes(bad), seed, key, AES128_CFB).rc == TPM_RC.INTEGRITY | P(3)
    # Another public area is another Name: the outer HMAC fails.
    other_area = dataclasses.replace(world.obj.area, unique=T.TPMS_ECC_POINT(x=bytes(32), y=bytes(32)))
    assert import_(world, world.other, blob, seed, key, AES128_CFB, other_area).rc == TPM_RC.INTEGRITY | P(3)
    assert import_(world, world.other, blob, seed, key, AES128_CFB).rc == 0


def test_import_of_a_mismatched_plain_duplicate_is_binding(world):
    """Without wrappers nothing binds the Name; the fixedTPM parent checks the key pair (Load's check)."""
    blob = dup_out(duplicate(world, NULL))[1]
    other, _ = child(world.tpm, world.srk, DUPLICABLE)
    assert import_(world, world.other, blob, b"", area=other.area).rc == TPM_RC.BINDING | P(2)
    assert import_(world, world.other, u16(len(blob) - 3) + blob[2:-1], b"").rc == TPM_RC.INSUFFICIENT | P(3)
    assert import_(world, world.other, u16(len(blob) - 1) + blob[2:], b"").rc == TPM_RC.SIZE | P(3)
    assert import_(world, world.other, blob + b"\0", b"").rc == TPM_RC.SIZE | P(3)


# --- Rewrap ----------------------------------------------------------------------------------------------


def rewrap(w: World, old, new, blob: bytes, seed: bytes, name: bytes | None = None):
    params = tpm2b(blob) + tpm2b(name or w.obj.name) + tpm2b(seed)
    return run(w.tpm.execute, TPM_CC.Rewrap, [old, new], params, [Use(None, name=old[1])])


def test_rewrap_moves_the_outer_wrapper(world):
    key, blob, seed = dup_out(duplicate(world, world.srk.ref, symmetric=AES128_CFB))
    result = rewrap(world, world.srk.ref, world.other.ref, blob, seed)
    assert result.rc == 0, rc_name(result.rc)
    new_blob, new_seed = tpm2bs(result.params, 2)
    assert new_blob != blob and len(new_blob) == len(blob)
    import_and_load(world, world.other, new_blob, new_seed, key, AES128_CFB)
    # Off to no parent and back under one.
    result = rewrap(world, world.other.ref, NULL, new_blob, new_seed)
    plain, no_seed = tpm2bs(result.params, 2)
    assert no_seed == b"" and len(plain) == len(blob) - 34
    result = rewrap(world, NULL, world.srk.ref, plain, b"")
    back, back_seed = tpm2bs(result.params, 2)
    import_and_load(world, world.srk, back, back_seed, key, AES128_CFB)


def test_rewrap_errors(world):
    _, blob, seed = dup_out(duplicate(world, world.srk.ref))
    signer = primary(world.tpm, SIGNER)
    assert rewrap(world, NULL, world.other.ref, blob, seed).rc == TPM_RC.HANDLE | H(1)
    assert rewrap(world, world.srk.ref, world.other.ref, blob, b"").rc == TPM_RC.HANDLE | H(1)
    assert rewrap(world, signer.ref, world.other.ref, blob, seed).rc == TPM_RC.TYPE | H(1)
    assert rewrap(world, world.srk.ref, world.other.ref, blob, b"\x00\x01").rc == TPM_RC.VALUE | P(3)
    assert rewrap(world, world.srk.ref, world.other.ref, blob[:-1], seed).rc == TPM_RC.INTEGRITY | P(1)
    assert rewrap(world, world.srk.ref, world.other.ref, blob, seed, b"\x00\x0b" + bytes(32)).rc == (
        TPM_RC.INTEGRITY | P(1)
    )
    assert rewrap(world, world.srk.ref, signer.ref, blob, seed).rc == TPM_RC.TYPE | H(2)
    assert rewrap(world, world.srk.ref, world.other.ref, blob, seed).rc == 0
