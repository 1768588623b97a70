"""HMAC, policy and trial sessions: their state and their life cycle.

A session lives in ``VolatileState.sessions`` (a :class:`SessionTable`)
from TPM2_StartAuthSession until it is flushed (TPM2_FlushContext, or a
command that ran with continueSession CLEAR).  The state is plain data --
ints, bytes, nested dataclasses -- so the volatile-state codec can carry it
across a snapshot; the cryptography that uses it lives in
:mod:`.session_auth` (authorization and parameter encryption), the commands
in :mod:`.commands.session` and :mod:`.commands.policy`.

Handles follow the reference TPM's numbering: one index space of
MAX_ACTIVE_SESSIONS slots shared by both kinds, the handle being the index
in the HMAC (0x02) or policy (0x03) range.  At most MAX_LOADED_SESSIONS are
loaded; a context-saved session gives its slot up but keeps its index, so
active sessions = loaded + saved.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .algorithms import hash_alg
from .auth import strip_trailing_zeros
from .constants import (
    HR_HANDLE_MASK,
    HR_HMAC_SESSION,
    HR_POLICY_SESSION,
    MAX_ACTIVE_SESSIONS,
    MAX_LOADED_SESSIONS,
    TPM_ALG,
    TPM_SE,
)
from .crypto.kdf import kdfa
from .entities import Entity, handle_name
from .errors import TPM_RC, TpmError
from .policy_time import time_epoch

if TYPE_CHECKING:
    from .engine import Engine


@dataclasses.dataclass
class PolicyState:
    """What a policy (or trial) session has recorded since it started or was restarted."""

    digest: bytes
    #: TPM2_PolicyCommandCode: the only command this policy may authorize (0: any).
    command_code: int = 0
    #: TPM2_PolicyLocality in canonical TPMA_LOCALITY form (0: any locality).
    locality: int = 0
    #: TPM2_PolicyPCR: the PCR update counter the PCR values were checked at.
    pcr_counter: int | None = None
    #: TPM2_PolicyAuthValue: the authValue goes into the HMAC key.
    auth_value_needed: bool = False
    #: TPM2_PolicyPassword: the authValue is sent in the clear instead of an HMAC.
    password_needed: bool = False
    #: The one digest the authorized command must match (TPM2_PolicyCpHash, PolicyNameHash,
    #: PolicyTemplate, PolicyParameters, PolicyDuplicationSelect, a cpHashA of PolicySigned,
    #: PolicySecret or PolicyTicket), and what it is a digest of (policy_hashes.CommandHashKind).
    command_hash: bytes = b""
    command_hash_kind: int = 0
    #: PolicySigned / PolicySecret / PolicyTicket with an expiration: the Time (ms) after which
    #: the policy no longer authorizes anything (0: no limit).
    timeout: int = 0
    #: TPM2_PolicyPhysicalPresence: the command needs physical presence asserted.
    pp_required: bool = False
    #: TPM2_PolicyNvWritten: the TPMA_NV_WRITTEN state the authorized index must have (None: any).
    nv_written: bool | None = None


@dataclasses.dataclass
class Session:
    handle: int
    type: int  # TPM_SE
    auth_hash: int
    nonce_tpm: bytes
    #: KDFa(authHash, bindAuth || salt, "ATH", nonceTPM, nonceCaller); empty when unbound and unsalted.
    session_key: bytes = b""
    #: Parameter encryption: TPM_ALG_AES (CFB), TPM_ALG_XOR or TPM_ALG_NULL, and AES key bits.
    symmetric: int = TPM_ALG.NULL
    key_bits: int = 0
    #: A digest identifying the bind entity (its Name and authValue); empty when not bound.
    #: Kept as a digest so the state holds no second copy of the authValue.
    bound_to: bytes = b""
    policy: PolicyState | None = None
    #: Time (ms) and time epoch at TPM2_StartAuthSession: an expiration with nonceTPM counts from
    #: there, and a timeout made in another epoch (after a TPM Reset or Restart) is void.
    start_time: int = 0
    epoch: int = 0
    #: The session audit digest (audit.py); empty until the session first audits a command.
    audit_digest: bytes = b""

    @property
    def index(self) -> int:
        return self.handle & HR_HANDLE_MASK

    @property
    def is_policy(self) -> bool:
        return self.type != TPM_SE.HMAC

    @property
    def is_trial(self) -> bool:
        return self.type == TPM_SE.TRIAL

    def restart_policy(self) -> None:
        """Back to the state StartAuthSession left (PolicyRestart, and after each authorization)."""
        self.policy = PolicyState(digest=bytes(hash_alg(self.auth_hash).digest_size))


def bind_value(alg: int, entity: Entity) -> bytes:
    """What identifies a bind entity: its Name and its current authValue.

    A session stays bound only while both are unchanged, so changing the
    entity's authValue ends the special treatment of a bound session.
    """
    name = entity.name
    return hash_alg(alg).digest(len(name).to_bytes(2, "big") + name + strip_trailing_zeros(entity.auth_value))


def session_key(alg: int, bind: Entity | None, salt: bytes, nonce_tpm: bytes, nonce_caller: bytes) -> bytes:
    """sessionKey (Part 1, "Session Key Creation"); empty for an unbound, unsalted session.

    A bound session has a key even when the bind entity's authValue is empty.
    """
    if bind is None and not salt:
        return b""
    bind_auth = strip_trailing_zeros(bind.auth_value) if bind is not None else b""
    return kdfa(alg, bind_auth + salt, b"ATH", nonce_tpm, nonce_caller, 8 * hash_alg(alg).digest_size)


# --- the session table -----------------------------------------------------------------


@dataclasses.dataclass
class SessionTable:
    """The session part of the TPM's RAM.

    A context-saved session gives up its loaded slot but keeps its handle,
    and only the context saved last may be loaded again (no replay), so
    ``saved`` remembers which context sequence number each one expects.
    """

    loaded: dict[int, Session] = dataclasses.field(default_factory=dict)
    #: handle -> sequence number of the one context that may be loaded.
    saved: dict[int, int] = dataclasses.field(default_factory=dict)
    context_counter: int = 0

    def active_count(self) -> int:
        """Sessions that own a handle, loaded or saved (TPM_PT_HR_ACTIVE)."""
        return len(self.loaded) + len(self.saved)

    def find(self, handle: int) -> Session | None:
        """The loaded session in the slot ``handle`` names, whichever of the two ranges it is in."""
        index = handle & HR_HANDLE_MASK
        return next((s for s in self.loaded.values() if s.index == index), None)

    def indices_in_use(self) -> set[int]:
        return {s.index for s in self.loaded.values()} | {h & HR_HANDLE_MASK for h in self.saved}


def create_session(engine: Engine, session_type: int, auth_hash: int, nonce_size: int) -> Session:
    """Allocate a slot and handle for a new session (TPM_RC_SESSION_MEMORY / _HANDLES when full)."""
    table = engine.volatile.sessions
    if len(table.loaded) >= MAX_LOADED_SESSIONS:
        raise TpmError(TPM_RC.SESSION_MEMORY, "no free session slot")
    used = table.indices_in_use()
    index = next((i for i in range(MAX_ACTIVE_SESSIONS) if i not in used), None)
    if index is None:
        raise TpmError(TPM_RC.SESSION_HANDLES, "no free session handle")
    base = HR_HMAC_SESSION if session_type == TPM_SE.HMAC else HR_POLICY_SESSION
    # The TPM's first nonce is as long as the caller's (what the reference TPM does).
    session = Session(
        handle=base + index,
        type=session_type,
        auth_hash=auth_hash,
        nonce_tpm=engine.random(nonce_size),
        start_time=engine.time(),
        epoch=time_epoch(engine),
    )
    if session.is_policy:
        session.restart_policy()
    table.loaded[session.handle] = session
    return session


def session_entity(engine: Engine, handle: int) -> Entity:
    """A session in a handle area (policy commands, ContextSave): its Name is its handle."""
    if handle not in engine.volatile.sessions.loaded:
        raise TpmError(TPM_RC.REFERENCE_H0, f"session 0x{handle:08x} is not loaded")
    return Entity(handle, handle_name(handle))


def flush_session(engine: Engine, handle: int) -> None:
    """TPM2_FlushContext of a loaded or saved session; TPM_RC_HANDLE when there is none."""
    table = engine.volatile.sessions
    if table.loaded.pop(handle, None) is None and table.saved.pop(handle, None) is None:
        raise TpmError(TPM_RC.HANDLE, f"no session 0x{handle:08x}")
