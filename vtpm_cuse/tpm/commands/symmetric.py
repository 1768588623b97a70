"""Symmetric primitives (Part 3, clause 15): TPM2_EncryptDecrypt, TPM2_EncryptDecrypt2, TPM2_MAC.

TPM2_MAC (and TPM2_MAC_Start) of revision 1.59 share their command codes with
TPM2_HMAC (TPM2_HMAC_Start): a TPM implements one or the other.  Their
inScheme (TPMI_ALG_MAC_SCHEME) is wire-identical to HMAC's hashAlg for a
keyed-hash key; what they add is CMAC with a symmetric key.  The MAC forms are
declared, as libtpms does, so HMAC clients see the same commands and CMAC
works too.

The key checks of TPM2_MAC are shared with TPM2_MAC_Start (:mod:`.sequences`),
which names its handle the same way.
"""

from __future__ import annotations

from ..algorithms import HASHES, SYM_MAC_MODES
from ..command import AuthRole, H, command
from ..constants import TPM_ALG, TPM_CC, TPMA_OBJECT
from ..errors import TPM_RC, TpmError, errors_at
from ..objects import LoadedObject
from ..persistent import find_object
from ..symmetric import AES_BLOCK_SIZE, BLOCK_ALIGNED_MODES, encrypt_decrypt, iv_size, new_mac
from ..types import (
    TPM2B_DIGEST,
    TPM2B_IV,
    TPM2B_MAX_BUFFER,
    TPMI_ALG_MAC_SCHEME,
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


def _check_key_size(key: LoadedObject, handle: int) -> None:
    """A symmetric key has keyBits bits: only an object from outside could have others (bare code)."""
    bits = key.area.parameters.sym.keyBits
    if len(key.sensitive) * 8 != bits:
        raise TpmError(TPM_RC.KEY, f"0x{handle:08x}: key of {len(key.sensitive)} octets, keyBits {bits}")


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
    with errors_at("keyHandle"):
        _check_key_size(key, keyHandle)
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


# --- TPM2_MAC / TPM2_HMAC (and the key checks of TPM2_MAC_Start) -------------------------


def _key_mac(area) -> int:
    """The MAC a key is fixed to: its keyed-hash scheme's hash, or its symmetric mode."""
    if area.type == TPM_ALG.KEYEDHASH:
        scheme = area.parameters.scheme
        return TPM_ALG.NULL if scheme.scheme == TPM_ALG.NULL else scheme.details.hashAlg
    return area.parameters.sym.mode or TPM_ALG.NULL


def _select_mac(area, inScheme: int) -> int:
    """The MAC to compute with key ``area`` for inScheme (Part 3, TPM2_MAC).

    A key fixed to a MAC takes only that one (or TPM_ALG_NULL for it); a key
    fixed to none needs the caller to name one (TPM_RC_VALUE either way).  The
    MAC must then suit the key: a hash for a keyed-hash key, a block-cipher MAC
    mode for a symmetric one (TPM_RC_SCHEME) -- so a symmetric key made for an
    encryption mode does no MAC at all.
    """
    fixed = _key_mac(area)
    if inScheme != TPM_ALG.NULL:
        if fixed not in (TPM_ALG.NULL, inScheme):
            raise TpmError(TPM_RC.VALUE, f"inScheme 0x{inScheme:04x}, the key is fixed to 0x{fixed:04x}")
        alg = inScheme
    elif fixed == TPM_ALG.NULL:
        raise TpmError(TPM_RC.VALUE, "neither the key nor the caller names a MAC")
    else:
        alg = fixed
    usable = HASHES if area.type == TPM_ALG.KEYEDHASH else SYM_MAC_MODES
    if alg not in usable:
        raise TpmError(TPM_RC.SCHEME, f"MAC 0x{alg:04x} does not suit a key of type 0x{area.type:04x}")
    return alg


def mac_key(ctx, handle: int, inScheme: int) -> tuple[LoadedObject, int]:
    """The MAC key at ``handle`` and the MAC (a hash, or TPM_ALG_CMAC) to compute with it.

    TPM2_MAC and TPM2_MAC_Start of revision 1.59 took over the command codes of
    TPM2_HMAC and TPM2_HMAC_Start; with a keyed-hash key and a hash they are the
    same commands.  The checks run in the order libtpms answers them: the key
    type (handle), the MAC for the key (inScheme), then restricted and sign
    (handle).
    """
    key = find_object(ctx.engine, handle)
    if key is None or key.type not in (TPM_ALG.KEYEDHASH, TPM_ALG.SYMCIPHER):
        raise TpmError(TPM_RC.TYPE, f"0x{handle:08x} is neither a keyed-hash nor a symmetric key", at="handle")
    with errors_at("inScheme"):
        alg = _select_mac(key.area, inScheme)
    attrs = key.attributes
    if attrs & TPMA_OBJECT.restricted:
        raise TpmError(TPM_RC.ATTRIBUTES, f"0x{handle:08x} is a restricted key", at="handle")
    if not attrs & TPMA_OBJECT.sign:
        raise TpmError(TPM_RC.KEY, f"0x{handle:08x} is not a signing key", at="handle")
    require_private_part(key, handle)
    if key.type == TPM_ALG.SYMCIPHER:
        with errors_at("handle"):
            _check_key_size(key, handle)
    return key, alg


@command(
    TPM_CC.MAC,
    handles=[H("handle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[("buffer", TPM2B_MAX_BUFFER), ("inScheme", TPMI_ALG_MAC_SCHEME.plus())],
    response=[("outMAC", TPM2B_DIGEST)],
)
def mac(ctx, handle: int, buffer: bytes, inScheme: int):
    """TPM2_MAC, which is TPM2_HMAC when the key is a keyed-hash key."""
    key, alg = mac_key(ctx, handle, inScheme)
    return ctx.response(outMAC=new_mac(alg, key.sensitive, buffer).digest())
