"""Enhanced Authorization (Part 3, clause 23) and TPM2_PolicyRestart (clause 11): the
assertions about the command, its caller and its digests.  The authorizations by another
entity (PolicySigned, PolicySecret, PolicyTicket, PolicyAuthorize, PolicyAuthorizeNV) are in
:mod:`.policy_authorizations`, the comparisons with TPM data (PolicyNV, PolicyCounterTimer,
PolicyCapability) in :mod:`.policy_conditions`.

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
from ..policy_digest import extend, policy_session, reset_digest
from ..policy_hashes import CommandHashKind, bind_command_hash, check_command_hash, require_digest_size
from ..types import (
    TPM2B_DIGEST,
    TPM2B_NAME,
    TPM_CC_T,
    TPMA_LOCALITY_T,
    TPMI_SH_POLICY,
    TPMI_YES_NO,
    TPML_DIGEST,
    TPML_PCR_SELECTION,
)

POLICY_SESSION = H("policySession", TPMI_SH_POLICY)
#: TPMA_LOCALITY with every one of localities 0-4 set.
ALL_LOCALITIES = (1 << (MAX_LOCALITY + 1)) - 1
#: TPM2_PolicyOR takes two to eight branches.
MIN_OR_BRANCHES = 2


@command(TPM_CC.PolicyRestart, handles=[H("sessionHandle", TPMI_SH_POLICY)])
def policy_restart(ctx, sessionHandle: int):
    policy_session(ctx, sessionHandle).restart_policy()


@command(TPM_CC.PolicyGetDigest, handles=[POLICY_SESSION], response=[("policyDigest", TPM2B_DIGEST)])
def policy_get_digest(ctx, policySession: int):
    return ctx.response(policyDigest=policy_session(ctx, policySession).policy.digest)


@command(TPM_CC.PolicyAuthValue, handles=[POLICY_SESSION])
def policy_auth_value(ctx, policySession: int):
    session = policy_session(ctx, policySession)
    extend(session, TPM_CC.PolicyAuthValue)
    session.policy.auth_value_needed, session.policy.password_needed = True, False


@command(TPM_CC.PolicyPassword, handles=[POLICY_SESSION])
def policy_password(ctx, policySession: int):
    session = policy_session(ctx, policySession)
    # Same digest as PolicyAuthValue: the policy does not say how the authValue is proven.
    extend(session, TPM_CC.PolicyAuthValue)
    session.policy.auth_value_needed, session.policy.password_needed = False, True


@command(TPM_CC.PolicyCommandCode, handles=[POLICY_SESSION], params=[("code", TPM_CC_T)])
def policy_command_code(ctx, policySession: int, code: int):
    session = policy_session(ctx, policySession)
    if session.policy.command_code and session.policy.command_code != code:
        raise TpmError(TPM_RC.VALUE, "policy already names another command", at="code")
    if ctx.engine.table.get(code) is None:
        raise TpmError(TPM_RC.POLICY_CC, f"command 0x{code:x} is not implemented", at="code")
    extend(session, TPM_CC.PolicyCommandCode, code.to_bytes(4, "big"))
    session.policy.command_code = code


@command(TPM_CC.PolicyLocality, handles=[POLICY_SESSION], params=[("locality", TPMA_LOCALITY_T)])
def policy_locality(ctx, policySession: int, locality: int):
    session = policy_session(ctx, policySession)
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
    extend(session, TPM_CC.PolicyLocality, bytes([locality]))
    session.policy.locality = allowed


@command(TPM_CC.PolicyPCR, handles=[POLICY_SESSION], params=[("pcrDigest", TPM2B_DIGEST), ("pcrs", TPML_PCR_SELECTION)])
def policy_pcr(ctx, policySession: int, pcrDigest: bytes, pcrs: list):
    session = policy_session(ctx, policySession)
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
    extend(session, TPM_CC.PolicyPCR, TPML_PCR_SELECTION.pack(pcrs), digest)


@command(TPM_CC.PolicyOR, handles=[POLICY_SESSION], params=[("pHashList", TPML_DIGEST)])
def policy_or(ctx, policySession: int, pHashList: list):
    session = policy_session(ctx, policySession)
    if len(pHashList) < MIN_OR_BRANCHES:
        raise TpmError(TPM_RC.SIZE, "TPM2_PolicyOR needs at least two digests", at="pHashList")
    current = session.policy.digest
    if not session.is_trial and not any(hmac.compare_digest(current, branch) for branch in pHashList):
        raise TpmError(TPM_RC.VALUE, "policyDigest is in no branch", at="pHashList")
    # The branches replace the policy so far.
    reset_digest(session)
    extend(session, TPM_CC.PolicyOR, *pHashList)


@command(TPM_CC.PolicyPhysicalPresence, handles=[POLICY_SESSION])
def policy_physical_presence(ctx, policySession: int):
    session = policy_session(ctx, policySession)
    extend(session, TPM_CC.PolicyPhysicalPresence)
    session.policy.pp_required = True


@command(TPM_CC.PolicyNvWritten, handles=[POLICY_SESSION], params=[("writtenSet", TPMI_YES_NO)])
def policy_nv_written(ctx, policySession: int, writtenSet: int):
    session = policy_session(ctx, policySession)
    wanted = bool(writtenSet)
    if session.policy.nv_written is not None and session.policy.nv_written != wanted:
        raise TpmError(TPM_RC.VALUE, f"the policy already asserted writtenSet {int(not wanted)}", at="writtenSet")
    extend(session, TPM_CC.PolicyNvWritten, bytes([writtenSet]))
    session.policy.nv_written = wanted


@command(TPM_CC.PolicyCpHash, handles=[POLICY_SESSION], params=[("cpHashA", TPM2B_DIGEST)])
def policy_cp_hash(ctx, policySession: int, cpHashA: bytes):
    session = policy_session(ctx, policySession)
    require_digest_size(session, cpHashA, "cpHashA")
    bind_command_hash(session, CommandHashKind.CP, cpHashA, repeatable=True)
    extend(session, TPM_CC.PolicyCpHash, cpHashA)


@command(TPM_CC.PolicyNameHash, handles=[POLICY_SESSION], params=[("nameHash", TPM2B_DIGEST)])
def policy_name_hash(ctx, policySession: int, nameHash: bytes):
    session = policy_session(ctx, policySession)
    require_digest_size(session, nameHash, "nameHash")
    bind_command_hash(session, CommandHashKind.NAME, nameHash, repeatable=False)
    extend(session, TPM_CC.PolicyNameHash, nameHash)


@command(TPM_CC.PolicyTemplate, handles=[POLICY_SESSION], params=[("templateHash", TPM2B_DIGEST)])
def policy_template(ctx, policySession: int, templateHash: bytes):
    session = policy_session(ctx, policySession)
    policy = session.policy
    if policy.command_hash_kind == CommandHashKind.TEMPLATE and not hmac.compare_digest(
        policy.command_hash, templateHash
    ):
        # Another template digest than the one the session holds is TPM_RC_VALUE at templateHash;
        # another kind of command digest is TPM_RC_CPHASH (Part 3, 23.21; libtpms alike).
        raise TpmError(TPM_RC.VALUE, "the session is bound to another template digest", at="templateHash")
    # The reference TPM checks the binding before the size.
    check_command_hash(session, CommandHashKind.TEMPLATE, templateHash, repeatable=True)
    require_digest_size(session, templateHash, "templateHash")
    bind_command_hash(session, CommandHashKind.TEMPLATE, templateHash, repeatable=True)
    extend(session, TPM_CC.PolicyTemplate, templateHash)


@command(TPM_CC.PolicyParameters, handles=[POLICY_SESSION], params=[("pHash", TPM2B_DIGEST)])
def policy_parameters(ctx, policySession: int, pHash: bytes):
    session = policy_session(ctx, policySession)
    require_digest_size(session, pHash, "pHash")
    bind_command_hash(session, CommandHashKind.PARAMETERS, pHash, repeatable=False)
    extend(session, TPM_CC.PolicyParameters, pHash)


@command(
    TPM_CC.PolicyDuplicationSelect,
    handles=[POLICY_SESSION],
    params=[("objectName", TPM2B_NAME), ("newParentName", TPM2B_NAME), ("includeObject", TPMI_YES_NO)],
)
def policy_duplication_select(ctx, policySession: int, objectName: bytes, newParentName: bytes, includeObject: int):
    """Binds TPM2_Duplicate to the new parent (and, with includeObject, the object) by a
    nameHash of both Names; the policy digest names the object only with includeObject."""
    session = policy_session(ctx, policySession)
    policy = session.policy
    if policy.command_hash_kind != CommandHashKind.NONE:
        raise TpmError(TPM_RC.CPHASH, "the session is bound to a command digest already")
    if policy.command_code:
        raise TpmError(TPM_RC.COMMAND_CODE, f"the policy is for command 0x{policy.command_code:x} already")
    name_hash = hash_alg(session.auth_hash).digest(objectName + newParentName)
    bind_command_hash(session, CommandHashKind.NAME, name_hash, repeatable=False)
    named = objectName if includeObject else b""
    extend(session, TPM_CC.PolicyDuplicationSelect, named, newParentName, bytes([includeObject]))
    policy.command_code = TPM_CC.Duplicate
