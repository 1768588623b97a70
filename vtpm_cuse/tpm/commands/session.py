"""Session commands (Part 3, clause 11): TPM2_StartAuthSession, and how a
session is saved and loaded by TPM2_ContextSave / TPM2_ContextLoad.

TPM2_PolicyRestart, the other command of clause 11, lives with the policy
commands in :mod:`.policy`.  Flushing a session goes through the FlushContext
registry (:func:`~vtpm_cuse.tpm.sessions.flush_session`).
"""

from __future__ import annotations

from ..algorithms import hash_alg
from ..command import H, command
from ..constants import MAX_LOADED_SESSIONS, TPM_ALG, TPM_CC, TPM_HT, TPM_RH, TPM_SE
from ..entities import Entity
from ..errors import TPM_RC, TpmError
from ..marshal import UINT8, UINT16, UINT32, UINT64, Struct
from ..objects import TPMA_OBJECT
from ..secret_exchange import decrypt_secret
from ..sessions import PolicyState, Session, bind_value, create_session, session_key
from ..types import (
    TPM2B_ENCRYPTED_SECRET, TPM2B_NONCE, TPM_SE_T, TPMI_ALG_HASH, TPMI_DH_ENTITY, TPMI_DH_OBJECT,
    TPMI_SH_AUTH_SESSION, TPMT_SYM_DEF,
)
from .. import session_auth  # noqa: F401  (registers the HMAC/policy session loaders)
from .context import ContextKind, context_kind

#: Part 3: nonceCaller is at least 16 octets and at most the digest size of authHash.
MIN_NONCE_SIZE = 16


def decrypt_salt(ctx, tpm_key: int, encrypted_salt: bytes) -> bytes:
    """Recover a salted session's salt with tpmKey's private key (label "SECRET").

    tpmKey must be a loaded asymmetric decryption key with its private part:
    a hash sequence is TPM_RC_KEY, a public-only object TPM_RC_HANDLE, a key
    without the decrypt attribute TPM_RC_ATTRIBUTES; a salt that does not
    decrypt is TPM_RC_VALUE on encryptedSalt.
    """
    key = ctx.engine.volatile.objects.loaded.get(tpm_key)
    if key is None or key.type not in (TPM_ALG.RSA, TPM_ALG.ECC):
        raise TpmError(TPM_RC.KEY, f"0x{tpm_key:08x} is not an asymmetric key").at_handle(1)
    if not key.sensitive:
        raise TpmError(TPM_RC.HANDLE, "tpmKey has only its public part loaded").at_handle(1)
    if not key.attributes & TPMA_OBJECT.decrypt:
        raise TpmError(TPM_RC.ATTRIBUTES, "tpmKey is not a decryption key").at_handle(1)
    try:
        return decrypt_secret(key, b"SECRET", encrypted_salt)
    except TpmError as err:
        raise TpmError(TPM_RC.VALUE, err.detail).at_parameter(2) from None


def start_session(ctx, session_type: int, auth_hash: int, nonce_caller: bytes, symmetric,
                  bind_entity: Entity | None, salt: bytes) -> Session:
    """Create the session once the salt (decrypted, or empty) is known."""
    session = create_session(ctx.engine, session_type, auth_hash, len(nonce_caller))
    session.session_key = session_key(auth_hash, bind_entity, salt, session.nonce_tpm, nonce_caller)
    session.symmetric = symmetric.algorithm
    session.key_bits = symmetric.keyBits if symmetric.algorithm == TPM_ALG.AES else 0
    # Only an HMAC session is bound; a policy session just uses the bind authValue in its key.
    if bind_entity is not None and session_type == TPM_SE.HMAC:
        session.bound_to = bind_value(auth_hash, bind_entity)
    return session


@command(TPM_CC.StartAuthSession,
         handles=[H("tpmKey", TPMI_DH_OBJECT.plus()), H("bind", TPMI_DH_ENTITY.plus())],
         params=[("nonceCaller", TPM2B_NONCE), ("encryptedSalt", TPM2B_ENCRYPTED_SECRET),
                 ("sessionType", TPM_SE_T), ("symmetric", TPMT_SYM_DEF), ("authHash", TPMI_ALG_HASH)],
         response_handles=[H("sessionHandle", TPMI_SH_AUTH_SESSION)], response=[("nonceTPM", TPM2B_NONCE)])
def start_auth_session(ctx, tpmKey: int, bind: int, nonceCaller: bytes, encryptedSalt: bytes,
                       sessionType: int, symmetric, authHash: int):
    if not MIN_NONCE_SIZE <= len(nonceCaller) <= hash_alg(authHash).digest_size:
        raise TpmError(TPM_RC.SIZE, f"nonceCaller of {len(nonceCaller)} octets").at_parameter(1)
    if tpmKey != TPM_RH.NULL:
        if not encryptedSalt:
            raise TpmError(TPM_RC.VALUE, "tpmKey without encryptedSalt").at_parameter(2)
        salt = decrypt_salt(ctx, tpmKey, encryptedSalt)
    elif encryptedSalt:
        raise TpmError(TPM_RC.VALUE, "encryptedSalt without tpmKey").at_parameter(2)
    else:
        salt = b""
    if symmetric.algorithm == TPM_ALG.AES and symmetric.mode != TPM_ALG.CFB:
        raise TpmError(TPM_RC.MODE, "session encryption is CFB only").at_parameter(4)
    bind_entity = ctx.entities[1] if bind != TPM_RH.NULL else None
    session = start_session(ctx, sessionType, authHash, nonceCaller, symmetric, bind_entity, salt)
    return {"sessionHandle": session.handle, "nonceTPM": session.nonce_tpm}


# --- context save and load (TPM2_ContextSave / TPM2_ContextLoad of a session) ------------------

#: TPM_PT_CONTEXT_GAP_MAX: the oldest saved session may lag this many saves behind the newest.
CONTEXT_GAP_MAX = 0xFFFF
#: PolicyState flags in a saved context.
_AUTH_VALUE_NEEDED, _PASSWORD_NEEDED, _PCR_COUNTER_SET = 1, 2, 4

#: What a saved session carries inside its (encrypted) context blob; this TPM's own layout.
SESSION_CONTEXT = Struct("SessionContext", [
    ("type", UINT8), ("authHash", UINT16), ("nonceTPM", TPM2B_NONCE), ("sessionKey", TPM2B_NONCE),
    ("symmetric", UINT16), ("keyBits", UINT16), ("boundTo", TPM2B_NONCE),
    ("policyDigest", TPM2B_NONCE), ("commandCode", UINT32), ("locality", UINT8), ("flags", UINT8),
    ("pcrCounter", UINT64)])


def _save_session(ctx, handle: int) -> tuple[int, int, int, bytes]:
    """Move a loaded session out to a context; it keeps its handle until loaded or flushed."""
    table = ctx.engine.volatile.sessions
    if table.saved and table.context_counter + 1 - min(table.saved.values()) > CONTEXT_GAP_MAX:
        raise TpmError(TPM_RC.CONTEXT_GAP, "the oldest saved session must be loaded and saved first")
    session = table.loaded.pop(handle)
    table.context_counter += 1
    table.saved[handle] = table.context_counter
    policy = session.policy
    flags = 0
    if policy is not None:
        flags |= _AUTH_VALUE_NEEDED if policy.auth_value_needed else 0
        flags |= _PASSWORD_NEEDED if policy.password_needed else 0
        flags |= _PCR_COUNTER_SET if policy.pcr_counter is not None else 0
    payload = SESSION_CONTEXT.pack(SESSION_CONTEXT(
        type=session.type, authHash=session.auth_hash, nonceTPM=session.nonce_tpm,
        sessionKey=session.session_key, symmetric=session.symmetric, keyBits=session.key_bits,
        boundTo=session.bound_to, policyDigest=policy.digest if policy else b"",
        commandCode=policy.command_code if policy else 0, locality=policy.locality if policy else 0,
        flags=flags, pcrCounter=(policy.pcr_counter or 0) if policy else 0))
    return table.context_counter, handle, TPM_RH.NULL, payload


def _load_session(ctx, context, payload: bytes) -> int:
    """Bring a saved session back to its handle; only its latest context is accepted."""
    table = ctx.engine.volatile.sessions
    handle = context.savedHandle
    if table.saved.get(handle) != context.sequence:
        raise TpmError(TPM_RC.HANDLE, f"0x{handle:08x} has no saved context of that sequence").at_parameter(1)
    if len(table.loaded) >= MAX_LOADED_SESSIONS:
        raise TpmError(TPM_RC.SESSION_MEMORY, "no free session slot")
    saved = SESSION_CONTEXT.unpack(payload)
    session = Session(handle=handle, type=saved.type, auth_hash=saved.authHash, nonce_tpm=saved.nonceTPM,
                      session_key=saved.sessionKey, symmetric=saved.symmetric, key_bits=saved.keyBits,
                      bound_to=saved.boundTo)
    if session.is_policy:
        session.policy = PolicyState(
            digest=saved.policyDigest, command_code=saved.commandCode, locality=saved.locality,
            pcr_counter=saved.pcrCounter if saved.flags & _PCR_COUNTER_SET else None,
            auth_value_needed=bool(saved.flags & _AUTH_VALUE_NEEDED),
            password_needed=bool(saved.flags & _PASSWORD_NEEDED))
    del table.saved[handle]
    table.loaded[handle] = session
    return handle


for _type in (TPM_HT.HMAC_SESSION, TPM_HT.POLICY_SESSION):
    context_kind(_type, ContextKind(_save_session, _load_session))
