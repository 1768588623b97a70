"""What a policy session's deferred assertions require of the command it authorizes.

Checked by :mod:`~vtpm_cuse.tpm.session_auth` when the session authorizes an entity, after
the policyDigest matched the authPolicy (each error is placed at the session):

* TPM2_PolicySecret authorized by a policy needs PolicyAuthValue or PolicyPassword in
  it (TPM_RC_MODE): otherwise a policy could stand in for the secret it is to prove;
* a time limit from PolicySigned / PolicySecret / PolicyTicket (TPM_RC_EXPIRED);
* PolicyPhysicalPresence: the platform asserts physical presence (TPM_RC_PP);
* a cpHash, nameHash, templateHash or pHash: the command's (TPM_RC_POLICY_FAIL);
* PolicyNvWritten: the entity is an NV index in that TPMA_NV_WRITTEN state (TPM_RC_POLICY_FAIL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .constants import TPM_CC, TPMA_NV
from .entities import Entity
from .errors import TPM_RC, TpmError
from .nv_index import get as nv_get
from .nv_index import is_nv_handle
from .physical_presence import require_physical_presence
from .policy_hashes import command_hash_matches
from .policy_time import require_unexpired
from .sessions import Session

if TYPE_CHECKING:
    from .dispatcher import CommandContext


def check_policy_use(ctx: CommandContext, session: Session, entity: Entity) -> None:
    policy = session.policy
    if ctx.command.code == TPM_CC.PolicySecret and not (policy.auth_value_needed or policy.password_needed):
        raise TpmError(TPM_RC.MODE, "TPM2_PolicySecret authorized by a policy without the authValue")
    require_unexpired(ctx.engine, session, policy.timeout)
    if policy.pp_required:
        require_physical_presence(ctx.engine)
    if not command_hash_matches(session, ctx):
        raise TpmError(TPM_RC.POLICY_FAIL, f"{ctx.command.name} is not the command the policy is bound to")
    if policy.nv_written is not None:
        nv = nv_get(ctx.engine, entity.handle) if is_nv_handle(entity.handle) else None
        if nv is None or nv.has(TPMA_NV.WRITTEN) != policy.nv_written:
            raise TpmError(
                TPM_RC.POLICY_FAIL, f"0x{entity.handle:08x} is not an NV index with WRITTEN {policy.nv_written}"
            )
