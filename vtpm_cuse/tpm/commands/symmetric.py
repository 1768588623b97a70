"""Symmetric primitives (Part 3, clause 15): TPM2_EncryptDecrypt, TPM2_EncryptDecrypt2, TPM2_HMAC.

TPM2_MAC (and TPM2_MAC_Start) of revision 1.59 share their command codes with
TPM2_HMAC (TPM2_HMAC_Start): a TPM implements one or the other.  Their
inScheme is wire-identical to HMAC's hashAlg for a keyed-hash key, and the
only thing they add is CMAC with a symmetric key, which this TPM does not
implement (TPM_ALG_CMAC is not in :data:`~vtpm_cuse.tpm.algorithms.ALGORITHMS`),
so the HMAC forms are the ones declared.

The key checks of TPM2_HMAC are shared with TPM2_HMAC_Start
(:mod:`.sequences`), which names its handle the same way.
"""

from __future__ import annotations

import hmac

from ..algorithms import hash_alg
from ..command import AuthRole, H, command
from ..constants import TPM_ALG, TPM_CC, TPMA_OBJECT
from ..errors import TPM_RC, TpmError
from ..objects import LoadedObject
from ..persistent import find_object
from ..symmetric import AES_BLOCK_SIZE, BLOCK_ALIGNED_MODES, encrypt_decrypt, iv_size
from ..types import (
    TPM2B_DIGEST,
    TPM2B_IV,
    TPM2B_MAX_BUFFER,
    TPMI_ALG_HASH,
    TPMI_ALG_SYM_MODE,
    TPMI_DH_OBJECT,
    TPMI_YES_NO,
)


def require_private_part(obj: LoadedObject, handle: int) -> None:
    """Refuse a symmetric or keyed-hash object loaded without its private part: there is
    no key and no authValue to use (TPM_RC_AUTH_UNAVAILABLE, as the reference TPM answers)."""
    if obj.public_only:
        raise TpmError(TPM_RC.AUTH_UNAVAILABLE, f"0x{handle:08x} was loaded without its private part")


# --- TPM2_EncryptDecrypt / TPM2_EncryptDecrypt2 ----------------------------------------


def _cipher_key(ctx, keyHandle: int, decrypt: bool) -> LoadedObject:
    """The symmetric key at keyHandle, usable for the direction asked.

    Encrypting needs sign SET and decrypting decrypt SET (Part 3, TPM2_EncryptDecrypt),
    and a restricted key is never usable here: its use is protecting its children.
    """
    key = find_object(ctx.engine, keyHandle)
    if key is None or key.type != TPM_ALG.SYMCIPHER:
        raise TpmError(TPM_RC.KEY, f"0x{keyHandle:08x} is not a symmetric cipher key", at="keyHandle")
    attrs = key.attributes
    needed = TPMA_OBJECT.decrypt if decrypt else TPMA_OBJECT.sign
    if attrs & TPMA_OBJECT.restricted or not attrs & needed:
        direction = "decrypt" if decrypt else "encrypt (sign)"
        raise TpmError(TPM_RC.ATTRIBUTES, f"key 0x{keyHandle:08x} may not {direction}", at="keyHandle")
    require_private_part(key, keyHandle)
    return key


def _select_mode(key_mode: int | None, mode: int) -> int:
    """The key's mode wins; only a key with TPM_ALG_NULL lets the caller pick one."""
    if key_mode not in (None, TPM_ALG.NULL):
        if mode not in (TPM_ALG.NULL, key_mode):
            raise TpmError(TPM_RC.MODE, f"mode 0x{mode:04x}, the key is fixed to 0x{key_mode:04x}", at="mode")
        return key_mode
    if mode == TPM_ALG.NULL:
        raise TpmError(TPM_RC.MODE, "neither the key nor the caller names a mode", at="mode")
    return mode


def _encrypt_decrypt(ctx, keyHandle: int, decrypt: int, mode: int, ivIn: bytes, inData: bytes):
    """The shared body of EncryptDecrypt and EncryptDecrypt2 (whose parameters have the same names)."""
    key = _cipher_key(ctx, keyHandle, decrypt)
    sym = key.area.parameters.sym
    if len(key.sensitive) * 8 != sym.keyBits:  # only an object from outside could have one
        raise TpmError(TPM_RC.KEY, f"key of {len(key.sensitive)} octets, keyBits {sym.keyBits}", at="keyHandle")
    mode = _select_mode(sym.mode, mode)
    if len(ivIn) != iv_size(mode):
        raise TpmError(TPM_RC.SIZE, f"ivIn of {len(ivIn)} octets, mode needs {iv_size(mode)}", at="ivIn")
    if mode in BLOCK_ALIGNED_MODES and len(inData) % AES_BLOCK_SIZE:
        raise TpmError(TPM_RC.SIZE, f"inData of {len(inData)} octets is not whole blocks", at="inData")
    out, iv_out = encrypt_decrypt(key.sensitive, mode, ivIn, inData, bool(decrypt))
    return ctx.response(outData=out, ivOut=iv_out)


@command(
    TPM_CC.EncryptDecrypt,
    handles=[H("keyHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[
        ("decrypt", TPMI_YES_NO),
        ("mode", TPMI_ALG_SYM_MODE.plus()),
        ("ivIn", TPM2B_IV),
        ("inData", TPM2B_MAX_BUFFER),
    ],
    response=[("outData", TPM2B_MAX_BUFFER), ("ivOut", TPM2B_IV)],
)
def encrypt_decrypt_(ctx, keyHandle: int, decrypt: int, mode: int, ivIn: bytes, inData: bytes):
    return _encrypt_decrypt(ctx, keyHandle, decrypt, mode, ivIn, inData)


@command(
    TPM_CC.EncryptDecrypt2,
    handles=[H("keyHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[
        ("inData", TPM2B_MAX_BUFFER),
        ("decrypt", TPMI_YES_NO),
        ("mode", TPMI_ALG_SYM_MODE.plus()),
        ("ivIn", TPM2B_IV),
    ],
    response=[("outData", TPM2B_MAX_BUFFER), ("ivOut", TPM2B_IV)],
)
def encrypt_decrypt2(ctx, keyHandle: int, inData: bytes, decrypt: int, mode: int, ivIn: bytes):
    """EncryptDecrypt with inData first, so that a decrypt session can protect it."""
    return _encrypt_decrypt(ctx, keyHandle, decrypt, mode, ivIn, inData)


# --- TPM2_HMAC (and the key checks of TPM2_HMAC_Start) ---------------------------------


def hmac_key(ctx, handle: int, hashAlg: int) -> tuple[LoadedObject, int]:
    """The HMAC key at ``handle`` and the hash to use with it.

    A key whose scheme names a hash fixes it (hashAlg must be that hash or
    TPM_ALG_NULL); a key with the NULL scheme lets the caller choose, but then
    the caller must (TPM_RC_VALUE).
    """
    key = find_object(ctx.engine, handle)
    if key is None or key.type != TPM_ALG.KEYEDHASH:
        raise TpmError(TPM_RC.TYPE, f"0x{handle:08x} is not a keyed-hash key", at="handle")
    attrs = key.attributes
    if attrs & TPMA_OBJECT.restricted:
        raise TpmError(TPM_RC.ATTRIBUTES, f"0x{handle:08x} is a restricted key", at="handle")
    if not attrs & TPMA_OBJECT.sign:
        raise TpmError(TPM_RC.KEY, f"0x{handle:08x} is not a signing key", at="handle")
    require_private_part(key, handle)
    scheme = key.area.parameters.scheme
    alg = hashAlg
    if scheme.scheme != TPM_ALG.NULL:
        alg = scheme.details.hashAlg
        if hashAlg not in (TPM_ALG.NULL, alg):
            raise TpmError(TPM_RC.VALUE, f"hashAlg 0x{hashAlg:04x}, the key is fixed to 0x{alg:04x}", at="hashAlg")
    if alg == TPM_ALG.NULL:
        raise TpmError(TPM_RC.VALUE, "neither the key nor the caller names a hash", at="hashAlg")
    return key, alg


@command(
    TPM_CC.HMAC,
    handles=[H("handle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[("buffer", TPM2B_MAX_BUFFER), ("hashAlg", TPMI_ALG_HASH.plus())],
    response=[("outHMAC", TPM2B_DIGEST)],
)
def hmac_(ctx, handle: int, buffer: bytes, hashAlg: int):
    key, alg = hmac_key(ctx, handle, hashAlg)
    return ctx.response(outHMAC=hmac.new(key.sensitive, buffer, hash_alg(alg).hashlib_name).digest())
