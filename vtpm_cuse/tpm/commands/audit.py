"""Command audit (Part 3, clause 21): TPM2_SetCommandCodeAuditStatus.

The audit list, algorithm, counter and digest live in :mod:`~vtpm_cuse.tpm.audit`, which
the dispatcher calls after every successful command; this is the command that changes them.
"""

from __future__ import annotations

from ..audit import audit_alg, set_audit_alg, set_audit_status
from ..command import AuthRole, H, command
from ..constants import TPM_ALG, TPM_CC
from ..errors import TPM_RC, TpmError
from ..types import TPMI_ALG_HASH, TPMI_RH_PROVISION, TPML_CC


@command(
    TPM_CC.SetCommandCodeAuditStatus,
    handles=[H("auth", TPMI_RH_PROVISION, AuthRole.USER)],
    params=[("auditAlg", TPMI_ALG_HASH.plus()), ("setList", TPML_CC), ("clearList", TPML_CC)],
    nv=True,
)
def set_command_code_audit_status(ctx, auth: int, auditAlg: int, setList: list, clearList: list):
    engine = ctx.engine
    if auditAlg != TPM_ALG.NULL and auditAlg != audit_alg(engine):
        # One change at a time: a new algorithm starts a new digest, which the lists would
        # otherwise change in the same breath.
        if setList or clearList:
            raise TpmError(TPM_RC.VALUE, f"auditAlg 0x{auditAlg:04x} changes with a non-empty list", at="auditAlg")
        set_audit_alg(engine, auditAlg)
        return
    set_audit_status(engine, setList, clearList, set(engine.table.codes()))
