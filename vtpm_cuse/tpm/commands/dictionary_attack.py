"""Dictionary-attack commands (Part 3, clause 25): TPM2_DictionaryAttackLockReset and
TPM2_DictionaryAttackParameters.  Both need lockoutAuth (or the lockout policy), the
one authorization that a lockout of the DA-protected entities does not block; the
counting itself is :mod:`vtpm_cuse.tpm.dictionary_attack`.
"""

from __future__ import annotations

from .. import dictionary_attack
from ..command import AuthRole, H, command
from ..constants import TPM_CC
from ..marshal import UINT32
from ..types import TPMI_RH_LOCKOUT


@command(TPM_CC.DictionaryAttackLockReset, handles=[H("lockHandle", TPMI_RH_LOCKOUT, AuthRole.USER)], nv=True)
def dictionary_attack_lock_reset(ctx, lockHandle: int):
    dictionary_attack.reset_counter(ctx.engine)


@command(
    TPM_CC.DictionaryAttackParameters,
    handles=[H("lockHandle", TPMI_RH_LOCKOUT, AuthRole.USER)],
    params=[("newMaxTries", UINT32), ("newRecoveryTime", UINT32), ("lockoutRecovery", UINT32)],
    nv=True,
)
def dictionary_attack_parameters(ctx, lockHandle: int, newMaxTries: int, newRecoveryTime: int, lockoutRecovery: int):
    dictionary_attack.set_parameters(ctx.engine, newMaxTries, newRecoveryTime, lockoutRecovery)
