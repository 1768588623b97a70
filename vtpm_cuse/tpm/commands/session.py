"""Session commands (Part 3, clause 11): TPM2_StartAuthSession.

TPM2_PolicyRestart, the other command of clause 11, lives with the policy
commands in :mod:`.policy`.  Flushing, saving and loading a session go through
the handle-type table (:mod:`~vtpm_cuse.tpm.handle_types`).
"""

from __future__ import annotations

from ..algorithms import hash_alg
from ..command import H, command
from ..constants import TPM_ALG, TPM_CC, TPM_RH, TPM_SE
from ..entities import Entity
from ..errors import TPM_RC, TpmError
from ..nv_index import is_pin_fail_index
from ..objects import TPMA_OBJECT
from ..persistent import find_object
from ..secret_exchange import decrypt_secret
from ..sessions import Session, bind_value, create_session, session_key
from ..types import (
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_NONCE,
    TPM_SE_T,
    TPMI_ALG_HASH,
    TPMI_DH_ENTITY,
    TPMI_DH_OBJECT,
    TPMI_SH_AUTH_SESSION,
    TPMT_SYM_DEF,
)

#: Part 3: nonceCaller is at least 16 octets and at most the digest size of authHash.
MIN_NONCE_SIZE = 16


def decrypt_salt(ctx, tpm_key: int, encrypted_salt: bytes) -> bytes:
    """Recover a salted session's salt with tpmKey's private key (label "SECRET").

    tpmKey must be a loaded or persistent asymmetric decryption key with its private part:
    a hash sequence is TPM_RC_KEY, a public-only object TPM_RC_HANDLE, a key
    without the decrypt attribute TPM_RC_ATTRIBUTES; a salt that does not
    decrypt is TPM_RC_VALUE on encryptedSalt.
    """
    key = find_object(ctx.engine, tpm_key)
    if key is None or key.type not in (TPM_ALG.RSA, TPM_ALG.ECC):
        raise TpmError(TPM_RC.KEY, f"0x{tpm_key:08x} is not an asymmetric key", at="tpmKey")
    if key.public_only:
        raise TpmError(TPM_RC.HANDLE, "tpmKey has only its public part loaded", at="tpmKey")
    if not key.attributes & TPMA_OBJECT.decrypt:
        raise TpmError(TPM_RC.ATTRIBUTES, "tpmKey is not a decryption key", at="tpmKey")
    try:
        return decrypt_secret(key, b"SECRET", encrypted_salt)
    except TpmError as err:
        raise TpmError(TPM_RC.VALUE, err.detail, at="encryptedSalt") from None


def start_session(
    ctx, session_type: int, auth_hash: int, nonce_caller: bytes, symmetric, bind_entity: Entity | None, salt: bytes
) -> Session:
    """Create the session once the salt (decrypted, or empty) is known."""
    session = create_session(ctx.engine, session_type, auth_hash, len(nonce_caller))
    session.session_key = session_key(auth_hash, bind_entity, salt, session.nonce_tpm, nonce_caller)
    session.symmetric = symmetric.algorithm
    session.key_bits = symmetric.keyBits if symmetric.algorithm == TPM_ALG.AES else 0
    # Only an HMAC session is bound; a policy session just uses the bind authValue in its key.
    if bind_entity is not None and session_type == TPM_SE.HMAC:
        session.bound_to = bind_value(auth_hash, bind_entity)
    return session


@command(
    TPM_CC.StartAuthSession,
    handles=[H("tpmKey", TPMI_DH_OBJECT.plus()), H("bind", TPMI_DH_ENTITY.plus())],
    params=[
        ("nonceCaller", TPM2B_NONCE),
        ("encryptedSalt", TPM2B_ENCRYPTED_SECRET),
        ("sessionType", TPM_SE_T),
        ("symmetric", TPMT_SYM_DEF),
        ("authHash", TPMI_ALG_HASH),
    ],
    response_handles=[H("sessionHandle", TPMI_SH_AUTH_SESSION)],
    response=[("nonceTPM", TPM2B_NONCE)],
)
def start_auth_session(
    ctx, tpmKey: int, bind: int, nonceCaller: bytes, encryptedSalt: bytes, sessionType: int, symmetric, authHash: int
):
    if not MIN_NONCE_SIZE <= len(nonceCaller) <= hash_alg(authHash).digest_size:
        raise TpmError(TPM_RC.SIZE, f"nonceCaller of {len(nonceCaller)} octets", at="nonceCaller")
    if tpmKey != TPM_RH.NULL:
        if not encryptedSalt:
            raise TpmError(TPM_RC.VALUE, "tpmKey without encryptedSalt", at="encryptedSalt")
        salt = decrypt_salt(ctx, tpmKey, encryptedSalt)
    elif encryptedSalt:
        raise TpmError(TPM_RC.VALUE, "encryptedSalt without tpmKey", at="encryptedSalt")
    else:
        salt = b""
    if symmetric.algorithm == TPM_ALG.AES and symmetric.mode != TPM_ALG.CFB:
        raise TpmError(TPM_RC.MODE, "session encryption is CFB only", at="symmetric")
    if is_pin_fail_index(ctx.engine, bind):
        # A session bound to a PIN Fail index would authorize it without counting failures.
        raise TpmError(TPM_RC.HANDLE, f"bind 0x{bind:08x} is a PIN Fail index", at="bind")
    bind_entity = ctx.entity("bind") if bind != TPM_RH.NULL else None
    session = start_session(ctx, sessionType, authHash, nonceCaller, symmetric, bind_entity, salt)
    return ctx.response(sessionHandle=session.handle, nonceTPM=session.nonce_tpm)
