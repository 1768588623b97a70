"""Dictionary-attack protection (Part 1, "Dictionary Attack Protection").

Every failed authorization of a DA-protected entity -- an object without
noDA, an NV index without TPMA_NV_NO_DA -- counts in failedTries.  When
failedTries reaches maxTries the TPM is in lockout: an authorization that
would use the authValue of a DA-protected entity answers TPM_RC_LOCKOUT
before the value is even looked at, so a locked-out TPM tells an attacker
nothing.  One failure is forgiven per recoveryTime seconds without a new
failure; recoveryTime 0 turns the protection off (failures are not counted
and any count is dropped).

TPM_RH_LOCKOUT is protected on its own: a wrong lockoutAuth makes lockoutAuth
unusable for lockoutRecovery seconds (0: until the next TPM2_Startup), and
does not count in failedTries, so the owner of lockoutAuth can always reset
the counter -- unless they are guessing too.

The timers are in ms of Time (since _TPM_Init), as Part 3 says for the
parameters of TPM2_DictionaryAttackParameters: a power cycle restarts the
waiting, so cutting power cannot speed recovery up.  The counter and the
lockoutAuth state are NV; a change marks permanent state dirty, and the
transport writes it before the failing response leaves the TPM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .constants import DA_DEFAULT_LOCKOUT_RECOVERY, DA_DEFAULT_MAX_TRIES, DA_DEFAULT_RECOVERY_TIME, TPM_RH
from .errors import TPM_RC, TpmError

if TYPE_CHECKING:
    from .engine import Engine
    from .entities import Entity

MS_PER_SECOND = 1000


def is_protected(entity: Entity | None) -> bool:
    """Whether failed authorizations of ``entity`` count (TPM_RH_LOCKOUT counts apart)."""
    return entity is not None and not entity.da_exempt


def self_heal(engine: Engine) -> None:
    """Forgive the failures whose recoveryTime has passed; re-enable lockoutAuth when due.

    Called before anything reads or changes the DA state, which gives the same
    result as healing at the start of every command.
    """
    perm, vol = engine.permanent, engine.volatile
    now = engine.time()
    if perm.da_failed_tries:
        if perm.da_recovery_time == 0:
            _set_failed_tries(engine, 0)
        else:
            period = perm.da_recovery_time * MS_PER_SECOND
            forgiven = max(0, now - vol.da_self_heal_ms) // period
            if forgiven:
                vol.da_self_heal_ms += forgiven * period
                _set_failed_tries(engine, max(0, min(perm.da_failed_tries, perm.da_max_tries) - forgiven))
    if not perm.da_lockout_auth_enabled and perm.da_lockout_recovery:
        if now - vol.da_lockout_ms >= perm.da_lockout_recovery * MS_PER_SECOND:
            perm.da_lockout_auth_enabled = True
            engine.mark_permanent_dirty()


def in_lockout(engine: Engine) -> bool:
    """TPMA_PERMANENT.inLockout: DA-protected entities cannot be authorized."""
    self_heal(engine)
    return engine.permanent.da_failed_tries >= engine.permanent.da_max_tries


def failed_tries(engine: Engine) -> int:
    """TPM_PT_LOCKOUT_COUNTER."""
    self_heal(engine)
    return engine.permanent.da_failed_tries


def check_lockout(engine: Engine, entity: Entity | None) -> None:
    """Raise TPM_RC_LOCKOUT when an authorization using ``entity``'s authValue is locked out.

    Only for authorizations that use the authValue (password, unbound HMAC,
    policy with PolicyAuthValue/PolicyPassword): a policy alone stays usable.
    """
    if not is_protected(entity):
        return
    if entity.handle == TPM_RH.LOCKOUT:
        self_heal(engine)
        if not engine.permanent.da_lockout_auth_enabled:
            raise TpmError(TPM_RC.LOCKOUT, "lockoutAuth is locked out after a failed authorization")
    elif in_lockout(engine):
        raise TpmError(TPM_RC.LOCKOUT, f"the TPM is in dictionary-attack lockout (0x{entity.handle:08x})")


def authorization_failed(engine: Engine, entity: Entity | None, what: str) -> TpmError:
    """The error for a wrong password or HMAC for ``entity``, after counting it.

    DA-exempt entities answer TPM_RC_BAD_AUTH and count nothing; a protected
    one answers TPM_RC_AUTH_FAIL, with failedTries (or, for TPM_RH_LOCKOUT,
    the lockoutAuth lock) updated and marked for NV first.
    """
    if not is_protected(entity):
        return TpmError(TPM_RC.BAD_AUTH, what)
    self_heal(engine)
    perm, vol = engine.permanent, engine.volatile
    if entity.handle == TPM_RH.LOCKOUT:
        perm.da_lockout_auth_enabled = False
        vol.da_lockout_ms = engine.time()
        engine.mark_permanent_dirty()
    else:
        if perm.da_recovery_time:
            _set_failed_tries(engine, perm.da_failed_tries + 1)
        vol.da_self_heal_ms = engine.time()
    return TpmError(TPM_RC.AUTH_FAIL, what)


def reset_counter(engine: Engine) -> None:
    """TPM2_DictionaryAttackLockReset: failedTries back to zero."""
    _set_failed_tries(engine, 0)
    engine.volatile.da_self_heal_ms = engine.time()


def set_parameters(engine: Engine, max_tries: int, recovery_time: int, lockout_recovery: int) -> None:
    """TPM2_DictionaryAttackParameters.  failedTries is left as it is (the errata to Part 3
    dropped the reset), so lowering maxTries below it puts the TPM in lockout."""
    self_heal(engine)
    perm = engine.permanent
    perm.da_max_tries = max_tries
    perm.da_recovery_time = recovery_time
    perm.da_lockout_recovery = lockout_recovery
    engine.mark_permanent_dirty()


def restore_defaults(engine: Engine) -> None:
    """TPM2_Clear: the parameters of a new TPM, no failures, lockoutAuth usable."""
    perm = engine.permanent
    perm.da_failed_tries = 0
    perm.da_max_tries = DA_DEFAULT_MAX_TRIES
    perm.da_recovery_time = DA_DEFAULT_RECOVERY_TIME
    perm.da_lockout_recovery = DA_DEFAULT_LOCKOUT_RECOVERY
    perm.da_lockout_auth_enabled = True
    engine.mark_permanent_dirty()


def startup(engine: Engine) -> None:
    """TPM2_Startup: with lockoutRecovery 0, only a new boot cycle ends the lockoutAuth lock."""
    perm = engine.permanent
    if perm.da_lockout_recovery == 0 and not perm.da_lockout_auth_enabled:
        perm.da_lockout_auth_enabled = True
        engine.mark_permanent_dirty()


def _set_failed_tries(engine: Engine, value: int) -> None:
    if engine.permanent.da_failed_tries != value:
        engine.permanent.da_failed_tries = value
        engine.mark_permanent_dirty()
