"""HMAC and policy sessions in the authorization area (Part 1, clause 19).

:class:`SessionAuthorization` is the :class:`~.auth.AuthSession` the
dispatcher gets for a session handle.  It checks the command HMAC

    HMAC(sessionKey || authValue, cpHash || nonceCaller || nonceTPM
         [|| nonceTPMdecrypt] [|| nonceTPMencrypt] || sessionAttributes)

(authValue left out when an HMAC session is bound to the entity it
authorizes, or when a policy session did not run PolicyAuthValue), checks a
policy session's recorded conditions against the entity's authPolicy,
(de)crypts the first parameter, and answers with a fresh nonceTPM and the
response HMAC over rpHash.  A session whose command ran with
continueSession CLEAR is flushed; a policy session that authorized a
command starts over, because a policy is satisfied for one command only.

An authorization that uses the authValue of a DA-protected entity is
refused in lockout, and a wrong one is counted (:mod:`.dictionary_attack`).
An entity's own rules (:class:`~.entities.AuthRules`: an NV index's
AUTH*/POLICY* bits and PIN counts) decide, for the command, whether its
authValue or authPolicy may be used at all, and hear about every check of the
authValue, right or wrong.

An HMAC session with the audit attribute also keeps a session audit digest (:mod:`.audit`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING

from .algorithms import hash_alg
from .audit import check_audit_session, response_attributes
from .auth import AuthSession, SessionUse, auth_equal, strip_trailing_zeros
from .command import AuthRole, Command
from .constants import EXTENDED_LOCALITY_MIN, HR_SHIFT, MAX_LOCALITY, TPM_ALG, TPM_HT, TPMA_SESSION
from .dictionary_attack import authorization_failed, check_lockout
from .entities import Entity, policy_usable, require_auth_value_usable, value_checked
from .errors import TPM_RC, TpmError
from .parameter_encryption import crypt_first_buffer
from .policy_use import check_policy_use
from .sessions import Session, bind_value

if TYPE_CHECKING:
    from .dispatcher import CommandContext

#: The attributes that make a session useful without authorizing anything.
_NON_AUTH_USES = TPMA_SESSION.decrypt | TPMA_SESSION.encrypt | TPMA_SESSION.audit


def _bad_auth(ctx: CommandContext, entity: Entity | None, what: str) -> TpmError:
    return authorization_failed(ctx.engine, entity, what)


def _policy_available(entity: Entity, command: Command) -> bool:
    """An object (it has a Name) always has an authPolicy, if only an empty one that no
    policy matches; a hierarchy, a sequence object or an NV index has one only when it
    was set -- and the entity's own rules may refuse a policy for this command."""
    is_object = entity.handle >> HR_SHIFT in (TPM_HT.TRANSIENT, TPM_HT.PERSISTENT) and bool(entity.name)
    has_policy = is_object or (entity.policy_alg != TPM_ALG.NULL and bool(entity.policy))
    return has_policy and policy_usable(entity, command)


def _current_auth(ctx: CommandContext, entity: Entity) -> bytes:
    """The entity's authValue after the command ran: a ChangeAuth command may have replaced it
    (the response then proves the new one), and an entity the command flushed (a completed
    sequence) keeps the value it had."""
    try:
        entity = ctx.resolve(entity.handle)
    except TpmError:
        pass
    return strip_trailing_zeros(entity.auth_value)


class SessionAuthorization(AuthSession):
    """One HMAC, policy or trial session as used by the command being executed."""

    def __init__(self, state: Session) -> None:
        self.state = state
        self.handle = state.handle
        #: The HMAC session is bound to the entity it authorizes in this command.
        self._bound_request = False
        self._new_nonce: bytes | None = None

    # --- command side ---------------------------------------------------------------------------
    def check_command(self, use: SessionUse, ctx: CommandContext) -> None:
        state = self.state
        if state.is_trial:
            raise TpmError(TPM_RC.ATTRIBUTES, "a trial session cannot be used in a command")
        if use.attributes & TPMA_SESSION.audit:
            check_audit_session(ctx, use)
        elif use.attributes & (TPMA_SESSION.auditExclusive | TPMA_SESSION.auditReset):
            raise TpmError(TPM_RC.ATTRIBUTES, "auditExclusive or auditReset without audit")
        command = ctx.command
        for flag, possible in (
            (TPMA_SESSION.decrypt, command.first_param_encryptable),
            (TPMA_SESSION.encrypt, command.first_response_encryptable),
        ):
            if not use.attributes & flag:
                continue
            if not possible:
                raise TpmError(TPM_RC.ATTRIBUTES, f"{command.name} has no parameter to {flag.name}")
            if any(other.attributes & flag for other in ctx.sessions if other.index < use.index):
                raise TpmError(TPM_RC.ATTRIBUTES, f"{flag.name} set in two sessions")
            if state.symmetric == TPM_ALG.NULL:
                raise TpmError(TPM_RC.SYMMETRIC, f"{flag.name} session without a symmetric algorithm")
        if use.entity is None:
            # A session that authorizes nothing is there to encrypt; its HMAC still proves
            # the caller holds the session key.
            if not use.attributes & _NON_AUTH_USES:
                raise TpmError(TPM_RC.ATTRIBUTES, "session neither authorizes nor encrypts")
            self._check_hmac(use, ctx, state.session_key)

    def authorize(self, use: SessionUse, ctx: CommandContext) -> None:
        state, entity = self.state, use.entity
        auth = strip_trailing_zeros(entity.auth_value)
        if state.is_policy:
            if state.policy.password_needed or state.policy.auth_value_needed:
                check_lockout(ctx.engine, entity)
            self._check_policy(use, ctx)
            if state.policy.password_needed:
                ok = auth_equal(use.hmac, entity.auth_value)
                value_checked(ctx.engine, entity, ok)
                if not ok:
                    raise _bad_auth(ctx, entity, f"wrong password for 0x{entity.handle:08x}")
                return
            include_auth = state.policy.auth_value_needed
            # With PolicyAuthValue the HMAC proves the authValue; a policy alone uses none.
            uses_value = include_auth
        else:
            self._bound_request = bool(state.bound_to) and hmac.compare_digest(
                state.bound_to, bind_value(state.auth_hash, entity)
            )
            include_auth = not self._bound_request
            if include_auth:
                check_lockout(ctx.engine, entity)
            require_auth_value_usable(entity, ctx.command)
            # Bound or not, the HMAC proves the authValue (a bound session's key holds it).
            uses_value = True
        ok = self._hmac_ok(use, ctx, state.session_key + (auth if include_auth else b""))
        if uses_value:
            value_checked(ctx.engine, entity, ok)
        if not ok:
            raise _bad_auth(ctx, entity, f"wrong HMAC in session 0x{self.handle:08x}")

    def _check_policy(self, use: SessionUse, ctx: CommandContext) -> None:
        """The policy conditions the session recorded, checked against this command."""
        state, entity, policy = self.state, use.entity, self.state.policy
        if not _policy_available(entity, ctx.command):
            raise TpmError(TPM_RC.AUTH_UNAVAILABLE, f"0x{entity.handle:08x} has no authPolicy for {ctx.command.name}")
        if policy.pcr_counter is not None and policy.pcr_counter != ctx.engine.volatile.pcr_counter:
            raise TpmError(TPM_RC.PCR_CHANGED, "PCRs changed since TPM2_PolicyPCR")
        if entity.policy_alg != state.auth_hash or not hmac.compare_digest(policy.digest, entity.policy):
            raise TpmError(TPM_RC.POLICY_FAIL, "policyDigest differs from the authPolicy")
        if policy.command_code:
            if policy.command_code != ctx.command.code:
                raise TpmError(TPM_RC.POLICY_CC, f"policy is for command 0x{policy.command_code:x}")
        elif entity.role in (AuthRole.ADMIN, AuthRole.DUP):
            raise TpmError(TPM_RC.POLICY_FAIL, "ADMIN and DUP roles need TPM2_PolicyCommandCode")
        if policy.locality and not locality_allowed(policy.locality, ctx.locality):
            raise TpmError(TPM_RC.LOCALITY, f"policy does not allow locality {ctx.locality}")
        check_policy_use(ctx, state, entity)

    def _hmac_ok(self, use: SessionUse, ctx: CommandContext, key: bytes) -> bool:
        # With no key at all (unbound, unsalted, empty authValue) an empty HMAC is accepted.
        if not key and not use.hmac:
            return True
        return hmac.compare_digest(use.hmac, self._command_hmac(use, ctx, key))

    def _check_hmac(self, use: SessionUse, ctx: CommandContext, key: bytes) -> None:
        if not self._hmac_ok(use, ctx, key):
            raise _bad_auth(ctx, use.entity, f"wrong HMAC in session 0x{self.handle:08x}")

    def _command_hmac(self, use: SessionUse, ctx: CommandContext, key: bytes) -> bytes:
        state = self.state
        extra = b""
        # The first authorization session also covers the nonces of separate encrypt/decrypt
        # sessions, so those cannot be swapped without the authorizing caller noticing.
        if use.index == 1 and use.entity is not None:
            decrypt = next((u for u in ctx.sessions if u.attributes & TPMA_SESSION.decrypt), None)
            encrypt = next((u for u in ctx.sessions if u.attributes & TPMA_SESSION.encrypt), None)
            if decrypt is not None and decrypt is not use:
                extra += decrypt.session.state.nonce_tpm
            if encrypt is not None and encrypt is not use and encrypt is not decrypt:
                extra += encrypt.session.state.nonce_tpm
        message = ctx.cp_hash(state.auth_hash) + use.nonce + state.nonce_tpm + extra + bytes([use.attributes])
        return hmac.new(key, message, hash_alg(state.auth_hash).hashlib_name).digest()

    # --- parameter encryption ---------------------------------------------------------------
    def _crypt_key(self, use: SessionUse, auth: bytes) -> bytes:
        # The authorized entity's authValue is part of the key even when the session is bound to it.
        return self.state.session_key + (auth if use.entity is not None else b"")

    def decrypt_parameter(self, use: SessionUse, ctx: CommandContext, data: bytes) -> bytes:
        state = self.state
        auth = strip_trailing_zeros(use.entity.auth_value) if use.entity is not None else b""
        try:
            return crypt_first_buffer(
                state.symmetric,
                state.key_bits,
                state.auth_hash,
                self._crypt_key(use, auth),
                data,
                use.nonce,
                state.nonce_tpm,
                encrypt=False,
            )
        except TpmError as err:
            raise err.at_session(use.index) from None

    def encrypt_parameter(self, use: SessionUse, ctx: CommandContext, data: bytes) -> bytes:
        state = self.state
        auth = _current_auth(ctx, use.entity) if use.entity is not None else b""
        return crypt_first_buffer(
            state.symmetric,
            state.key_bits,
            state.auth_hash,
            self._crypt_key(use, auth),
            data,
            self._next_nonce(ctx),
            use.nonce,
            encrypt=True,
        )

    # --- response side ----------------------------------------------------------------------
    def _next_nonce(self, ctx: CommandContext) -> bytes:
        """This command's new nonceTPM: drawn once, used by encryption and the response."""
        if self._new_nonce is None:
            self._new_nonce = ctx.engine.random(len(self.state.nonce_tpm))
        return self._new_nonce

    def response(
        self, use: SessionUse, ctx: CommandContext, rp_hash: Callable[[int], bytes]
    ) -> tuple[bytes, int, bytes]:
        state = self.state
        nonce = self._next_nonce(ctx)
        attributes = response_attributes(ctx, use)
        mac = self._response_hmac(use, ctx, rp_hash, nonce, attributes)
        state.nonce_tpm = nonce
        if not use.attributes & TPMA_SESSION.continueSession:
            ctx.engine.volatile.sessions.loaded.pop(state.handle, None)
        elif state.is_policy:
            state.restart_policy()
        return nonce, attributes, mac

    def _response_hmac(
        self, use: SessionUse, ctx: CommandContext, rp_hash: Callable[[int], bytes], nonce: bytes, attributes: int
    ) -> bytes:
        state = self.state
        if state.is_policy and state.policy.password_needed:
            return b""
        include_auth = (
            use.entity is not None
            and not self._bound_request
            and not (state.is_policy and not state.policy.auth_value_needed)
        )
        key = state.session_key + (_current_auth(ctx, use.entity) if include_auth else b"")
        if state.is_policy and not key and not use.hmac:
            return b""
        message = rp_hash(state.auth_hash) + nonce + use.nonce + bytes([attributes])
        return hmac.new(key, message, hash_alg(state.auth_hash).hashlib_name).digest()


def locality_allowed(setting: int, locality: int) -> bool:
    """Does a TPMA_LOCALITY setting (bit mask below 32, else one extended locality) allow ``locality``?"""
    if setting < EXTENDED_LOCALITY_MIN:
        return locality <= MAX_LOCALITY and bool(setting >> locality & 1)
    return locality == setting


def load_session_authorization(ctx: CommandContext, handle: int) -> SessionAuthorization:
    """The HMAC or policy session at ``handle``, as the authorization area uses it."""
    state = ctx.engine.volatile.sessions.find(handle)
    if state is None:
        raise TpmError(TPM_RC.REFERENCE_S0, f"session 0x{handle:08x} is not loaded")
    if state.handle != handle:
        raise TpmError(TPM_RC.HANDLE, f"session 0x{state.handle:08x} used as 0x{handle:08x}")
    return SessionAuthorization(state)
