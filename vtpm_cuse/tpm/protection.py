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

That outer wrapper is one building block, :func:`produce_outer_wrap` /
:func:`unwrap_outer`, over any seed: a credential (Part 1, "Credential
Protection") and a duplicate's outer wrapper (Part 1, "Duplication") use it with
a seed encrypted to the protecting key (:mod:`.secret_exchange`) and the
all-zero IV, carrying none, since such a seed protects one blob only:

    credentialBlob = TPM2B_DIGEST(HMAC(hmacKey, encIdentity || Name)) || encIdentity
    encIdentity    = CFB(symKey, 0, TPM2B_DIGEST(credential))

A duplicate may also carry the caller's inner wrapper (:func:`produce_inner_wrap`):

    inner = CFB(innerKey, 0, TPM2B_DIGEST(H_nameAlg(TPM2B_SENSITIVE || Name)) || TPM2B_SENSITIVE)

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


# --- the building blocks: outer and inner wrappers -----------------------------------------------


def _outer_keys(alg: int, seed: bytes, key_bits: int, name: bytes) -> tuple[bytes, bytes]:
    """symKey = KDFa(alg, seed, "STORAGE", Name, "", keyBits) and
    HMACkey = KDFa(alg, seed, "INTEGRITY", "", "", digestBits) (Part 1, "Protected Storage")."""
    sym_key = kdfa(alg, seed, "STORAGE", name, b"", key_bits)
    hmac_key = kdfa(alg, seed, "INTEGRITY", b"", b"", 8 * hash_alg(alg).digest_size)
    return sym_key, hmac_key


def _outer_integrity(alg: int, hmac_key: bytes, protected: bytes, name: bytes) -> bytes:
    return hmac.new(hmac_key, protected + name, hash_alg(alg).hashlib_name).digest()


def produce_outer_wrap(alg: int, seed: bytes, key_bits: int, name: bytes, data: bytes, iv: bytes | None) -> bytes:
    """TPM2B_DIGEST(HMAC(HMACkey, [iv2b ||] encData || Name)) || [iv2b ||] encData.

    A private blob carries a random IV (``iv``); a duplication blob or a credential,
    whose seed is used once, is encrypted with the all-zero IV and carries none.
    """
    from .types import TPM2B_DIGEST, TPM2B_IV

    sym_key, hmac_key = _outer_keys(alg, seed, key_bits, name)
    if iv is None:
        protected = aes_cfb(sym_key, bytes(AES_BLOCK), data, True)
    else:
        protected = TPM2B_IV.pack(iv) + aes_cfb(sym_key, iv, data, True)
    return TPM2B_DIGEST.pack(_outer_integrity(alg, hmac_key, protected, name)) + protected


def unwrap_outer(alg: int, seed: bytes, key_bits: int, name: bytes, blob: bytes, use_iv: bool) -> bytes:
    """The data inside an outer wrapper; bare TPM_RC_INTEGRITY when the HMAC does not verify
    for this seed and Name (compared in constant time), TPM_RC_VALUE for a wrong IV size."""
    from .types import TPM2B_DIGEST, TPM2B_IV

    sym_key, hmac_key = _outer_keys(alg, seed, key_bits, name)
    r = Reader(blob)
    integrity = TPM2B_DIGEST.unmarshal(r)
    protected = r.rest()
    if not hmac.compare_digest(integrity, _outer_integrity(alg, hmac_key, protected, name)):
        raise TpmError(TPM_RC.INTEGRITY, "outer integrity check failed")
    iv = bytes(AES_BLOCK)
    r = Reader(protected)
    if use_iv:
        iv = TPM2B_IV.unmarshal(r)
        if len(iv) != AES_BLOCK:
            raise TpmError(TPM_RC.VALUE, f"IV of {len(iv)} octets")
    return aes_cfb(sym_key, iv, r.rest(), False)


def produce_inner_wrap(name_alg: int, sym_key: bytes, name: bytes, data: bytes) -> bytes:
    """CFB(symKey, 0, TPM2B_DIGEST(H_nameAlg(data || Name)) || data): the caller's own
    protection of a duplicate (Part 1, "Duplication"), keyed by a key only the caller knows."""
    from .types import TPM2B_DIGEST

    integrity = hash_alg(name_alg).digest(data + name)
    return aes_cfb(sym_key, bytes(AES_BLOCK), TPM2B_DIGEST.pack(integrity) + data, True)


def unwrap_inner(name_alg: int, sym_key: bytes, name: bytes, blob: bytes) -> bytes:
    """The data inside an inner wrapper; bare TPM_RC_INTEGRITY when its digest does not match."""
    from .types import TPM2B_DIGEST

    r = Reader(aes_cfb(sym_key, bytes(AES_BLOCK), blob, False))
    integrity = TPM2B_DIGEST.unmarshal(r)
    data = r.rest()
    if not hmac.compare_digest(integrity, hash_alg(name_alg).digest(data + name)):
        raise TpmError(TPM_RC.INTEGRITY, "inner integrity check failed")
    return data


def _protection_bits(protector: LoadedObject) -> int:
    """The key size a protector's children (or credentials, or duplicates) are encrypted with."""
    return protection_symmetric(protector.area).keyBits


# --- private blobs -------------------------------------------------------------------------------


def wrap_sensitive(parent: LoadedObject, name: bytes, sensitive_area, random) -> bytes:
    """The TPM2B_PRIVATE contents protecting ``sensitive_area`` (a TPMT_SENSITIVE) under ``parent``."""
    from .types import TPM2B_SENSITIVE

    data = TPM2B_SENSITIVE.pack(sensitive_area)
    return produce_outer_wrap(
        parent.name_alg, parent.seed_value, _protection_bits(parent), name, data, random(AES_BLOCK)
    )


def unwrap_sensitive(parent: LoadedObject, name: bytes, blob: bytes):
    """The TPMT_SENSITIVE in a TPM2B_PRIVATE; bare TPM_RC_INTEGRITY if it was not made for
    this Name under this parent, TPM_RC_VALUE for a wrong IV size."""
    from .types import TPM2B_SENSITIVE

    plain = unwrap_outer(parent.name_alg, parent.seed_value, _protection_bits(parent), name, blob, True)
    try:
        return TPM2B_SENSITIVE.unpack(plain)
    except TpmError as err:
        raise TpmError(TPM_RC.SENSITIVE, f"sensitive area does not unmarshal: {err.detail}") from None


# --- credentials (Part 1, "Credential Protection") -----------------------------------------------


def secret_to_credential(protector: LoadedObject, name: bytes, seed: bytes, credential: bytes) -> bytes:
    """A TPM2B_ID_OBJECT's contents: the TPM2B_DIGEST ``credential`` under an outer wrapper keyed
    from ``seed`` and bound to the Name of the object it certifies."""
    from .types import TPM2B_DIGEST

    return produce_outer_wrap(
        protector.name_alg, seed, _protection_bits(protector), name, TPM2B_DIGEST.pack(credential), None
    )


def credential_to_secret(protector: LoadedObject, name: bytes, seed: bytes, blob: bytes) -> bytes:
    """The credential in a TPM2B_ID_OBJECT; bare TPM_RC_INTEGRITY for a blob not made for this seed
    and Name, TPM_RC_SIZE when the decrypted credential does not fill it exactly."""
    from .types import TPM2B_DIGEST

    plain = unwrap_outer(protector.name_alg, seed, _protection_bits(protector), name, blob, False)
    r = Reader(plain)
    credential = TPM2B_DIGEST.unmarshal(r)
    if r.remaining:
        raise TpmError(TPM_RC.SIZE, f"{r.remaining} octets after the credential")
    return credential


# --- duplication blobs (Part 1, "Duplication") ---------------------------------------------------


def duplicate_outer_wrap(new_parent: LoadedObject, seed: bytes, name: bytes, data: bytes) -> bytes:
    """The outer wrapper of a duplicate for ``new_parent``: keyed from a seed used once, so no IV."""
    return produce_outer_wrap(new_parent.name_alg, seed, _protection_bits(new_parent), name, data, None)


def duplicate_outer_unwrap(parent: LoadedObject, seed: bytes, name: bytes, blob: bytes) -> bytes:
    """What :func:`duplicate_outer_wrap` protected; bare TPM_RC_INTEGRITY when it does not verify."""
    return unwrap_outer(parent.name_alg, seed, _protection_bits(parent), name, blob, False)


def sensitive_to_duplicate(
    sensitive_area, name: bytes, name_alg: int, new_parent: LoadedObject | None, seed: bytes, inner_key: bytes | None
) -> bytes:
    """A duplicate: TPM2B_SENSITIVE, under an inner wrapper when ``inner_key`` is given and an
    outer one (keyed from ``seed``, for ``new_parent``) when there is a new parent."""
    from .types import TPM2B_SENSITIVE

    data = TPM2B_SENSITIVE.pack(sensitive_area)
    if inner_key is not None:
        data = produce_inner_wrap(name_alg, inner_key, name, data)
    if new_parent is not None:
        data = duplicate_outer_wrap(new_parent, seed, name, data)
    return data


def duplicate_to_sensitive(
    blob: bytes, name: bytes, name_alg: int, parent: LoadedObject, seed: bytes | None, inner_key: bytes | None
):
    """The TPMT_SENSITIVE of a duplicate (``seed`` None: no outer wrapper, ``inner_key`` None: no
    inner one); bare TPM_RC_INTEGRITY when a wrapper does not verify, TPM_RC_SIZE when the
    sensitive area does not fill what is left exactly."""
    from .types import TPMT_SENSITIVE

    data = blob
    if seed is not None:
        data = duplicate_outer_unwrap(parent, seed, name, data)
    if inner_key is not None:
        data = unwrap_inner(name_alg, inner_key, name, data)
    r = Reader(data)
    size = int.from_bytes(r.take(2), "big")
    if size != r.remaining:
        raise TpmError(TPM_RC.SIZE, f"TPM2B_SENSITIVE of {size} octets in {r.remaining}")
    area = TPMT_SENSITIVE.unmarshal(r)
    if r.remaining:
        raise TpmError(TPM_RC.SIZE, f"{r.remaining} octets after the sensitive area")
    return area


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
