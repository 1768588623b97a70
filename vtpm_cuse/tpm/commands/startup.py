"""Start-up (Part 3, clause 9): TPM2_Startup and TPM2_Shutdown.

Startup decides between TPM Reset, TPM Restart and TPM Resume from the
startup type and the last orderly shutdown recorded in NV:

    Startup(CLEAR) after Shutdown(STATE)  -> TPM Restart
    Startup(STATE) after Shutdown(STATE)  -> TPM Resume (state-saved PCRs restored)
    Startup(CLEAR) otherwise              -> TPM Reset
    Startup(STATE) otherwise              -> TPM_RC_VALUE
"""

from __future__ import annotations

from .. import dictionary_attack, hierarchy, nv_index
from ..audit import reset_command_audit
from ..command import command
from ..constants import IMPLEMENTATION_PCR, TPM_CC, TPM_RH, TPM_SU
from ..errors import TPM_RC, TpmError
from ..hierarchy import NO_POLICY, set_hierarchy_auth, set_hierarchy_policy
from ..pcrs import HCRTM_PCR, PCR_ATTRIBUTES, startup_value
from ..state import SavedState
from ..types import TPM_SU_T


@command(TPM_CC.Startup, params=[("startupType", TPM_SU_T)], nv=True)
def startup(ctx, startupType: int):
    engine = ctx.engine
    perm, vol = engine.permanent, engine.volatile
    if ctx.locality not in (0, 3):
        raise TpmError(TPM_RC.LOCALITY, f"Startup from locality {ctx.locality}")
    saved = perm.saved if perm.orderly_state == TPM_SU.STATE else None
    if startupType == TPM_SU.STATE and saved is None:
        raise TpmError(TPM_RC.VALUE, "Startup(STATE) without a preceding Shutdown(STATE)", at="startupType")
    resume = startupType == TPM_SU.STATE
    restart = startupType == TPM_SU.CLEAR and saved is not None
    # An H-CRTM measurement made before Startup owns PCR 0; the locality no longer matters.
    locality = 0 if vol.drtm_pre_startup else ctx.locality

    if resume or restart:
        perm.restart_count += 1
        vol.pcr_counter = saved.pcr_counter
    else:  # TPM Reset
        perm.reset_count += 1
        perm.total_reset_count += 1
        perm.restart_count = 0
        hierarchy.tpm_reset(engine)
        reset_command_audit(engine)
        vol.pcr_counter = 0
        if perm.pending_pcr_allocation is not None:
            perm.pcr_allocation = perm.pending_pcr_allocation
            perm.pending_pcr_allocation = None
    vol.clock_safe = perm.orderly_state is not None
    # TPMA_STARTUP_CLEAR.orderly: whether the shutdown before this Startup was orderly.
    vol.orderly_startup = perm.orderly_state is not None

    previous = vol.pcrs

    def initial(alg: int, pcr: int, size: int) -> bytes:
        if pcr == HCRTM_PCR and vol.drtm_pre_startup and previous.get(alg, [b""])[pcr]:
            return previous[alg][pcr]
        if resume and PCR_ATTRIBUTES[pcr].state_save:
            value = saved.pcrs.get(alg, [b""] * (pcr + 1))[pcr]
            if len(value) == size:
                return value
        return startup_value(pcr, size, locality)

    engine.init_pcrs(initial)
    for pcr in range(IMPLEMENTATION_PCR):
        if not (resume and PCR_ATTRIBUTES[pcr].state_save):
            engine.pcr_changed(pcr)
    if not resume:
        set_hierarchy_auth(engine, TPM_RH.PLATFORM, b"")
        set_hierarchy_policy(engine, TPM_RH.PLATFORM, NO_POLICY)
        vol.ph_enable = vol.sh_enable = vol.eh_enable = vol.ph_enable_nv = True
    # PCR auth values are TPM_SU_STATE data: a Resume brings back what Shutdown(STATE) saved.
    vol.pcr_auth_values = dict(saved.pcr_auth_values) if resume else {}
    vol.startup_locality = locality
    vol.pcr_reconfigured = False
    vol.started = True
    nv_index.startup(engine, resume=resume, tpm_reset=not (resume or restart), disorderly=perm.orderly_state is None)
    dictionary_attack.startup(engine)
    # Until the next orderly Shutdown, losing power is disorderly.
    perm.orderly_state = None
    perm.saved = None


@command(TPM_CC.Shutdown, params=[("shutdownType", TPM_SU_T)], nv=True)
def shutdown(ctx, shutdownType: int):
    engine = ctx.engine
    perm, vol = engine.permanent, engine.volatile
    if shutdownType == TPM_SU.STATE and vol.pcr_reconfigured:
        # The saved PCRs would not fit the allocation the next TPM Reset applies.
        raise TpmError(TPM_RC.TYPE, "Shutdown(STATE) after PCR_Allocate", at="shutdownType")
    if shutdownType == TPM_SU.STATE:
        perm.saved = SavedState(
            pcrs={
                alg: [value if PCR_ATTRIBUTES[pcr].state_save else b"" for pcr, value in enumerate(bank)]
                for alg, bank in vol.pcrs.items()
            },
            pcr_counter=vol.pcr_counter,
            clock_safe_time=engine.clock(),
            drtm_pre_startup=vol.drtm_pre_startup,
            pcr_auth_values=dict(vol.pcr_auth_values),
        )
    else:
        perm.saved = None
    nv_index.shutdown(engine)
    perm.orderly_state = shutdownType
    perm.clock = engine.clock()
