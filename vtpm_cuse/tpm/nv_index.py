"""NV indices: their state, Name, storage budget and life-cycle rules.

An index is defined in NV (``PermanentState.nv_indices``).  An ORDERLY index
is RAM-backed: its live copy (data and attributes) is kept in
``VolatileState.nv_orderly`` once it changes, and is written to NV only at an
orderly TPM2_Shutdown, so a disorderly power loss falls back to the copy last
saved.  An ORDERLY counter is written through whenever its low bits
(MAX_ORDERLY_COUNT) roll over, and a disorderly start sets those bits, so the
count never goes below a value already reported (Part 1, "NV Counters").

An index authorizing a command (as its own authHandle, or for any other
command that takes an NV index with an authorization role) follows
:class:`NvAuthRules`, which the sessions consult for every such command (Part
1, "NV Index authorization"): an NV write operation (``Command.nv_write``)
needs AUTHWRITE for the authValue and POLICYWRITE for a policy, every other
command AUTHREAD / POLICYREAD.  The ADMIN role (NV_ChangeAuth,
NV_UndefineSpaceSpecial) is its authPolicy's alone, whatever the POLICY* bits
say.  A PIN index's authValue works for reading while it is written and
pinCount < pinLimit, AUTHREAD or not; a PIN Pass index counts each right
authValue, a PIN Fail index each wrong one, and a right one sets its pinCount
back to 0 (as libtpms does).  A policy session that proves the authValue
(PolicyAuthValue, PolicyPassword) is counted the same way but, as in libtpms,
is not held to pinCount < pinLimit: the authPolicy allowed it.

The commands are in :mod:`.commands.nv`; this module is what other areas
call too (TPM2_Clear, Startup, Shutdown, GetCapability).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING

from .algorithms import hash_alg
from .command import AuthRole, Command
from .constants import HR_SHIFT, TPM_HT, TPM_NT, TPM_RH, TPMA_NV, TPMA_NV_TPM_NT_MASK, TPMA_NV_TPM_NT_SHIFT
from .entities import AuthRules, Entity
from .errors import TPM_RC, TpmError
from .hierarchy import hierarchy_enabled
from .types.nv import TPMS_NV_PUBLIC

if TYPE_CHECKING:
    from .engine import Engine

#: The NV budget for indices, as libtpms' NV memory size (Engine option ``nv_size``).
NV_SIZE_DEFAULT = 128 * 1024
#: What an index costs besides its data: handle, public area and authValue, as stored.
NV_INDEX_OVERHEAD = 4 + 4 + 2 + 4 + 2 + 64 + 2 + 2 + 64
#: An ORDERLY counter is written to NV when its low bits roll over (the reference value).
MAX_ORDERLY_COUNT = 0xFF
#: The data of a counter, bit field or PIN index is one UINT64.
NV_UINT64_SIZE = 8

#: PIN indices: their authValue is usable while pinCount < pinLimit.
PIN_TYPES = (TPM_NT.PIN_FAIL, TPM_NT.PIN_PASS)
#: pinCount and pinLimit are the two UINT32 halves of a PIN index's data.
PIN_FIELD_BITS = 32
PIN_COUNT_MAX = (1 << PIN_FIELD_BITS) - 1


@dataclasses.dataclass
class NvIndex:
    """One NV index: its public area, authValue and data.

    ``attributes`` carries the state bits too (TPMA_NV_WRITTEN, WRITELOCKED,
    READLOCKED), as the public area does, because they are part of the Name.
    """

    index: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    data_size: int
    auth_value: bytes = b""
    data: bytes = b""

    @property
    def nt(self) -> int:
        return (self.attributes & TPMA_NV_TPM_NT_MASK) >> TPMA_NV_TPM_NT_SHIFT

    def has(self, flag: TPMA_NV) -> bool:
        return bool(self.attributes & flag)

    def set(self, flag: TPMA_NV, on: bool = True) -> None:
        self.attributes = (self.attributes | flag) if on else (self.attributes & ~flag)

    def public(self):
        """The TPMS_NV_PUBLIC of this index, as NV_ReadPublic returns it."""
        return TPMS_NV_PUBLIC(
            nvIndex=self.index,
            nameAlg=self.name_alg,
            attributes=self.attributes,
            authPolicy=self.auth_policy,
            dataSize=self.data_size,
        )

    @property
    def name(self) -> bytes:
        """nameAlg || H_nameAlg(TPMS_NV_PUBLIC): changes when WRITTEN or a lock changes."""
        digest = hash_alg(self.name_alg).new(TPMS_NV_PUBLIC.pack(self.public())).digest()
        return self.name_alg.to_bytes(2, "big") + digest

    @property
    def counter(self) -> int:
        """The UINT64 value of a counter, bits or PIN index (zero before any write)."""
        return int.from_bytes(self.data, "big") if len(self.data) == NV_UINT64_SIZE else 0

    @property
    def pin(self) -> tuple[int, int]:
        """(pinCount, pinLimit) of a PIN index (TPMS_NV_PIN_COUNTER_PARAMETERS)."""
        count, limit = divmod(self.counter, 1 << PIN_FIELD_BITS)
        return count, limit

    def storage_size(self) -> int:
        return NV_INDEX_OVERHEAD + self.data_size


# --- lookup and update -------------------------------------------------------------


def is_pin_fail_index(engine: Engine, handle: int) -> bool:
    nv = get(engine, handle) if is_nv_handle(handle) else None
    return nv is not None and nv.nt == TPM_NT.PIN_FAIL


def get(engine: Engine, handle: int) -> NvIndex | None:
    """The live copy of the index at ``handle`` (the RAM copy of an ORDERLY index)."""
    live = engine.volatile.nv_orderly.get(handle)
    return live if live is not None else engine.permanent.nv_indices.get(handle)


def defined(engine: Engine) -> list[NvIndex]:
    """Every defined index, live copies, in handle order."""
    return [get(engine, h) for h in sorted(engine.permanent.nv_indices)]


def modify(engine: Engine, handle: int) -> NvIndex:
    """The copy to change: a RAM copy for an ORDERLY index, else the NV copy (marked dirty)."""
    stored = engine.permanent.nv_indices[handle]
    if not stored.has(TPMA_NV.ORDERLY):
        engine.mark_permanent_dirty()
        return stored
    ram = engine.volatile.nv_orderly
    if handle not in ram:
        ram[handle] = copy.deepcopy(stored)
    return ram[handle]


def write_through(engine: Engine, nv: NvIndex) -> None:
    """Save an ORDERLY index's live copy to NV now (a counter rollover)."""
    engine.permanent.nv_indices[nv.index] = copy.deepcopy(nv)
    engine.mark_permanent_dirty()


def space_used(engine: Engine) -> int:
    return sum(nv.storage_size() for nv in engine.permanent.nv_indices.values())


def space_free(engine: Engine) -> int:
    return max(0, engine.nv_size - space_used(engine))


def handles(engine: Engine) -> list[int]:
    """Every defined index handle, ascending (GetCapability(TPM_CAP_HANDLES))."""
    return sorted(engine.permanent.nv_indices)


def counter_count(engine: Engine) -> int:
    """TPM_PT_NV_COUNTERS: the indices of type TPM_NT_COUNTER."""
    return sum(1 for nv in engine.permanent.nv_indices.values() if nv.nt == TPM_NT.COUNTER)


def counters_available(engine: Engine) -> int:
    """TPM_PT_NV_COUNTERS_AVAIL: how many more counters the free NV would hold."""
    return space_free(engine) // (NV_INDEX_OVERHEAD + NV_UINT64_SIZE)


def define(engine: Engine, nv: NvIndex) -> None:
    """Add a new index; TPM_RC_NV_SPACE when it does not fit the NV budget."""
    if nv.storage_size() > space_free(engine):
        raise TpmError(TPM_RC.NV_SPACE, f"index 0x{nv.index:08x} of {nv.data_size} bytes does not fit")
    engine.permanent.nv_indices[nv.index] = nv
    engine.mark_permanent_dirty()


def undefine(engine: Engine, handle: int) -> None:
    """Remove an index; a counter's value raises the TPM-wide counter high-water mark."""
    nv = get(engine, handle)
    if nv is not None and nv.nt == TPM_NT.COUNTER:
        engine.permanent.nv_max_counter = max(engine.permanent.nv_max_counter, nv.counter)
    engine.permanent.nv_indices.pop(handle, None)
    engine.volatile.nv_orderly.pop(handle, None)
    engine.mark_permanent_dirty()


def initial_counter(engine: Engine) -> int:
    """A new counter's starting point: the largest value a since-deleted counter reached,
    so a counter that is undefined and defined again never repeats a value (Part 1)."""
    return engine.permanent.nv_max_counter


def clear_owner_indices(engine: Engine) -> None:
    """TPM2_Clear: remove every index not created with platform authorization."""
    for handle in sorted(engine.permanent.nv_indices):
        if not engine.permanent.nv_indices[handle].has(TPMA_NV.PLATFORMCREATE):
            undefine(engine, handle)
    engine.mark_permanent_dirty()


# --- Startup and Shutdown -------------------------------------------------------------


def _startup_attributes(nv: NvIndex, tpm_reset: bool) -> None:
    """The locks and WRITTEN after TPM Reset or TPM Restart (Part 2, TPMA_NV)."""
    nv.set(TPMA_NV.READLOCKED, False)
    if nv.nt != TPM_NT.COUNTER and (nv.has(TPMA_NV.CLEAR_STCLEAR) or (nv.has(TPMA_NV.ORDERLY) and tpm_reset)):
        nv.set(TPMA_NV.WRITTEN, False)
    # A WRITEDEFINE lock of a written index is permanent; every other write lock ends here.
    if not (nv.has(TPMA_NV.WRITTEN) and nv.has(TPMA_NV.WRITEDEFINE)):
        nv.set(TPMA_NV.WRITELOCKED, False)


def startup(engine: Engine, *, resume: bool, tpm_reset: bool, disorderly: bool) -> None:
    """TPM2_Startup's effect on indices.  Resume keeps everything as saved."""
    if resume:
        return
    for handle in sorted(engine.permanent.nv_indices):
        stored = engine.permanent.nv_indices[handle]
        before = stored.attributes
        nv = modify(engine, handle) if stored.has(TPMA_NV.ORDERLY) else stored
        _startup_attributes(nv, tpm_reset)
        if nv is stored and nv.attributes != before:
            engine.mark_permanent_dirty()
        if nv.has(TPMA_NV.ORDERLY) and nv.nt == TPM_NT.COUNTER and disorderly and nv.has(TPMA_NV.WRITTEN):
            nv.data = (nv.counter | MAX_ORDERLY_COUNT).to_bytes(NV_UINT64_SIZE, "big")


def shutdown(engine: Engine) -> None:
    """An orderly TPM2_Shutdown: the RAM copies of ORDERLY indices are saved to NV."""
    for nv in engine.volatile.nv_orderly.values():
        if nv.index in engine.permanent.nv_indices:
            write_through(engine, nv)


# --- the handle type ---------------------------------------------------------------------


def is_platform_index(nv: NvIndex) -> bool:
    return nv.has(TPMA_NV.PLATFORMCREATE)


def check_accessible(engine: Engine, nv: NvIndex) -> None:
    """An index is unusable while its hierarchy's NV is disabled (TPM_RC_HANDLE): a platform
    index while phEnableNV is CLEAR, an owner index while shEnable is CLEAR."""
    if is_platform_index(nv) and not hierarchy_enabled(engine, TPM_RH.PLATFORM_NV):
        raise TpmError(TPM_RC.HANDLE, f"platform index 0x{nv.index:08x} while phEnableNV is CLEAR")
    if not is_platform_index(nv) and not hierarchy_enabled(engine, TPM_RH.OWNER):
        raise TpmError(TPM_RC.HANDLE, f"owner index 0x{nv.index:08x} while shEnable is CLEAR")


class NvAuthRules(AuthRules):
    """Who may use an index's authValue and authPolicy, per command (see the module docstring)."""

    def __init__(self, nv: NvIndex) -> None:
        #: The index as resolved for this command.
        self.nv = nv

    def value_usable(self, command: Command, role: AuthRole) -> bool:
        nv = self.nv
        if role is not AuthRole.USER:
            return True  # ADMIN needs a policy session anyway (TPM_RC_AUTH_TYPE first)
        if command.nv_write:
            return nv.has(TPMA_NV.AUTHWRITE)
        if nv.nt in PIN_TYPES:
            count, limit = nv.pin
            return nv.has(TPMA_NV.WRITTEN) and count < limit
        return nv.has(TPMA_NV.AUTHREAD)

    def policy_usable(self, command: Command, role: AuthRole) -> bool:
        if role is not AuthRole.USER:
            return True
        return self.nv.has(TPMA_NV.POLICYWRITE if command.nv_write else TPMA_NV.POLICYREAD)

    def on_value_checked(self, engine: Engine, ok: bool) -> None:
        """PIN Pass: a right authValue counts; PIN Fail: a wrong one counts, a right one resets."""
        nv = get(engine, self.nv.index)
        if nv is None or nv.nt not in PIN_TYPES or not nv.has(TPMA_NV.WRITTEN):
            return
        count, limit = nv.pin
        if nv.nt == TPM_NT.PIN_PASS:
            new_count = min(count + 1, PIN_COUNT_MAX) if ok else count
        else:
            new_count = 0 if ok else min(count + 1, PIN_COUNT_MAX)
        if new_count != count:
            set_pin_count(engine, nv.index, new_count)


def set_pin_count(engine: Engine, handle: int, count: int) -> None:
    """Store a PIN index's pinCount now.  It is written to NV even for an ORDERLY index (whose
    data otherwise lives in RAM until an orderly Shutdown), so a power loss never forgets a
    counted failure or use."""
    live = modify(engine, handle)
    _, limit = live.pin
    live.data = ((count << PIN_FIELD_BITS) | limit).to_bytes(NV_UINT64_SIZE, "big")
    if live.has(TPMA_NV.ORDERLY):
        write_through(engine, live)


def nv_entity(engine: Engine, handle: int) -> Entity:
    """An NV index as an entity: its Name, authValue, authPolicy, noDA and authorization rules."""
    nv = get(engine, handle)
    if nv is None:
        raise TpmError(TPM_RC.HANDLE, f"NV index 0x{handle:08x} is not defined")
    check_accessible(engine, nv)
    return Entity(
        handle,
        nv.name,
        nv.auth_value,
        nv.name_alg,
        nv.auth_policy,
        da_exempt=nv.has(TPMA_NV.NO_DA),
        auth_rules=NvAuthRules(nv),
    )


def is_nv_handle(handle: int) -> bool:
    return handle >> HR_SHIFT == TPM_HT.NV_INDEX


def hierarchy_of(nv: NvIndex) -> int:
    """The hierarchy an index belongs to: platform when PLATFORMCREATE, else owner."""
    return TPM_RH.PLATFORM if is_platform_index(nv) else TPM_RH.OWNER
