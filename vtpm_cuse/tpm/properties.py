"""The values GetCapability(TPM_CAP_TPM_PROPERTIES) reports.

Fixed properties describe this implementation; variable properties are
computed from the engine's current state.  Both come from here so the
numbers cannot drift from what the engine does.
"""

from __future__ import annotations

from . import nv_index
from .algorithms import ECC_CURVES
from .constants import (
    IMPLEMENTATION_PCR,
    MAX_ACTIVE_SESSIONS,
    MAX_CAP_BUFFER,
    MAX_CONTEXT_SIZE,
    MAX_DIGEST_BUFFER,
    MAX_DIGEST_SIZE,
    MAX_LOADED_SESSIONS,
    MAX_NV_BUFFER_SIZE,
    MAX_NV_INDEX_SIZE,
    PCR_SELECT_MIN,
    TPM_ALG,
    TPM_PT,
    TPM_RH,
    TPMA_PERMANENT,
    TPMA_STARTUP_CLEAR,
)
from .dictionary_attack import failed_tries, in_lockout
from .hierarchy import hierarchy_auth
from .objects import slots_in_use
from .persistent import persistent_room, persistent_used

#: The Library specification claimed: 1.83 (January 25, 2024), because the engine implements
#: commands it added (PolicyCapability, PolicyParameters, ...).  Every TPM_CC it defines is
#: implemented or explained in spec_commands.NOT_IMPLEMENTED (tests/test_command_table.py).
SPEC_LEVEL = 0
SPEC_REVISION = 183
SPEC_DAY_OF_YEAR = 25
SPEC_YEAR = 2024
MANUFACTURER = b"VCSE"
VENDOR_STRINGS = (b"vtpm", b"-cus", b"e\0\0\0", b"\0\0\0\0")
FIRMWARE_VERSION = (0, 1, 0)
PC_CLIENT_FAMILY = 1
PC_CLIENT_REVISION = 0x105


def _u32(chars: bytes) -> int:
    return int.from_bytes(chars, "big")


def firmware_version_words() -> tuple[int, int]:
    """TPM_PT_FIRMWARE_VERSION_1 and _2; attestations carry them as one UINT64 (1 || 2)."""
    major, minor, patch = FIRMWARE_VERSION
    return (major << 16) | minor, patch << 16


def fixed_properties(engine) -> list[tuple[int, int]]:
    firmware_1, firmware_2 = firmware_version_words()
    return [
        (TPM_PT.FAMILY_INDICATOR, _u32(b"2.0\0")),
        (TPM_PT.LEVEL, SPEC_LEVEL),
        (TPM_PT.REVISION, SPEC_REVISION),
        (TPM_PT.DAY_OF_YEAR, SPEC_DAY_OF_YEAR),
        (TPM_PT.YEAR, SPEC_YEAR),
        (TPM_PT.MANUFACTURER, _u32(MANUFACTURER)),
        (TPM_PT.VENDOR_STRING_1, _u32(VENDOR_STRINGS[0])),
        (TPM_PT.VENDOR_STRING_2, _u32(VENDOR_STRINGS[1])),
        (TPM_PT.VENDOR_STRING_3, _u32(VENDOR_STRINGS[2])),
        (TPM_PT.VENDOR_STRING_4, _u32(VENDOR_STRINGS[3])),
        (TPM_PT.VENDOR_TPM_TYPE, 1),
        (TPM_PT.FIRMWARE_VERSION_1, firmware_1),
        (TPM_PT.FIRMWARE_VERSION_2, firmware_2),
        (TPM_PT.INPUT_BUFFER, MAX_DIGEST_BUFFER),
        (TPM_PT.HR_TRANSIENT_MIN, engine.max_objects),
        (TPM_PT.HR_PERSISTENT_MIN, engine.max_persistent),
        (TPM_PT.HR_LOADED_MIN, MAX_LOADED_SESSIONS),
        (TPM_PT.ACTIVE_SESSIONS_MAX, MAX_ACTIVE_SESSIONS),
        (TPM_PT.PCR_COUNT, IMPLEMENTATION_PCR),
        (TPM_PT.PCR_SELECT_MIN, PCR_SELECT_MIN),
        (TPM_PT.CONTEXT_GAP_MAX, 0xFFFF),
        (TPM_PT.NV_COUNTERS_MAX, 0),
        (TPM_PT.NV_INDEX_MAX, MAX_NV_INDEX_SIZE),
        (TPM_PT.MEMORY, 0),
        (TPM_PT.CLOCK_UPDATE, 22),
        (TPM_PT.CONTEXT_HASH, TPM_ALG.SHA512),
        (TPM_PT.CONTEXT_SYM, TPM_ALG.AES),
        (TPM_PT.CONTEXT_SYM_SIZE, 256),
        (TPM_PT.ORDERLY_COUNT, 255),
        (TPM_PT.MAX_COMMAND_SIZE, engine.max_command_size),
        (TPM_PT.MAX_RESPONSE_SIZE, engine.max_response_size),
        (TPM_PT.MAX_DIGEST, MAX_DIGEST_SIZE),
        (TPM_PT.MAX_OBJECT_CONTEXT, MAX_CONTEXT_SIZE),
        (TPM_PT.MAX_SESSION_CONTEXT, MAX_CONTEXT_SIZE),
        (TPM_PT.PS_FAMILY_INDICATOR, PC_CLIENT_FAMILY),
        (TPM_PT.PS_LEVEL, 0),
        (TPM_PT.PS_REVISION, PC_CLIENT_REVISION),
        (TPM_PT.PS_DAY_OF_YEAR, 0),
        (TPM_PT.PS_YEAR, 0),
        (TPM_PT.SPLIT_MAX, 128),
        (TPM_PT.TOTAL_COMMANDS, len(engine.table)),
        (TPM_PT.LIBRARY_COMMANDS, sum(not c.vendor for c in engine.table)),
        (TPM_PT.VENDOR_COMMANDS, sum(c.vendor for c in engine.table)),
        (TPM_PT.NV_BUFFER_MAX, MAX_NV_BUFFER_SIZE),
        (TPM_PT.MODES, 0),
        (TPM_PT.MAX_CAP_BUFFER, MAX_CAP_BUFFER),
    ]


def variable_properties(engine) -> list[tuple[int, int]]:
    perm, vol = engine.permanent, engine.volatile
    permanent = TPMA_PERMANENT.tpmGeneratedEPS
    permanent |= TPMA_PERMANENT.ownerAuthSet if hierarchy_auth(engine, TPM_RH.OWNER) else 0
    permanent |= TPMA_PERMANENT.endorsementAuthSet if hierarchy_auth(engine, TPM_RH.ENDORSEMENT) else 0
    permanent |= TPMA_PERMANENT.lockoutAuthSet if hierarchy_auth(engine, TPM_RH.LOCKOUT) else 0
    permanent |= TPMA_PERMANENT.disableClear if perm.disable_clear else 0
    permanent |= TPMA_PERMANENT.inLockout if in_lockout(engine) else 0
    startup = 0
    for flag, on in (
        (TPMA_STARTUP_CLEAR.phEnable, vol.ph_enable),
        (TPMA_STARTUP_CLEAR.shEnable, vol.sh_enable),
        (TPMA_STARTUP_CLEAR.ehEnable, vol.eh_enable),
        (TPMA_STARTUP_CLEAR.phEnableNV, vol.ph_enable_nv),
        (TPMA_STARTUP_CLEAR.orderly, vol.orderly_startup),
    ):
        startup |= flag if on else 0
    loaded = slots_in_use(vol)  # objects and sequences share the transient slots
    return [
        (TPM_PT.PERMANENT, int(permanent)),
        (TPM_PT.STARTUP_CLEAR, int(startup)),
        (TPM_PT.HR_NV_INDEX, len(nv_index.handles(engine))),
        (TPM_PT.HR_LOADED, len(vol.sessions.loaded)),
        (TPM_PT.HR_LOADED_AVAIL, MAX_LOADED_SESSIONS - len(vol.sessions.loaded)),
        (TPM_PT.HR_ACTIVE, vol.sessions.active_count()),
        (TPM_PT.HR_ACTIVE_AVAIL, MAX_ACTIVE_SESSIONS - vol.sessions.active_count()),
        (TPM_PT.HR_TRANSIENT_AVAIL, max(0, engine.max_objects - loaded)),
        (TPM_PT.HR_PERSISTENT, persistent_used(engine)),
        (TPM_PT.HR_PERSISTENT_AVAIL, persistent_room(engine)),
        (TPM_PT.NV_COUNTERS, nv_index.counter_count(engine)),
        (TPM_PT.NV_COUNTERS_AVAIL, nv_index.counters_available(engine)),
        (TPM_PT.ALGORITHM_SET, perm.algorithm_set),
        (TPM_PT.LOADED_CURVES, len(ECC_CURVES)),
        (TPM_PT.LOCKOUT_COUNTER, failed_tries(engine)),
        (TPM_PT.MAX_AUTH_FAIL, perm.da_max_tries),
        (TPM_PT.LOCKOUT_INTERVAL, perm.da_recovery_time),
        (TPM_PT.LOCKOUT_RECOVERY, perm.da_lockout_recovery),
        (TPM_PT.NV_WRITE_RECOVERY, 0),
        (TPM_PT.AUDIT_COUNTER_0, perm.audit_counter >> 32),
        (TPM_PT.AUDIT_COUNTER_1, perm.audit_counter & 0xFFFFFFFF),
    ]
