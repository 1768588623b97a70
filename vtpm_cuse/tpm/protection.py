"""Protected storage (Part 1, clause 23): the private blob of an object and the
blob of a saved context.

A TPM2B_PRIVATE is an object's TPM2B_SENSITIVE encrypted and integrity-
protected under keys its parent derives from the parent's seedValue:

    symKey  = KDFa(parent.nameAlg, seedValue, "STORAGE", Name, "", keyBits)
    hmacKey = KDFa(parent.nameAlg, seedValue, "INTEGRITY", "", "", digestBits)
    blob    = TPM2B_DIGEST(HMAC(hmacKey, iv2b || encSensitive || Name)) || iv2b || encSensitive

with ``iv2b`` a TPM2B_IV of one random AES block and ``encSensitive`` the
AES-CFB encryption of the TPM2B_SENSITIVE -- the layout of the reference
implementation, so that a blob's structure is what other TPM tooling expects.
Binding the Name into key and HMAC ties the blob to its public area.

A saved context (Part 1, clause 30) is protected the same way under the
hierarchy's proof value, with AES-256 and HMAC-SHA-512 (TPM_PT_CONTEXT_HASH /
_SYM / _SYM_SIZE report exactly that):

    key || iv = KDFa(SHA512, proof, "CONTEXT", sequence, savedHandle, 256 + 128)
    blob      = TPM2B_DIGEST(HMAC(proof, totalResetCount || [restartCount] || sequence ||
                                  savedHandle || enc)) || enc
    enc       = CFB(key, iv, sequence || payload)

totalResetCount (resetCount, but never set back by TPM2_Clear) makes every
saved object unusable after a TPM Reset for good; restartCount
is added for stClear objects (savedHandle 0x80000002), which a TPM Restart
also ends.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from .algorithms import hash_alg
from .constants import TPM_ALG
from .crypto.cfb import aes_cfb
from .crypto.kdf import kdfa
from .errors import TPM_RC, TpmError
from .marshal import Reader
from .object_rules import protection_symmetric

if TYPE_CHECKING:
    from .engine import Engine
    from .objects import LoadedObject

AES_BLOCK = 16
CONTEXT_HASH = TPM_ALG.SHA512
CONTEXT_KEY_BITS = 256
#: savedHandle of a saved object context with stClear SET (Part 2, TPMS_CONTEXT).
SAVED_ST_CLEAR = 0x80000002


def _storage_keys(parent: LoadedObject, name: bytes) -> tuple[int, bytes, bytes]:
    alg = parent.name_alg
    key_bits = protection_symmetric(parent.area).keyBits
    sym_key = kdfa(alg, parent.seed_value, "STORAGE", name, b"", key_bits)
    hmac_key = kdfa(alg, parent.seed_value, "INTEGRITY", b"", b"", 8 * hash_alg(alg).digest_size)
    return alg, sym_key, hmac_key


def wrap_sensitive(parent: LoadedObject, name: bytes, sensitive_area, random) -> bytes:
    """The TPM2B_PRIVATE contents protecting ``sensitive_area`` (a TPMT_SENSITIVE) under ``parent``."""
    from .types import TPM2B_DIGEST, TPM2B_SENSITIVE

    alg, sym_key, hmac_key = _storage_keys(parent, name)
    iv = random(AES_BLOCK)
    protected = AES_BLOCK.to_bytes(2, "big") + iv + aes_cfb(sym_key, iv, TPM2B_SENSITIVE.pack(sensitive_area), True)
    integrity = hmac.new(hmac_key, protected + name, hash_alg(alg).hashlib_name).digest()
    return TPM2B_DIGEST.pack(integrity) + protected


def unwrap_sensitive(parent: LoadedObject, name: bytes, blob: bytes):
    """The TPMT_SENSITIVE in a TPM2B_PRIVATE; bare TPM_RC_INTEGRITY if it was not made for
    this Name under this parent, TPM_RC_VALUE for a wrong IV size."""
    from .types import TPM2B_DIGEST, TPM2B_IV, TPM2B_SENSITIVE

    alg, sym_key, hmac_key = _storage_keys(parent, name)
    r = Reader(blob)
    integrity = TPM2B_DIGEST.unmarshal(r)
    protected = r.rest()
    expected = hmac.new(hmac_key, protected + name, hash_alg(alg).hashlib_name).digest()
    if not hmac.compare_digest(integrity, expected):
        raise TpmError(TPM_RC.INTEGRITY, "private blob integrity check failed")
    r = Reader(protected)
    iv = TPM2B_IV.unmarshal(r)
    if len(iv) != AES_BLOCK:
        raise TpmError(TPM_RC.VALUE, f"IV of {len(iv)} octets")
    plain = aes_cfb(sym_key, iv, r.rest(), False)
    try:
        return TPM2B_SENSITIVE.unpack(plain)
    except TpmError as err:
        raise TpmError(TPM_RC.SENSITIVE, f"sensitive area does not unmarshal: {err.detail}") from None


# --- saved contexts ----------------------------------------------------------------------------


def _context_keys(engine: Engine, hierarchy: int, sequence: int, saved_handle: int) -> tuple[bytes, bytes, bytes]:
    from .tickets import hierarchy_proof

    proof = hierarchy_proof(engine, hierarchy)
    material = kdfa(
        CONTEXT_HASH,
        proof,
        "CONTEXT",
        sequence.to_bytes(8, "big"),
        saved_handle.to_bytes(4, "big"),
        CONTEXT_KEY_BITS + 8 * AES_BLOCK,
    )
    return proof, material[: CONTEXT_KEY_BITS // 8], material[CONTEXT_KEY_BITS // 8 :]


def _context_integrity(engine: Engine, proof: bytes, sequence: int, saved_handle: int, enc: bytes) -> bytes:
    perm = engine.permanent
    mac = hmac.new(proof, perm.total_reset_count.to_bytes(8, "big"), hash_alg(CONTEXT_HASH).hashlib_name)
    if saved_handle == SAVED_ST_CLEAR:
        mac.update(perm.restart_count.to_bytes(4, "big"))
    mac.update(sequence.to_bytes(8, "big") + saved_handle.to_bytes(4, "big") + enc)
    return mac.digest()


def seal_context(engine: Engine, hierarchy: int, sequence: int, saved_handle: int, payload: bytes) -> bytes:
    """The contextBlob of a TPMS_CONTEXT carrying ``payload``."""
    from .types import TPM2B_DIGEST

    proof, key, iv = _context_keys(engine, hierarchy, sequence, saved_handle)
    enc = aes_cfb(key, iv, sequence.to_bytes(8, "big") + payload, True)
    return TPM2B_DIGEST.pack(_context_integrity(engine, proof, sequence, saved_handle, enc)) + enc


def open_context(engine: Engine, hierarchy: int, sequence: int, saved_handle: int, blob: bytes) -> bytes:
    """The payload of a contextBlob; bare TPM_RC_SIZE / TPM_RC_INTEGRITY when it is not ours."""
    from .types import TPM2B_DIGEST

    r = Reader(blob)
    integrity = TPM2B_DIGEST.unmarshal(r)
    if len(integrity) != hash_alg(CONTEXT_HASH).digest_size or r.remaining < 8:
        raise TpmError(TPM_RC.SIZE, "context blob too short")
    enc = r.rest()
    proof, key, iv = _context_keys(engine, hierarchy, sequence, saved_handle)
    if not hmac.compare_digest(integrity, _context_integrity(engine, proof, sequence, saved_handle, enc)):
        raise TpmError(TPM_RC.INTEGRITY, "context integrity check failed")
    plain = aes_cfb(key, iv, enc, False)
    if plain[:8] != sequence.to_bytes(8, "big"):
        raise TpmError(TPM_RC.INTEGRITY, "context fingerprint mismatch")
    return plain[8:]
