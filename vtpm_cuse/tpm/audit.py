"""Command audit and audit sessions (Part 1, "Audit"; Part 3 clauses 18.5, 18.6, 21).

Both audits extend a digest with the cpHash and rpHash of each successful command:

    digest := H(digest || cpHash || rpHash)

with the same cpHash / rpHash the dispatcher computes for HMAC sessions
(:meth:`~.dispatcher.CommandContext.cp_hash` / ``rp_hash``), one mechanism for both.

**Command audit**: the commands in the audit list (TPM2_SetCommandCodeAuditStatus is always
in it) extend the TPM's command audit digest, with the audit hash algorithm.  The digest is
state-reset data: kept across TPM Restart and Resume, empty again at TPM Reset.  Extending an
empty digest first increments the audit counter (NV, never reset) and starts from zeros, so
(counter, digest) names one audit sequence.  Which algorithm audits a command is decided
before it runs: a command that changes the algorithm (SetCommandCodeAuditStatus) empties
the digest and is not recorded in the new one, as in the reference TPM.  A signed
GetCommandAuditDigest empties it (an unsigned one only reads it).

**Audit sessions**: an HMAC session used with TPMA_SESSION_AUDIT extends its own digest,
with its authHash, starting from zeros when the session starts or auditReset is SET.  The
TPM remembers the exclusive audit session: the one whose audit record is the last command
the TPM executed, made so by a command with auditReset SET or continuing exclusivity; any
command executed without it (successful or not is decided by the dispatcher: only
successful commands are recorded) ends exclusivity.  A command asking auditExclusive with
a session that is not exclusive is TPM_RC_EXCLUSIVE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .algorithms import hash_alg
from .constants import TPM_ALG, TPM_CC, TPMA_SESSION
from .errors import TPM_RC, TpmError

if TYPE_CHECKING:
    from .dispatcher import CommandContext
    from .engine import Engine

__all__ = [
    "ALWAYS_AUDITED",
    "DEFAULT_AUDIT_ALG",
    "audit_alg",
    "audited_commands",
    "command_audit_alg",
    "command_digest",
    "check_audit_session",
    "record",
    "reset_command_audit",
    "response_attributes",
    "set_audit_alg",
    "set_audit_status",
]

#: The audit hash algorithm of a new TPM (the context-integrity hash, as libtpms).
DEFAULT_AUDIT_ALG = TPM_ALG.SHA512
#: Changes to what is audited are themselves always audited (Part 3, 21.2).
ALWAYS_AUDITED = TPM_CC.SetCommandCodeAuditStatus


# --- command audit -------------------------------------------------------------------------------


def audit_alg(engine: Engine) -> int:
    """The audit hash algorithm (state written before it was stored says TPM_ALG_NULL: the default)."""
    alg = engine.permanent.audit_hash_alg
    return DEFAULT_AUDIT_ALG if alg == TPM_ALG.NULL else alg


def audited_commands(engine: Engine) -> list[int]:
    """TPM_CAP_AUDIT_COMMANDS: the audit list, ascending."""
    return sorted({*engine.permanent.audit_commands, ALWAYS_AUDITED})


def command_audit_alg(engine: Engine, code: int) -> int | None:
    """The algorithm that will audit command ``code`` if it succeeds (None: not audited)."""
    return audit_alg(engine) if code == ALWAYS_AUDITED or code in engine.permanent.audit_commands else None


def command_digest(engine: Engine) -> bytes:
    """TPMS_COMMAND_AUDIT_INFO.commandDigest: H_auditAlg(the audited command codes, ascending)."""
    h = hash_alg(audit_alg(engine)).new()
    for code in audited_commands(engine):
        h.update(code.to_bytes(4, "big"))
    return h.digest()


def set_audit_alg(engine: Engine, alg: int) -> None:
    """A new audit algorithm: the digest of the old one means nothing any more."""
    engine.permanent.audit_hash_alg = alg
    reset_command_audit(engine)


def set_audit_status(engine: Engine, set_list: list[int], clear_list: list[int], implemented: set[int]) -> None:
    """Add ``set_list`` then remove ``clear_list``; codes this TPM does not implement are ignored,
    and TPM2_SetCommandCodeAuditStatus cannot be removed."""
    audited = set(engine.permanent.audit_commands)
    audited |= {code for code in set_list if code in implemented}
    audited -= set(clear_list)
    audited.discard(ALWAYS_AUDITED)  # implied (audited_commands), so old and new state agree
    engine.permanent.audit_commands = sorted(audited)


def reset_command_audit(engine: Engine) -> None:
    """Empty the command audit digest: the next audited command starts a new sequence."""
    engine.permanent.audit_digest = b""


def _extend(alg: int, digest: bytes, cp_hash: bytes, rp_hash: bytes) -> bytes:
    return hash_alg(alg).digest(digest + cp_hash + rp_hash)


def _record_command(ctx: CommandContext, alg: int) -> None:
    perm = ctx.engine.permanent
    if alg != audit_alg(ctx.engine):
        return  # the command changed the algorithm: its hashes are in the old one
    if not perm.audit_digest:
        perm.audit_counter += 1
        perm.audit_digest = bytes(hash_alg(alg).digest_size)
        # The counter must reach NV before the sequence it numbers is reported.  The digest need
        # not: it only has to survive an orderly Shutdown, which writes the permanent state.
        ctx.engine.mark_permanent_dirty()
    perm.audit_digest = _extend(alg, perm.audit_digest, ctx.cp_hash(alg), ctx.rp_hash(alg))


# --- audit sessions ------------------------------------------------------------------------------


def check_audit_session(ctx: CommandContext, use) -> None:
    """The command-side rules of an audit session (called for a session with audit SET)."""
    state = use.session.state
    if state.is_policy:
        raise TpmError(TPM_RC.ATTRIBUTES, "only an HMAC session can audit")
    if any(other.attributes & TPMA_SESSION.audit for other in ctx.sessions if other.index < use.index):
        raise TpmError(TPM_RC.ATTRIBUTES, "audit set in two sessions")
    if use.attributes & TPMA_SESSION.auditExclusive and ctx.engine.volatile.exclusive_audit != state.handle:
        raise TpmError(TPM_RC.EXCLUSIVE, f"0x{state.handle:08x} is not the exclusive audit session")


def _record_session(ctx: CommandContext, use) -> None:
    state = use.session.state
    alg = state.auth_hash
    if use.attributes & TPMA_SESSION.auditReset or not state.audit_digest:
        state.audit_digest = bytes(hash_alg(alg).digest_size)
        ctx.engine.volatile.exclusive_audit = state.handle
    state.audit_digest = _extend(alg, state.audit_digest, ctx.cp_hash(alg), ctx.rp_hash(alg))


def response_attributes(ctx: CommandContext, use) -> int:
    """The attributes a response echoes: for the audit session, auditExclusive SET exactly when
    it is (now) the exclusive audit session, whatever the command asked."""
    attributes = use.attributes
    if attributes & TPMA_SESSION.audit:
        if ctx.engine.volatile.exclusive_audit == use.session.state.handle:
            return attributes | TPMA_SESSION.auditExclusive
        return attributes & ~TPMA_SESSION.auditExclusive
    return attributes


def record(ctx: CommandContext, command_alg: int | None) -> None:
    """After a successful command: extend the command audit digest (``command_alg`` as decided
    before it ran) and the digest of its audit session, and update exclusivity."""
    if command_alg is not None:
        _record_command(ctx, command_alg)
    auditing = next((use for use in ctx.sessions if use.attributes & TPMA_SESSION.audit), None)
    volatile = ctx.engine.volatile
    if auditing is None or volatile.exclusive_audit != auditing.session.state.handle:
        volatile.exclusive_audit = 0
    if auditing is not None:
        _record_session(ctx, auditing)
