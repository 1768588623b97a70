"""Fuzz target: ``Engine.execute`` on raw command bytes, against a prepared TPM.

Input format: one option byte, then records (:mod:`tests.fuzz.records`), each one
command executed in order (at most :data:`MAX_COMMANDS`; the record flag is unused).
The option byte's bits 0-2 pick the locality (:data:`LOCALITIES`), bit 3 the TPM
after Shutdown(STATE) instead of the started one (so Startup has something to do).

The TPM is the prepared engine of ``tests/test_tpm_fuzz.py`` (a loaded ECC storage
primary and hash sequence, persistent keys, NV indices of every kind, HMAC and
policy sessions, saved contexts), restored from its blobs with a deterministic random
source.  Restoring costs milliseconds, so one engine serves consecutive inputs until
an input may have changed its state: a command that succeeded (other than the
read-only ones in :data:`READ_ONLY`) or failed an authorization (the lockout counter).

Oracles, for every command (:class:`support.engine_oracle.EngineOracle`): no
exception, a well-formed response, no TPM_RC_FAILURE, no ERROR logged by the engine;
and for a command whose parameter area unmarshals with its declaration, marshalling
that value gives back the bytes it was read from.

Seeds: for every command in the engine's table a valid command (live handles of the
declared types, the smallest value of the parameter declaration or a known-good one),
with no session, with a password session, and with an HMAC session whose HMAC is
right for the prepared TPM.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Final

from tests.fuzz.harness import ensure_paths
from tests.fuzz.records import decode, encode

ensure_paths()

import test_tpm_fuzz as prepared  # noqa: E402

from support import session_client as sc  # noqa: E402
from support.engine_oracle import EngineOracle  # noqa: E402
from support.tpm_client import command, u32  # noqa: E402
from support.tpm_strategies import smallest  # noqa: E402
from vtpm_cuse.tpm.command import AuthRole  # noqa: E402
from vtpm_cuse.tpm.constants import TPM_CC, TPM_ST  # noqa: E402
from vtpm_cuse.tpm.engine import Engine  # noqa: E402
from vtpm_cuse.tpm.errors import TPM_RC, TpmError  # noqa: E402
from vtpm_cuse.tpm.marshal import Reader  # noqa: E402

MAX_LEN: Final = 4096
TIMEOUT_SECONDS: Final = 20
#: Commands one input runs at most (a sequence lets a session or a sequence be used after).
MAX_COMMANDS: Final = 4
LOCALITIES: Final = (0, 1, 2, 3, 4, 3, 32, 255)
_SHUT_DOWN_BIT: Final = 0x08
#: Commands whose success leaves the TPM as it was (the engine is kept for the next input).
READ_ONLY: Final = frozenset(
    {
        TPM_CC.GetRandom,
        TPM_CC.GetCapability,
        TPM_CC.PCR_Read,
        TPM_CC.ReadPublic,
        TPM_CC.NV_ReadPublic,
        TPM_CC.GetTestResult,
        TPM_CC.ReadClock,
        TPM_CC.Hash,
        TPM_CC.TestParms,
    }
)
#: Failed authorizations count towards the lockout: such an input gets a fresh engine after.
#: TPMA_SESSION.audit.
_AUDIT: Final = 0x80
_DA_CODES: Final = frozenset({int(TPM_RC.AUTH_FAIL), int(TPM_RC.BAD_AUTH), int(TPM_RC.LOCKOUT)})

COMMANDS = prepared.COMMANDS


class _Engines:
    """The engine inputs run on, restored only when the last input may have changed it."""

    def __init__(self) -> None:
        self._current: dict[bool, EngineOracle] = {}

    def get(self, shut_down: bool) -> EngineOracle:
        engine = self._current.get(shut_down)
        if engine is None:
            options = {"random": prepared.deterministic_random(), "max_objects": prepared.SLOTS}
            permanent = prepared.PERMANENT_SHUT_DOWN if shut_down else prepared.PERMANENT
            volatile = None if shut_down else prepared.VOLATILE
            engine = EngineOracle(Engine.from_blobs(permanent, volatile, physical_presence=True, **options))
            self._current[shut_down] = engine
        return engine

    def spoil(self, shut_down: bool) -> None:
        self._current.pop(shut_down, None)


_ENGINES = _Engines()


def _rc(resp: bytes) -> int:
    return int.from_bytes(resp[6:10], "big")


def _component(rc: int) -> int:
    """The base code of a format-one response code (its handle/parameter/session number dropped)."""
    return rc & 0xBF if rc & 0x80 else rc


def check_parameter_round_trip(cmd: bytes) -> None:
    """When ``cmd``'s parameter area unmarshals with its declaration, the value marshals back
    to the bytes it was read from (one declaration, both directions)."""
    if len(cmd) < 10:
        return
    declared = COMMANDS.get(int.from_bytes(cmd[6:10], "big"))
    if declared is None:
        return
    offset = 10 + 4 * len(declared.handles)
    if int.from_bytes(cmd[0:2], "big") == TPM_ST.SESSIONS:
        if len(cmd) < offset + 4:
            return
        offset += 4 + int.from_bytes(cmd[offset : offset + 4], "big")
    end = min(len(cmd), int.from_bytes(cmd[2:6], "big"))
    if offset > end:
        return
    reader = Reader(bytes(cmd[:end]), offset)
    try:
        value = declared.params.unmarshal(reader)
    except TpmError:
        return
    consumed = bytes(cmd[offset : reader.pos])
    again = declared.params.pack(value)
    assert again == consumed, (
        f"TPM_CC 0x{declared.code:x}: parameters {consumed.hex()} unmarshal to {value!r}, "
        f"which marshals to {again.hex()}"
    )


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    locality = LOCALITIES[data[0] & 0x7]
    shut_down = bool(data[0] & _SHUT_DOWN_BIT)
    engine = _ENGINES.get(shut_down)
    try:
        for count, record in enumerate(decode(data[1:])):
            if count == MAX_COMMANDS:
                break
            resp = engine.execute(record.payload, locality)
            rc = _rc(resp)
            code = int.from_bytes(record.payload[6:10], "big") if len(record.payload) >= 10 else None
            if (rc == 0 and code not in READ_ONLY) or _component(rc) in _DA_CODES:
                _ENGINES.spoil(shut_down)
            check_parameter_round_trip(record.payload)
    except BaseException:
        _ENGINES.spoil(shut_down)
        raise


# --- seeds -------------------------------------------------------------------------------------------


def _smallest_parameters(code: int) -> bytes:
    declared = COMMANDS.get(code)
    return declared.params.pack(smallest(declared.params))


def _known_parameters(code: int) -> bytes | None:
    if code == TPM_CC.ContextLoad:
        return prepared.CONTEXTS[0]
    if code in (TPM_CC.CreatePrimary, TPM_CC.Create):
        return prepared.CREATION_PARAMS[0]
    if code == TPM_CC.CreateLoaded:
        return prepared.CREATE_LOADED_PARAMS[0]
    if code == TPM_CC.Load:
        return prepared.LOADABLE
    return None


def _live_handles(declared) -> list[int]:
    out = []
    for spec in declared.handles:
        typed = [h for h in prepared.LIVE_HANDLES if not hasattr(spec.type, "accepts") or spec.type.accepts(h)]
        out.append(typed[0] if typed else prepared.LIVE_HANDLES[0])
    return out


def _hmac_command(declared, handles: list[int], params: bytes) -> bytes:
    """The command with the prepared TPM's bound HMAC session on every authorized handle
    (or as an audit session when none is: a session that neither authorizes, audits nor
    encrypts is refused): what its HMACs must be for that TPM."""
    session = dataclasses.replace(prepared.SESSIONS["bound_xor"])
    authorized = [h for h, spec in zip(handles, declared.handles, strict=True) if spec.role is not AuthRole.NONE]
    uses = [
        sc.Use(dataclasses.replace(session), name=prepared.name_of(h), nonce=bytes(session.nonce_size))
        for h in authorized
    ] or [sc.Use(session, attributes=_AUDIT | sc.CONTINUE, nonce=bytes(session.nonce_size))]
    sent: list[bytes] = []

    def capture(cmd: bytes) -> bytes:
        sent.append(cmd)
        return bytes.fromhex("80010000000a00000101")

    handle_names = [(h, prepared.name_of(h)) for h in handles]
    sc.run(capture, declared.code, handle_names, params, uses, check=False)
    return sent[0]


def commands_for(declared) -> list[bytes]:
    """A valid command for ``declared`` without sessions, with a password and with an HMAC session."""
    handles = _live_handles(declared)
    params = _known_parameters(declared.code)
    if params is None:
        params = _smallest_parameters(declared.code)
    handle_area = b"".join(u32(h) for h in handles)
    return [
        command(declared.code, handle_area + params),
        command(declared.code, params, handle_area, auth=b""),
        _hmac_command(declared, handles, params),
    ]


def seeds() -> Iterable[bytes]:
    for declared in COMMANDS:
        shut_down = declared.code == TPM_CC.Startup
        options = _SHUT_DOWN_BIT if shut_down else 0
        for cmd in commands_for(declared):
            yield bytes([options]) + encode([cmd])
    # Two-command inputs: a session used twice (its nonce rolled), a sequence fed then completed.
    get_random = command(TPM_CC.GetRandom, (16).to_bytes(2, "big"))
    yield bytes([0]) + encode([get_random, get_random])
    yield bytes([3]) + encode([command(TPM_CC.PCR_Read, bytes.fromhex("00000001000b03ffffff")), get_random])
