"""Enhanced Authorization (Part 3, clause 23) and TPM2_PolicyRestart (clause 11).

Each assertion extends the session's policyDigest,

    policyDigest := H(policyDigest || TPM_CC_PolicyXxx || what was asserted)

and, in a policy session, checks or records a condition that
:mod:`~vtpm_cuse.tpm.session_auth` verifies when the session authorizes a
command.  A trial session only computes the digest: it checks nothing here
and authorizes nothing.
"""

from __future__ import annotations

import hmac

from ..algorithms import hash_alg
from ..command import H, command
from ..constants import EXTENDED_LOCALITY_MIN, MAX_LOCALITY, TPM_CC
from ..errors import TPM_RC, TpmError
from ..pcr_selection import selection_digest
from ..sessions import Session
from ..types import TPM2B_DIGEST, TPM_CC_T, TPMA_LOCALITY_T, TPMI_SH_POLICY, TPML_DIGEST, TPML_PCR_SELECTION

POLICY_SESSION = H("policySession", TPMI_SH_POLICY)
#: TPMA_LOCALITY with every one of localities 0-4 set.
ALL_LOCALITIES = (1 << (MAX_LOCALITY + 1)) - 1
#: TPM2_PolicyOR takes two to eight branches.
MIN_OR_BRANCHES = 2


def _session(ctx, handle: int) -> Session:
    # The dispatcher resolved the handle, so the session is loaded.
    return ctx.engine.volatile.sessions.loaded[handle]


def _extend(session: Session, code: int, *parts: bytes) -> None:
    policy = session.policy
    policy.digest = hash_alg(session.auth_hash).digest(policy.digest + code.to_bytes(4, "big") + b"".join(parts))


@command(TPM_CC.PolicyRestart, handles=[H("sessionHandle", TPMI_SH_POLICY)])
def policy_restart(ctx, sessionHandle: int):
    _session(ctx, sessionHandle).restart_policy()


@command(TPM_CC.PolicyGetDigest, handles=[POLICY_SESSION], response=[("policyDigest", TPM2B_DIGEST)])
def policy_get_digest(ctx, policySession: int):
    return ctx.response(policyDigest=_session(ctx, policySession).policy.digest)


@command(TPM_CC.PolicyAuthValue, handles=[POLICY_SESSION])
def policy_auth_value(ctx, policySession: int):
    session = _session(ctx, policySession)
    _extend(session, TPM_CC.PolicyAuthValue)
    session.policy.auth_value_needed, session.policy.password_needed = True, False


@command(TPM_CC.PolicyPassword, handles=[POLICY_SESSION])
def policy_password(ctx, policySession: int):
    session = _session(ctx, policySession)
    # Same digest as PolicyAuthValue: the policy does not say how the authValue is proven.
    _extend(session, TPM_CC.PolicyAuthValue)
    session.policy.auth_value_needed, session.policy.password_needed = False, True


@command(TPM_CC.PolicyCommandCode, handles=[POLICY_SESSION], params=[("code", TPM_CC_T)])
def policy_command_code(ctx, policySession: int, code: int):
    session = _session(ctx, policySession)
    if session.policy.command_code and session.policy.command_code != code:
        raise TpmError(TPM_RC.VALUE, "policy already names another command", at="code")
    if ctx.engine.table.get(code) is None:
        raise TpmError(TPM_RC.POLICY_CC, f"command 0x{code:x} is not implemented", at="code")
    _extend(session, TPM_CC.PolicyCommandCode, code.to_bytes(4, "big"))
    session.policy.command_code = code


@command(TPM_CC.PolicyLocality, handles=[POLICY_SESSION], params=[("locality", TPMA_LOCALITY_T)])
def policy_locality(ctx, policySession: int, locality: int):
    session = _session(ctx, policySession)
    previous = session.policy.locality
    if locality == 0 or (previous and (previous < EXTENDED_LOCALITY_MIN) != (locality < EXTENDED_LOCALITY_MIN)):
        raise TpmError(TPM_RC.RANGE, f"locality 0x{locality:02x}", at="locality")
    if locality < EXTENDED_LOCALITY_MIN:
        # Repeated assertions narrow the set of localities; an empty set is an error.
        allowed = (previous or ALL_LOCALITIES) & locality
        if not allowed:
            raise TpmError(TPM_RC.RANGE, "no locality left", at="locality")
    else:
        if previous and previous != locality:
            raise TpmError(TPM_RC.RANGE, "another extended locality was asserted", at="locality")
        allowed = locality
    _extend(session, TPM_CC.PolicyLocality, bytes([locality]))
    session.policy.locality = allowed


@command(TPM_CC.PolicyPCR, handles=[POLICY_SESSION], params=[("pcrDigest", TPM2B_DIGEST), ("pcrs", TPML_PCR_SELECTION)])
def policy_pcr(ctx, policySession: int, pcrDigest: bytes, pcrs: list):
    session = _session(ctx, policySession)
    engine = ctx.engine
    if session.is_trial:
        # A trial session computes the policy for the PCR digest the caller gives, or for
        # the current PCR values when it gives none; it checks nothing.
        digest = pcrDigest or selection_digest(engine.volatile.pcrs, session.auth_hash, pcrs)
    else:
        digest = selection_digest(engine.volatile.pcrs, session.auth_hash, pcrs)
        counter = session.policy.pcr_counter
        if counter is not None and counter != engine.volatile.pcr_counter:
            raise TpmError(TPM_RC.PCR_CHANGED, "PCRs changed since the last TPM2_PolicyPCR")
        if pcrDigest and not hmac.compare_digest(pcrDigest, digest):
            raise TpmError(TPM_RC.VALUE, "PCR values differ from pcrDigest", at="pcrDigest")
        session.policy.pcr_counter = engine.volatile.pcr_counter
    _extend(session, TPM_CC.PolicyPCR, TPML_PCR_SELECTION.pack(pcrs), digest)


@command(TPM_CC.PolicyOR, handles=[POLICY_SESSION], params=[("pHashList", TPML_DIGEST)])
def policy_or(ctx, policySession: int, pHashList: list):
    session = _session(ctx, policySession)
    if len(pHashList) < MIN_OR_BRANCHES:
        raise TpmError(TPM_RC.SIZE, "TPM2_PolicyOR needs at least two digests", at="pHashList")
    current = session.policy.digest
    if not session.is_trial and not any(hmac.compare_digest(current, branch) for branch in pHashList):
        raise TpmError(TPM_RC.VALUE, "policyDigest is in no branch", at="pHashList")
    # The branches replace the policy so far: the new digest starts from zeros.
    session.policy.digest = bytes(len(current))
    _extend(session, TPM_CC.PolicyOR, *pHashList)
