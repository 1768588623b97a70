"""Sessions in saved contexts (TPM2_ContextSave / TPM2_ContextLoad of a session).

A saved session gives up its loaded slot but keeps its handle, and only the
context saved last may be loaded again (no replay); the payload is the
session's state in this TPM's own layout, sealed by commands/context.py.
"""

from __future__ import annotations

from .constants import MAX_LOADED_SESSIONS, TPM_RH
from .errors import TPM_RC, TpmError
from .marshal import UINT8, UINT16, UINT32, UINT64, Struct
from .sessions import PolicyState, Session
from .types import TPM2B_NONCE

__all__ = ["CONTEXT_GAP_MAX", "SESSION_CONTEXT", "load_session", "save_session"]

#: TPM_PT_CONTEXT_GAP_MAX: the oldest saved session may lag this many saves behind the newest.
CONTEXT_GAP_MAX = 0xFFFF
#: PolicyState flags in a saved context.
_AUTH_VALUE_NEEDED, _PASSWORD_NEEDED, _PCR_COUNTER_SET, _PP_REQUIRED = 1, 2, 4, 8
#: PolicyState.nv_written in a saved context: not asserted, CLEAR, SET.
_NV_WRITTEN = {None: 0, False: 1, True: 2}

#: What a saved session carries inside its (encrypted) context blob; this TPM's own layout.
SESSION_CONTEXT = Struct(
    "SessionContext",
    [
        ("type", UINT8),
        ("authHash", UINT16),
        ("nonceTPM", TPM2B_NONCE),
        ("sessionKey", TPM2B_NONCE),
        ("symmetric", UINT16),
        ("keyBits", UINT16),
        ("boundTo", TPM2B_NONCE),
        ("policyDigest", TPM2B_NONCE),
        ("commandCode", UINT32),
        ("locality", UINT8),
        ("flags", UINT8),
        ("pcrCounter", UINT64),
        ("commandHash", TPM2B_NONCE),
        ("commandHashKind", UINT8),
        ("timeout", UINT64),
        ("nvWritten", UINT8),
        ("startTime", UINT64),
        ("epoch", UINT64),
        ("auditDigest", TPM2B_NONCE),
    ],
)


def save_session(ctx, handle: int) -> tuple[int, int, int, bytes]:
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
        flags |= _PP_REQUIRED if policy.pp_required else 0
    payload = SESSION_CONTEXT.pack(
        SESSION_CONTEXT(
            type=session.type,
            authHash=session.auth_hash,
            nonceTPM=session.nonce_tpm,
            sessionKey=session.session_key,
            symmetric=session.symmetric,
            keyBits=session.key_bits,
            boundTo=session.bound_to,
            policyDigest=policy.digest if policy else b"",
            commandCode=policy.command_code if policy else 0,
            locality=policy.locality if policy else 0,
            flags=flags,
            pcrCounter=(policy.pcr_counter or 0) if policy else 0,
            commandHash=policy.command_hash if policy else b"",
            commandHashKind=policy.command_hash_kind if policy else 0,
            timeout=policy.timeout if policy else 0,
            nvWritten=_NV_WRITTEN[policy.nv_written] if policy else 0,
            startTime=session.start_time,
            epoch=session.epoch,
            auditDigest=session.audit_digest,
        )
    )
    return table.context_counter, handle, TPM_RH.NULL, payload


def load_session(ctx, context, payload: bytes) -> int:
    """Bring a saved session back to its handle; only its latest context is accepted."""
    table = ctx.engine.volatile.sessions
    handle = context.savedHandle
    if table.saved.get(handle) != context.sequence:
        raise TpmError(TPM_RC.HANDLE, f"0x{handle:08x} has no saved context of that sequence", at="context")
    if len(table.loaded) >= MAX_LOADED_SESSIONS:
        raise TpmError(TPM_RC.SESSION_MEMORY, "no free session slot")
    saved = SESSION_CONTEXT.unpack(payload)
    session = Session(
        handle=handle,
        type=saved.type,
        auth_hash=saved.authHash,
        nonce_tpm=saved.nonceTPM,
        session_key=saved.sessionKey,
        symmetric=saved.symmetric,
        key_bits=saved.keyBits,
        bound_to=saved.boundTo,
        start_time=saved.startTime,
        epoch=saved.epoch,
        audit_digest=saved.auditDigest,
    )
    if session.is_policy:
        session.policy = PolicyState(
            digest=saved.policyDigest,
            command_code=saved.commandCode,
            locality=saved.locality,
            pcr_counter=saved.pcrCounter if saved.flags & _PCR_COUNTER_SET else None,
            auth_value_needed=bool(saved.flags & _AUTH_VALUE_NEEDED),
            password_needed=bool(saved.flags & _PASSWORD_NEEDED),
            command_hash=saved.commandHash,
            command_hash_kind=saved.commandHashKind,
            timeout=saved.timeout,
            pp_required=bool(saved.flags & _PP_REQUIRED),
            nv_written={v: k for k, v in _NV_WRITTEN.items()}.get(saved.nvWritten),
        )
    del table.saved[handle]
    table.loaded[handle] = session
    return handle
