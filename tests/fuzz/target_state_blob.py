"""Fuzz target: loading permanent and volatile state, plain and encrypted.

Input format: one option byte, then the bytes to load.  Option bits 0-1 pick the form
the bytes are in (:class:`Form`), bit 2 the kind (permanent / volatile: a volatile
blob is loaded next to the prepared permanent state it came from), bit 3 whether
the store has a state key and a migration key configured.  With bit 4 set the bytes
are instead edits (records, :mod:`tests.fuzz.records`) of the prepared TPM's own state
(bit 5: the one after Shutdown(STATE)), see :func:`apply_edit`: byte mutations of JSON
rarely stay JSON, edits of the decoded state reach the engine's use of every field.

* ``PAYLOAD``: the state's JSON, which the target wraps in a correct engine blob
  header (magic, version, kind, SHA-256).  The digest is no secret, so this is what
  anyone who may SET_STATEBLOB can hand the TPM: the decoder and the engine must
  stand it.
* ``ENGINE_BLOB``: an engine blob (``vtpm_cuse.tpm.state`` header + JSON) as is.
* ``STATE_FILE``: a ``tpm2-00.*`` file as :class:`DirectoryStore.load` reads it.
* ``TRANSFER_BLOB``: a SET_STATEBLOB blob, through :meth:`DirectoryStore.check_blob`.

The state bytes then go where INIT sends them (``Engine.from_blobs``).

Oracles: loading either refuses with the layers' own errors (``StateError`` from the
store, ``StateBlobError`` from the engine's decoder) or yields an engine that (1)
re-saves to a blob that loads and re-saves to the same state (Clock aside, which runs),
and (2) answers Startup (when it is not started), GetRandom, GetCapability and
PCR_Read with well-formed responses, never TPM_RC_FAILURE, with no ERROR logged.

Seeds: the prepared TPM of ``tests/test_tpm_fuzz.py`` (NV indices, persistent and
loaded objects, sequences, sessions in its volatile state), started and after
Shutdown(STATE), in every form, encrypted and not.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from collections.abc import Iterable
from typing import Final

from tests.fuzz.harness import ensure_paths
from tests.fuzz.records import decode, encode
from tests.fuzz.scratch import scratch_dir

ensure_paths()

import test_tpm_fuzz as prepared  # noqa: E402

from support.engine_oracle import EngineOracle  # noqa: E402
from support.tpm_client import command, u16, u32  # noqa: E402
from vtpm_cuse.state.crypto import StateKey  # noqa: E402
from vtpm_cuse.state.errors import StateError  # noqa: E402
from vtpm_cuse.state.kinds import StateKind  # noqa: E402
from vtpm_cuse.state.store import DirectoryStore  # noqa: E402
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC  # noqa: E402
from vtpm_cuse.tpm.engine import Engine  # noqa: E402
from vtpm_cuse.tpm.state import BlobKind, StateBlobError, deserialise, serialise  # noqa: E402

MAX_LEN: Final = 32768
TIMEOUT_SECONDS: Final = 20


class Form(enum.IntEnum):
    PAYLOAD = 0
    ENGINE_BLOB = 1
    STATE_FILE = 2
    TRANSFER_BLOB = 3


_KIND_BIT: Final = 0x04
_KEYS_BIT: Final = 0x08
_EDIT_BIT: Final = 0x10
_SHUT_DOWN_BIT: Final = 0x20
#: Edits one input makes at most.
MAX_EDITS: Final = 8
#: Fixed keys: seeds sealed with them reach the state behind the encryption layers.
STATE_KEY: Final = StateKey(bytes(range(32)))
MIGRATION_KEY: Final = StateKey(bytes(range(100, 116)))
#: The engine's own state header (magic, version, kind, SHA-256 of the payload).
_HEADER_SIZE: Final = 4 + 2 + 1 + 32

STARTUP_CLEAR: Final = command(TPM_CC.Startup, u16(0))
PROBES: Final = (
    command(TPM_CC.GetRandom, u16(16)),
    command(TPM_CC.GetCapability, u32(6) + u32(0x100) + u32(64)),  # TPM_CAP_TPM_PROPERTIES, PT_FIXED
    command(TPM_CC.PCR_Read, u32(1) + u16(TPM_ALG.SHA256) + bytes([3, 0xFF, 0xFF, 0xFF])),
)


class _Stores:
    """One state directory per process, with and without keys."""

    def __init__(self) -> None:
        self.directory = scratch_dir("vtpm-fuzz-state-")
        self.plain = DirectoryStore(self.directory, lock=False)
        self.keyed = DirectoryStore(self.directory, lock=False, file_key=STATE_KEY, migration_key=MIGRATION_KEY)

    def get(self, keyed: bool) -> DirectoryStore:
        return self.keyed if keyed else self.plain


_STORES = _Stores()


def engine_blob(kind: BlobKind, payload: bytes) -> bytes:
    """``payload`` with a correct engine state header (magic, version and kind taken from
    what :func:`serialise`, the one place that writes that header, writes)."""
    prefix = serialise(kind, {})[: _HEADER_SIZE - 32]
    return prefix + hashlib.sha256(payload).digest() + payload


def state_bytes(form: Form, kind: StateKind, keyed: bool, data: bytes) -> bytes:
    """What INIT would give the engine for ``data``; StateError when the store refuses."""
    store = _STORES.get(keyed)
    if form is Form.PAYLOAD:
        return engine_blob(BlobKind(int(kind)), data)
    if form is Form.ENGINE_BLOB:
        return data
    if form is Form.STATE_FILE:
        store.path_for(kind).write_bytes(data)
        loaded = store.load(kind)
        return b"" if loaded is None else loaded
    return store.check_blob(kind, data, False)


def load(kind: StateKind, state: bytes) -> Engine | None:
    """The engine INIT would run on ``state``; None when it is refused as it must be."""
    options = {"random": prepared.deterministic_random(), "max_objects": prepared.SLOTS}
    try:
        if kind is StateKind.PERMANENT:
            return Engine.from_blobs(state or None, None, **options)
        return Engine.from_blobs(prepared.PERMANENT, state or None, **options)
    except StateBlobError:
        return None


def _comparable(kind: BlobKind, blob: bytes) -> dict:
    state = json.loads(blob[_HEADER_SIZE:])
    if kind is BlobKind.PERMANENT:
        state.pop("clock", None)
    return state


def check_resave(kind: StateKind, engine: Engine) -> None:
    """Saving the loaded state, loading that and saving again gives the same state."""
    blob_kind = BlobKind(int(kind))
    first = engine.permanent_blob() if kind is StateKind.PERMANENT else engine.volatile_blob()
    deserialise(blob_kind, first)  # (a StateBlobError here fails the input: we wrote it)
    again = load(kind, first)
    assert again is not None, f"the re-saved {kind.state_name} state does not load"
    second = again.permanent_blob() if kind is StateKind.PERMANENT else again.volatile_blob()
    assert _comparable(blob_kind, first) == _comparable(blob_kind, second), (
        f"the {kind.state_name} state changes when saved, loaded and saved again"
    )


def check_answers(engine: Engine) -> None:
    """Startup (unless started), GetRandom, GetCapability and PCR_Read answer well-formed."""
    oracle = EngineOracle(engine)
    if not engine.volatile.started:
        oracle.execute(STARTUP_CLEAR)
    for probe in PROBES:
        oracle.execute(probe)


# --- structured edits ----------------------------------------------------------------------------


class Value(enum.IntEnum):
    """What an edit puts at the position it picks."""

    INT = 0  # a signed 64-bit integer from the edit's bytes
    SMALL_INT = 1  # the first byte - 128
    POWER = 2  # 2 ** first byte (and its negative with the top bit)
    BOOL = 3
    NULL = 4
    BYTES = 5  # {"$b": hex of the edit's bytes}
    STRING = 6
    EMPTY = 7  # an empty container of the kind that is there
    DELETE = 8  # drop a mapping key / list element
    DUPLICATE = 9  # append a copy of a list's element (a repeated mapping entry, a longer list)


def _positions(node: object, out: list[tuple[object, object]]) -> list[tuple[object, object]]:
    """Every (container, key) in ``node``, depth first in a stable order."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        out.append((node, key))
        _positions(child, out)
    return out


def _new_value(kind: Value, current: object, raw: bytes) -> object:
    number = int.from_bytes(raw[:8].ljust(8, b"\0"), "big", signed=True)
    first = raw[0] if raw else 0
    return {
        Value.INT: number,
        Value.SMALL_INT: first - 128,
        Value.POWER: (-1 if first & 0x80 else 1) * 2 ** (first & 0x7F),
        Value.BOOL: bool(first & 1),
        Value.NULL: None,
        Value.BYTES: {"$b": raw.hex()},
        Value.STRING: raw.decode("latin-1"),
        Value.EMPTY: {} if isinstance(current, dict) else [],
    }[kind]


def apply_edit(state: object, edit: bytes) -> None:
    """Edit ``state`` (decoded JSON) in place: ``u16 position | u8 Value | value bytes``.

    The position indexes :func:`_positions` modulo their number, so every edit lands."""
    positions = _positions(state, [])
    if len(edit) < 3 or not positions:
        return
    container, key = positions[int.from_bytes(edit[:2], "big") % len(positions)]
    kind = Value(edit[2] % len(Value))
    current = container[key]  # type: ignore[index]
    if kind is Value.DELETE:
        del container[key]  # type: ignore[attr-defined]
    elif kind is Value.DUPLICATE:
        if isinstance(current, list) and current:
            current.append(json.loads(json.dumps(current[edit[3] % len(current) if len(edit) > 3 else 0])))
    else:
        container[key] = _new_value(kind, current, edit[3:])  # type: ignore[index]


@functools.cache
def _base_state(kind: StateKind, shut_down: bool) -> bytes:
    if kind is StateKind.VOLATILE:
        return prepared.VOLATILE[_HEADER_SIZE:]
    return (prepared.PERMANENT_SHUT_DOWN if shut_down else prepared.PERMANENT)[_HEADER_SIZE:]


def edited_state(kind: StateKind, shut_down: bool, edits: bytes) -> bytes:
    """The prepared TPM's state of ``kind`` with ``edits`` applied, as an engine blob."""
    state = json.loads(_base_state(kind, shut_down))
    for count, record in enumerate(decode(edits)):
        if count == MAX_EDITS:
            break
        apply_edit(state, record.payload)
    return engine_blob(BlobKind(int(kind)), json.dumps(state, separators=(",", ":")).encode())


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    form = Form(data[0] & 0x3)
    kind = StateKind.VOLATILE if data[0] & _KIND_BIT else StateKind.PERMANENT
    keyed = bool(data[0] & _KEYS_BIT)
    try:
        if data[0] & _EDIT_BIT:
            state = edited_state(kind, bool(data[0] & _SHUT_DOWN_BIT), data[1:])
        else:
            state = state_bytes(form, kind, keyed, data[1:])
    except StateError:
        return
    engine = load(kind, state)
    if engine is None:
        return
    check_resave(kind, engine)
    check_answers(engine)


# --- seeds -------------------------------------------------------------------------------------------


def _forms(kind: StateKind, blob: bytes) -> Iterable[bytes]:
    kind_bit = _KIND_BIT if kind is StateKind.VOLATILE else 0
    yield bytes([Form.PAYLOAD | kind_bit]) + blob[_HEADER_SIZE:]
    yield bytes([Form.ENGINE_BLOB | kind_bit]) + blob
    for keyed in (False, True):
        store = _STORES.get(keyed)
        keys = _KEYS_BIT if keyed else 0
        store.store(kind, blob)
        yield bytes([Form.STATE_FILE | kind_bit | keys]) + store.path_for(kind).read_bytes()
        for decrypt in (False, True):
            transfer, _ = store.make_blob(kind, blob, decrypt)
            yield bytes([Form.TRANSFER_BLOB | kind_bit | keys]) + transfer


def seeds() -> Iterable[bytes]:
    yield from _forms(StateKind.PERMANENT, prepared.PERMANENT)
    yield from _forms(StateKind.PERMANENT, prepared.PERMANENT_SHUT_DOWN)
    yield from _forms(StateKind.VOLATILE, prepared.VOLATILE)
    # Edits: one small integer at a few positions of each state (most of them still load).
    for options in (_EDIT_BIT, _EDIT_BIT | _SHUT_DOWN_BIT, _EDIT_BIT | _KIND_BIT):
        for position in (0, 7, 40, 300):
            yield bytes([options]) + encode([position.to_bytes(2, "big") + bytes([Value.SMALL_INT, 129])])
