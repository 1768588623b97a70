"""The engine's state as explicit objects, and their serialisation.

The TPM keeps three kinds of state, and swtpm stores each in its own file:

* ``PermanentState`` — what a real TPM keeps in NV memory: seeds, hierarchy
  authorizations, the PCR allocation, clock, counters, and the data that
  TPM2_Shutdown(STATE) saves for a later Resume/Restart ("orderly data").
  Stored as ``tpm2-00.permall``.
* ``VolatileState`` — what a real TPM keeps in RAM: PCR values, loaded
  objects and sequences, sessions, whether Startup ran.  Serialised only when
  the host asks (suspend, migration): ``tpm2-00.volatilestate``.
* The savestate blob (TPM 1.2 only in swtpm) is never produced by TPM 2.0.

Blobs are versioned and integrity-checked: a bit flip is detected before any
field is trusted, so a damaged file makes INIT fail instead of running a TPM
with garbage state.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import struct
import types
import typing
from typing import Any

from .algorithms import HASHES, hash_alg
from .constants import (
    DA_DEFAULT_LOCKOUT_RECOVERY,
    DA_DEFAULT_MAX_TRIES,
    DA_DEFAULT_RECOVERY_TIME,
    IMPLEMENTATION_PCR,
    TPM_ALG,
    TPM_CC,
)
from .hierarchy import fill_missing_proofs
from .nv_index import NvIndex
from .objects import LoadedObject, ObjectStore
from .sessions import SessionTable
from .symmetric import new_mac

#: Field metadata for the state's integers: the TPM type they are reported as (decoding
#: refuses a value outside it); an integer without it is a UINT64, ``SIGNED`` an INT64.
UINT16 = {"bits": 16}
UINT32 = {"bits": 32}
SIGNED = {"signed": True}

BLOB_MAGIC = b"VTPM"
BLOB_VERSION = 1
_HEADER = struct.Struct(">4sHB32s")


class BlobKind(enum.IntEnum):
    PERMANENT = 1
    VOLATILE = 2


class StateBlobError(ValueError):
    """A state blob is damaged, of another kind, or from an unknown version."""


@dataclasses.dataclass
class SavedState:
    """What TPM2_Shutdown(STATE) preserves for TPM2_Startup(STATE) (Resume)."""

    pcrs: dict[int, list[bytes]]
    pcr_counter: int = dataclasses.field(metadata=UINT32)
    clock_safe_time: int
    drtm_pre_startup: bool
    #: The PCR auth groups' authValues (VolatileState.pcr_auth_values), restored by a Resume.
    pcr_auth_values: dict[int, bytes] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PermanentState:
    """The TPM's non-volatile memory."""

    # Seeds and hierarchy authorizations (used by later object/NV areas).
    eps: bytes = b""
    sps: bytes = b""
    pps: bytes = b""
    owner_auth: bytes = b""
    endorsement_auth: bytes = b""
    lockout_auth: bytes = b""
    owner_policy: tuple[int, bytes] = (TPM_ALG.NULL, b"")
    endorsement_policy: tuple[int, bytes] = (TPM_ALG.NULL, b"")
    lockout_policy: tuple[int, bytes] = (TPM_ALG.NULL, b"")
    #: phProof, shProof, ehProof (hierarchy.py): key tickets and saved contexts, apart from the
    #: seeds.  Empty only in state written before they were stored; loading fills them in.
    ph_proof: bytes = b""
    sh_proof: bytes = b""
    eh_proof: bytes = b""
    #: nullProof: replaced at every TPM Reset (not by TPM2_Clear).
    null_proof: bytes = b""
    #: The NULL hierarchy's seed: replaced at every TPM Reset (not by TPM2_Clear).
    null_seed: bytes = b""
    disable_clear: bool = False
    #: TPM-established: set by _TPM_Hash_Start, cleared from locality 3/4 only.
    tpm_established: bool = False
    #: PCR bank allocation: hash algorithm -> allocated PCR numbers.
    pcr_allocation: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    #: Allocation requested by PCR_Allocate, applied at the next TPM Reset.
    pending_pcr_allocation: dict[int, list[int]] | None = None
    #: Clock in milliseconds as last persisted.
    clock: int = 0
    clock_rate_adjust: int = dataclasses.field(default=0, metadata=SIGNED)
    reset_count: int = dataclasses.field(default=0, metadata=UINT32)
    restart_count: int = dataclasses.field(default=0, metadata=UINT32)
    #: TPM Resets ever: like resetCount, but TPM2_Clear does not set it back, so a saved context
    #: (whose integrity covers it) of a hierarchy Clear leaves alone cannot become valid again.
    #: None only in state written before it existed; loading sets it to resetCount.
    total_reset_count: int | None = dataclasses.field(default=None, metadata=UINT32)
    #: Shutdown type of the last orderly shutdown, or None when the last power loss was disorderly.
    orderly_state: int | None = dataclasses.field(default=None, metadata=UINT16)
    saved: SavedState | None = None
    # --- command audit (audit.py) ---
    #: The audit list (TPM2_SetCommandCodeAuditStatus is implied) and its hash (NULL: the default).
    audit_commands: list[int] = dataclasses.field(default_factory=list)
    audit_hash_alg: int = dataclasses.field(default=TPM_ALG.NULL, metadata=UINT16)
    #: auditCounter: audit sequences started; never reset.
    audit_counter: int = 0
    #: The command audit digest: state-reset data (kept by TPM Restart and Resume); empty when clear.
    audit_digest: bytes = b""
    # --- NV indices (nv_index.py, commands/nv.py) ---
    #: Defined NV indices by handle; an ORDERLY index's data here is its last saved copy.
    nv_indices: dict[int, NvIndex] = dataclasses.field(default_factory=dict)
    #: The largest value any (since undefined) counter index reached: a new counter starts there.
    nv_max_counter: int = 0
    # --- persistent objects (persistent.py, EvictControl in commands/context.py) ---
    #: Persistent objects (TPM2_EvictControl) by persistent handle.
    persistent: dict[int, LoadedObject] = dataclasses.field(default_factory=dict)
    # --- dictionary-attack protection (dictionary_attack.py, commands/dictionary_attack.py) ---
    #: failedTries: failed authorizations of DA-protected entities not yet forgiven.
    da_failed_tries: int = dataclasses.field(default=0, metadata=UINT32)
    da_max_tries: int = dataclasses.field(default=DA_DEFAULT_MAX_TRIES, metadata=UINT32)
    #: Seconds of Time per forgiven failure; 0 turns DA protection off.
    da_recovery_time: int = dataclasses.field(default=DA_DEFAULT_RECOVERY_TIME, metadata=UINT32)
    #: Seconds lockoutAuth stays unusable after a wrong lockoutAuth; 0: until the next Startup.
    da_lockout_recovery: int = dataclasses.field(default=DA_DEFAULT_LOCKOUT_RECOVERY, metadata=UINT32)
    da_lockout_auth_enabled: bool = True
    # --- the commit state (asymmetric.py; EC_Ephemeral, ZGen_2Phase in commands/asymmetric.py) ---
    # The reference TPM's STATE_RESET_DATA commitNonce, commitCounter and commitArray: kept across
    # TPM Restart and Resume, given their defaults at TPM Reset (recognised on first use by
    # commit_reset_count).  Empty / None in state written before they existed: made on first use.
    #: The secret the one-time commit scalars are derived from (with the count).
    commit_nonce: bytes = dataclasses.field(default=b"", repr=False)
    #: Commitments made in this TPM Reset cycle; the next one gets this count.
    commit_counter: int = 0
    #: commitArray as a number: bit (count mod 128) SET while that commitment is unused.
    commit_array: int = dataclasses.field(default=0, metadata={"bits": 128})
    #: total_reset_count when the commit state was made: another value means a TPM Reset since.
    commit_reset_count: int | None = None
    # --- platform controls (pcrs.py, physical_presence.py, commands/pcr.py, commands/platform.py) ---
    #: PCR policy group index -> (hashAlg, authPolicy) set by PCR_SetAuthPolicy; absent: no policy.
    pcr_policies: dict[int, tuple[int, bytes]] = dataclasses.field(default_factory=dict)
    #: Commands that need physical presence when authorized by TPM_RH_PLATFORM (PP_Commands).
    pp_commands: list[int] = dataclasses.field(default_factory=lambda: [TPM_CC.PP_Commands])
    #: TPM_PT_ALGORITHM_SET, as TPM2_SetAlgorithmSet last set it.
    algorithm_set: int = dataclasses.field(default=0, metadata=UINT32)


#: A sequence keeps its input (to survive a volatile-state snapshot) up to this size;
#: a longer sequence is still hashed but is not carried across a snapshot.
SEQUENCE_SNAPSHOT_LIMIT = 1 << 20


@dataclasses.dataclass
class SequenceObject:
    """A hash or event sequence started by HashSequenceStart, or an HMAC sequence (HMAC_Start).

    hashlib objects cannot be serialised, so the live hashers are transient
    and rebuilt from ``data`` after a restore.
    """

    hash_alg: int  # TPM_ALG_NULL for an event sequence
    auth: bytes
    algs: list[int] = dataclasses.field(default_factory=list)
    #: The input so far while it fits SEQUENCE_SNAPSHOT_LIMIT; appended in place.
    data: bytearray = dataclasses.field(default_factory=bytearray)
    length: int = 0
    #: False once the input started with TPM_GENERATED_VALUE (no ticket for such data).
    ticket_ok: bool = True
    #: A MAC sequence (TPM2_HMAC_Start/TPM2_MAC_Start): the key, whose HMAC (hash_alg a hash)
    #: or CMAC (hash_alg TPM_ALG_CMAC) of the input SequenceComplete returns (without a
    #: ticket).  None for hash and event sequences (an HMAC key may be empty).
    hmac_key: bytes | None = dataclasses.field(default=None, repr=False)
    hashers: dict | None = dataclasses.field(default=None, compare=False, metadata={"transient": True})

    @property
    def is_hmac(self) -> bool:
        return self.hmac_key is not None

    def _live_hashers(self) -> dict:
        if self.hashers is None:
            if self.is_hmac:
                self.hashers = {self.hash_alg: new_mac(self.hash_alg, self.hmac_key, self.data)}
            else:
                self.hashers = {alg: hash_alg(alg).new(self.data) for alg in self.algs}
        return self.hashers

    def update(self, chunk: bytes) -> None:
        for hasher in self._live_hashers().values():
            hasher.update(chunk)
        self.length += len(chunk)
        if self.snapshot_ok:
            self.data += chunk
        else:
            self.data = bytearray()

    def digests(self) -> dict[int, bytes]:
        return {alg: h.digest() for alg, h in self._live_hashers().items()}

    @property
    def snapshot_ok(self) -> bool:
        """Whether ``data`` holds the whole input, so a restore can rebuild the hashers."""
        return self.length <= SEQUENCE_SNAPSHOT_LIMIT


@dataclasses.dataclass
class VolatileState:
    """The TPM's RAM: exists from TPM2_Startup until power is lost."""

    started: bool = False
    pcrs: dict[int, list[bytes]] = dataclasses.field(default_factory=dict)
    pcr_counter: int = dataclasses.field(default=0, metadata=UINT32)
    #: PCR_Allocate ran since TPM2_Startup: Shutdown(STATE) is refused until the next one.
    pcr_reconfigured: bool = False
    #: ms of Clock at power-on of this TPM Init; TPMS_TIME_INFO.time counts from here.
    time_base: int = 0
    clock_safe: bool = True
    drtm_pre_startup: bool = False
    startup_locality: int = 0
    #: TPMA_STARTUP_CLEAR.orderly: the last shutdown before this Startup was an orderly one
    #: (TPM2_Shutdown of either type); CLEAR after a power loss without one.
    orderly_startup: bool = False
    platform_auth: bytes = b""
    platform_policy: tuple[int, bytes] = (TPM_ALG.NULL, b"")
    ph_enable: bool = True
    sh_enable: bool = True
    eh_enable: bool = True
    ph_enable_nv: bool = True
    self_tested: list[int] = dataclasses.field(default_factory=list)
    sequences: dict[int, SequenceObject] = dataclasses.field(default_factory=dict)
    #: Loaded objects; they share the transient slots with ``sequences``.
    objects: ObjectStore = dataclasses.field(default_factory=ObjectStore)
    #: HMAC, policy and trial sessions, loaded and context-saved.
    sessions: SessionTable = dataclasses.field(default_factory=SessionTable)
    # --- dictionary-attack protection: timers in ms of Time, restarting at _TPM_Init ---
    #: Time from which the next forgiven failure is counted (self-healing).
    da_self_heal_ms: int = 0
    #: Time of the last failed lockoutAuth.
    da_lockout_ms: int = 0
    # --- NV indices: the RAM copies of ORDERLY indices, saved to NV at orderly Shutdown ---
    nv_orderly: dict[int, NvIndex] = dataclasses.field(default_factory=dict)
    #: The exclusive audit session's handle (audit.py); 0 when there is none.
    exclusive_audit: int = 0
    #: PCR auth group index -> authValue set by PCR_SetAuthValue (pcrs.PCR_AUTH_GROUPS); empty at
    #: every Startup but a Resume.
    pcr_auth_values: dict[int, bytes] = dataclasses.field(default_factory=dict)


# --- serialisation -----------------------------------------------------------


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {
            f.name: _encode(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.metadata.get("transient")
        }
    if isinstance(value, (bytes, bytearray)):
        return {"$b": bytes(value).hex()}
    if isinstance(value, dict):
        return {"$d": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _expect(raw: Any, kind: type | tuple[type, ...], what: str) -> Any:
    """``raw`` when it is the JSON type ``_encode`` writes for ``what`` (a bool is no int)."""
    if not isinstance(raw, kind) or (isinstance(raw, bool) and kind is int):
        raise StateBlobError(f"{what} expected, found {type(raw).__name__} {str(raw)[:40]!r}")
    return raw


def _decode(hint: Any, raw: Any, meta: Any = types.MappingProxyType({}), what: str = "value") -> Any:
    """The value of type ``hint`` that ``_encode`` wrote as ``raw``; anything else is a
    StateBlobError (its digest is no secret: a blob may come from anyone allowed to
    SET_STATEBLOB, so a JSON value of another type is refused, never coerced)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if raw is None:
        if hint is Any or (origin in (typing.Union, types.UnionType) and type(None) in args):
            return None
        raise StateBlobError(f"{what} is null, which only an optional field may be")
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _decode(inner[0], raw, meta, what)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        _expect(raw, dict, f"{hint.__name__} object")
        fields = {f.name: f for f in dataclasses.fields(hint)}
        return hint(
            **{
                k: _decode(hints[k], v, fields[k].metadata, f"{hint.__name__}.{k}")
                for k, v in raw.items()
                if k in fields
            }
        )
    if hint is bytes or hint is bytearray:
        text = _expect(_expect(raw, dict, "bytes")["$b"], str, "hex string")
        return hint.fromhex(text)
    if origin is dict:
        key_hint, value_hint = args
        pairs = _expect(_expect(raw, dict, "mapping")["$d"], list, "mapping entries")
        return {_decode(key_hint, k): _decode(value_hint, v) for k, v in (_expect(p, list, "pair") for p in pairs)}
    if origin is list:
        return [_decode(args[0], v) for v in _expect(raw, list, "list")]
    if origin is tuple:
        return tuple(_decode(a, v) for a, v in zip(args, _expect(raw, list, "tuple"), strict=True))
    if hint is bool:
        return _expect(raw, bool, "bool")
    if hint is int:
        value = _expect(raw, int, "int")
        bits = meta.get("bits", 64)
        low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if meta.get("signed") else (0, 1 << bits)
        if not low <= value < high:
            raise StateBlobError(f"{what} = {value} is out of range for its {bits}-bit type")
        return value
    return raw


def _check_banks(banks: dict[int, list[bytes]], where: str) -> None:
    """Every bank holds IMPLEMENTATION_PCR values of its hash's size (empty: not allocated)."""
    for alg, bank in banks.items():
        if alg not in HASHES:
            raise StateBlobError(f"{where}: PCR bank of unknown hash 0x{alg:x}")
        size = HASHES[alg].digest_size
        if len(bank) != IMPLEMENTATION_PCR or any(value and len(value) != size for value in bank):
            raise StateBlobError(f"{where}: PCR bank 0x{alg:x} is not {IMPLEMENTATION_PCR} values of {size} bytes")


def _check_allocation(allocation: dict[int, list[int]] | None, where: str) -> None:
    """An allocation names implemented hashes and PCR numbers only."""
    for alg, pcrs in (allocation or {}).items():
        if alg not in HASHES:
            raise StateBlobError(f"{where}: PCR bank of unknown hash 0x{alg:x}")
        if any(not 0 <= pcr < IMPLEMENTATION_PCR for pcr in pcrs):
            raise StateBlobError(f"{where}: bank 0x{alg:x} allocates PCRs outside 0..{IMPLEMENTATION_PCR - 1}")


def _check(state: Any) -> None:
    """The invariants the engine relies on that the types alone do not give."""
    if isinstance(state, VolatileState):
        _check_banks(state.pcrs, "volatile state")
        return
    _check_allocation(state.pcr_allocation, "PCR allocation")
    _check_allocation(state.pending_pcr_allocation, "pending PCR allocation")
    if state.saved is not None:
        _check_banks(state.saved.pcrs, "saved state")


def serialise(kind: BlobKind, state: Any) -> bytes:
    payload = json.dumps(_encode(state), separators=(",", ":"), sort_keys=True).encode()
    return _HEADER.pack(BLOB_MAGIC, BLOB_VERSION, kind, hashlib.sha256(payload).digest()) + payload


def deserialise(kind: BlobKind, blob: bytes) -> Any:
    if len(blob) < _HEADER.size:
        raise StateBlobError(f"state blob of {len(blob)} bytes is shorter than its header")
    magic, version, blob_kind, digest = _HEADER.unpack_from(blob)
    payload = blob[_HEADER.size :]
    if magic != BLOB_MAGIC:
        raise StateBlobError(f"not a vtpm-cuse state blob (magic {magic!r})")
    if version != BLOB_VERSION:
        raise StateBlobError(f"state blob version {version} is not supported (expected {BLOB_VERSION})")
    if blob_kind != kind:
        raise StateBlobError(f"state blob holds kind {blob_kind}, expected {int(kind)}")
    if hashlib.sha256(payload).digest() != digest:
        raise StateBlobError("state blob integrity check failed")
    cls = PermanentState if kind == BlobKind.PERMANENT else VolatileState
    try:
        state = _decode(cls, json.loads(payload))
        _check(state)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise StateBlobError(f"state blob contents are malformed: {exc}") from exc
    if kind == BlobKind.PERMANENT:
        fill_missing_proofs(state)
        if state.total_reset_count is None:
            state.total_reset_count = state.reset_count
    return state
