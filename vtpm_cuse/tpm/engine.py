"""The TPM 2.0 engine: state in, command bytes in, response bytes out.

An :class:`Engine` owns one TPM's state and nothing global, so two engines in
one process are independent.  Transports call :meth:`Engine.execute` (from a
worker thread); the control channel uses the platform-signal methods
(:meth:`hash_start` ..., :meth:`reset_established`, :meth:`request_cancel`)
and the state export/import methods.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import weakref
from collections.abc import Callable

from .algorithms import HASHES, hash_alg
from .command import CommandTable
from .commands import COMMANDS
from .constants import (
    DEFAULT_OBJECT_SLOTS,
    IMPLEMENTATION_PCR,
    MAX_COMMAND_SIZE,
    MAX_LOADED_OBJECTS,
    MAX_RESPONSE_SIZE,
    TPM_RH,
)
from .derive_ahead import AheadDeriver
from .dispatcher import Dispatcher
from .errors import TPM_RC
from .keys import PrimaryCache
from .nv_index import NV_SIZE_DEFAULT
from .pcrs import DRTM_PCR, HCRTM_PCR, NO_INCREMENT, PcrBanks, resets_to_ones
from .persistent import DEFAULT_MAX_PERSISTENT
from .rng import Rng
from .state import BlobKind, PermanentState, VolatileState, deserialise, serialise

SEED_SIZE = 64
#: Clock rate adjustment in parts of CLOCK_NOMINAL (the reference TPM's units).
CLOCK_NOMINAL = 30000
CLOCK_ADJUST_STEPS = {1: 1, 2: 30, 3: 300}
CLOCK_ADJUST_LIMIT = 4500  # 15 %


class Engine:
    def __init__(
        self,
        permanent: PermanentState | None = None,
        volatile: VolatileState | None = None,
        *,
        random: Callable[[int], bytes] = os.urandom,
        monotonic_ms: Callable[[], int] | None = None,
        table: CommandTable = COMMANDS,
        nv_size: int = NV_SIZE_DEFAULT,
        max_objects: int = DEFAULT_OBJECT_SLOTS,
        max_persistent: int = DEFAULT_MAX_PERSISTENT,
        physical_presence: bool = False,
        derive_ahead: bool = False,
    ) -> None:
        """``max_objects``: transient object slots (1..MAX_LOADED_OBJECTS); ``max_persistent``:
        how many persistent objects TPM2_EvictControl may create; ``physical_presence``: the
        platform asserts physical presence (physical_presence.py), changeable at any time;
        ``derive_ahead``: derive the usual EKs and SRKs in a child process after TPM2_Startup
        and each seed change (derive_ahead.py; the daemon turns it on, tests mostly do not)."""
        if not 1 <= max_objects <= MAX_LOADED_OBJECTS:
            raise ValueError(f"max_objects {max_objects} is outside 1..{MAX_LOADED_OBJECTS}")
        if max_persistent < 0:
            raise ValueError(f"max_persistent {max_persistent} is negative")
        self.max_objects = max_objects
        self.max_persistent = max_persistent
        #: The platform's physical-presence signal (a virtual TPM's stand-in for the button).
        self.physical_presence = physical_presence
        self.random = Rng(random)
        #: Bytes of NV memory for NV indices (TPM_RC_NV_SPACE beyond it).
        self.nv_size = nv_size
        self._monotonic_ms = monotonic_ms or (lambda: time.monotonic_ns() // 1_000_000)
        self.permanent = permanent if permanent is not None else self.manufacture(random)
        self.failure_mode = False
        self.failure_reason = ""
        self.max_command_size = MAX_COMMAND_SIZE
        self.max_response_size = MAX_RESPONSE_SIZE
        self.cancel_requested = threading.Event()
        #: Derived primary objects, in RAM only (keys.PrimaryCache): a repeated CreatePrimary is instant.
        self.primary_cache = PrimaryCache()
        #: Derives the usual EKs and SRKs ahead into primary_cache (derive_ahead.py); None when off.
        self.ahead = AheadDeriver(self.primary_cache) if derive_ahead else None
        if self.ahead is not None:
            weakref.finalize(self, self.ahead.close)
        self._permanent_dirty = permanent is None
        self._drtm_hashers: dict[int, object] | None = None
        self._dispatcher = Dispatcher(self, table)
        self.table = table
        self._clock_anchor_mono = self._monotonic_ms()
        self._clock_anchor_value = self.permanent.clock
        self.volatile = volatile if volatile is not None else self._power_on_state()
        self.volatile.objects.slots = max_objects

    # --- life cycle ----------------------------------------------------------------
    @staticmethod
    def manufacture(random: Callable[[int], bytes] = os.urandom) -> PermanentState:
        """The NV contents of a brand-new TPM: fresh seeds and proofs, every bank fully allocated."""
        from .hierarchy import new_proofs

        return PermanentState(
            eps=random(SEED_SIZE),
            sps=random(SEED_SIZE),
            pps=random(SEED_SIZE),
            null_seed=random(SEED_SIZE),
            **new_proofs(random),
            total_reset_count=0,
            pcr_allocation={alg: list(range(IMPLEMENTATION_PCR)) for alg in HASHES},
        )

    def _power_on_state(self) -> VolatileState:
        """_TPM_Init: RAM is empty and TPM2_Startup has not run."""
        return VolatileState(time_base=self._monotonic_ms())

    # --- command execution --------------------------------------------------------------
    def execute(self, command: bytes, locality: int = 0, *, fresh_cancel: bool = True) -> bytes:
        """Execute one TPM command at ``locality``; always returns a response.

        A cancel request applies to the command that is running, so the flag is
        cleared when a command starts.  A caller that clears it itself, before it
        lets cancels through (see Vtpm), passes ``fresh_cancel=False`` so that a
        cancel arriving in between is not lost.
        """
        if fresh_cancel:
            self.cancel_requested.clear()
        response, _ = self._dispatcher.execute(command, locality)
        if self.ahead is not None and self.volatile.started:
            self.ahead.follow({TPM_RH.ENDORSEMENT: self.permanent.eps, TPM_RH.OWNER: self.permanent.sps})
        return response

    def wait_derived_ahead(self, timeout: float | None = None) -> bool:
        """Whether the keys derived ahead (if enabled) are ready within ``timeout``: tests and benchmarks."""
        return self.ahead is None or self.ahead.wait(timeout)

    def close(self) -> None:
        """Stop background work (the derive-ahead child); the engine stays usable without it."""
        if self.ahead is not None:
            self.ahead.close()

    def stir_random(self, data: bytes) -> None:
        self.random.stir(data)

    def request_cancel(self) -> None:
        """The platform's cancel signal: a long-running command stops with TPM_RC_CANCELED."""
        self.cancel_requested.set()

    # --- persistence ----------------------------------------------------------------------
    def mark_permanent_dirty(self) -> None:
        self._permanent_dirty = True

    def restore_permanent(self, permanent: PermanentState, clock: int) -> None:
        """Put back the permanent state last written, after writing a newer one failed.

        The command that changed it is answered TPM_RC_NV_UNAVAILABLE ("not
        executed, retry"), so its NV effect must not survive in RAM either: a later
        successful write would otherwise store a change the caller was told failed.
        ``clock`` is Clock as it was before that command (undoing a failed ClockSet);
        it runs on from there.

        Dictionary-attack failures are the exception: they stay counted in RAM (and
        reach the disk with the next NV write that succeeds), or a full disk would let
        wrong passwords be tried without ever reaching lockout.  They do not make the
        state dirty: that would fail every later command while the disk is full.
        """
        current = self.permanent
        permanent.da_failed_tries = max(current.da_failed_tries, permanent.da_failed_tries)
        permanent.da_lockout_auth_enabled = current.da_lockout_auth_enabled and permanent.da_lockout_auth_enabled
        self.permanent = permanent
        self._clock_anchor_mono = self._monotonic_ms()
        self._clock_anchor_value = max(clock, permanent.clock)
        self._permanent_dirty = False

    def take_permanent_dirty(self) -> bool:
        """Whether permanent state changed since the last call (the caller persists it)."""
        dirty, self._permanent_dirty = self._permanent_dirty, False
        return dirty

    def permanent_blob(self) -> bytes:
        self.permanent.clock = self.clock()
        return serialise(BlobKind.PERMANENT, self.permanent)

    def volatile_blob(self) -> bytes:
        """The RAM snapshot.  A sequence whose input outgrew what it keeps is left out
        (it could not be resumed correctly), so after a restore its handle is not loaded."""
        vol = self.volatile
        resumable = {h: seq for h, seq in vol.sequences.items() if seq.snapshot_ok}
        if len(resumable) != len(vol.sequences):
            vol = dataclasses.replace(vol, sequences=resumable)
        return serialise(BlobKind.VOLATILE, vol)

    @classmethod
    def from_blobs(cls, permanent: bytes | None, volatile: bytes | None = None, **kwargs) -> Engine:
        """Restore an engine; raises state.StateBlobError for a damaged blob."""
        perm = deserialise(BlobKind.PERMANENT, permanent) if permanent else None
        vol = deserialise(BlobKind.VOLATILE, volatile) if volatile else None
        return cls(perm, vol, **kwargs)

    # --- clock and time -------------------------------------------------------------------
    def clock(self) -> int:
        """TPM Clock in ms: never goes backwards, advances at the adjusted rate."""
        elapsed = self._monotonic_ms() - self._clock_anchor_mono
        rate = CLOCK_NOMINAL + self.permanent.clock_rate_adjust
        return self._clock_anchor_value + elapsed * rate // CLOCK_NOMINAL

    def set_clock(self, value: int) -> None:
        self._clock_anchor_mono = self._monotonic_ms()
        self._clock_anchor_value = value
        self.permanent.clock = value
        self.mark_permanent_dirty()

    def adjust_clock_rate(self, steps: int) -> None:
        """ClockRateAdjust: positive steps speed the clock up, negative slow it down."""
        self.set_clock(self.clock())
        delta = CLOCK_ADJUST_STEPS.get(abs(steps), 0) * (1 if steps > 0 else -1)
        adjust = self.permanent.clock_rate_adjust + delta
        self.permanent.clock_rate_adjust = max(-CLOCK_ADJUST_LIMIT, min(CLOCK_ADJUST_LIMIT, adjust))

    def time(self) -> int:
        """ms since _TPM_Init (TPMS_TIME_INFO.time)."""
        return self._monotonic_ms() - self.volatile.time_base

    # --- PCRs -----------------------------------------------------------------------------
    @property
    def pcrs(self) -> PcrBanks:
        return PcrBanks(self.volatile.pcrs, self.pcr_changed)

    def pcr_changed(self, pcr: int) -> None:
        """Count a PCR change in the update counter (PCR_Read's pcrUpdateCounter)."""
        if pcr not in NO_INCREMENT:
            self.volatile.pcr_counter += 1

    def init_pcrs(self, value_of: Callable[[int, int, int], bytes]) -> None:
        """(Re)create every allocated bank; ``value_of(alg, pcr, digest_size)`` gives each PCR."""
        self.volatile.pcrs = {
            alg: [
                value_of(alg, pcr, hash_alg(alg).digest_size) if pcr in pcrs else b""
                for pcr in range(IMPLEMENTATION_PCR)
            ]
            for alg, pcrs in sorted(self.permanent.pcr_allocation.items())
        }

    # --- H-CRTM / DRTM (_TPM_Hash_Start/Data/End) ---------------------------------------------
    @property
    def tpm_established(self) -> bool:
        return self.permanent.tpm_established

    def reset_established(self, locality: int) -> int:
        """Clear the TPM-established flag; only localities 3 and 4 may (PC Client PTP)."""
        if locality not in (3, 4):
            return TPM_RC.LOCALITY
        if self.permanent.tpm_established:
            self.permanent.tpm_established = False
            self.mark_permanent_dirty()
        return TPM_RC.SUCCESS

    def hash_start(self) -> None:
        """_TPM_Hash_Start: begin a DRTM (or, before Startup, an H-CRTM) measurement."""
        self._drtm_hashers = {alg: hash_alg(alg).new() for alg in self.permanent.pcr_allocation}
        if not self.permanent.tpm_established:
            self.permanent.tpm_established = True
            self.mark_permanent_dirty()

    def hash_data(self, data: bytes) -> bool:
        """_TPM_Hash_Data; False when no sequence is in progress (the data is dropped)."""
        if self._drtm_hashers is None:
            return False
        for hasher in self._drtm_hashers.values():
            hasher.update(data)
        return True

    def hash_end(self) -> bool:
        """_TPM_Hash_End: extend the measurement into PCR 17 (or PCR 0 before Startup)."""
        if self._drtm_hashers is None:
            return False
        hashers, self._drtm_hashers = self._drtm_hashers, None
        started = self.volatile.started
        if started:
            # A DRTM event resets the dynamic PCRs before measuring into PCR 17.  The
            # resets are not counted in pcrUpdateCounter; each bank's extend of PCR 17 is.
            if not self.volatile.pcrs:
                self.init_pcrs(lambda alg, pcr, size: bytes(size))
            for pcr in range(IMPLEMENTATION_PCR):
                if resets_to_ones(pcr):
                    self.pcrs.set_all_banks(pcr, bytes, counted=False)
            target = DRTM_PCR
        else:
            self.init_pcrs(lambda alg, pcr, size: bytes(size))
            self.pcrs.set_all_banks(HCRTM_PCR, lambda size: bytes(size - 1) + b"\x04", counted=False)
            self.volatile.drtm_pre_startup = True
            target = HCRTM_PCR
        for alg, hasher in hashers.items():
            self.pcrs.extend(target, alg, hasher.digest())
        return True
