"""The one path every command takes: header checks, handle lookup,
authorization sessions, parameter (de)cryption, unmarshalling, the handler,
and response assembly.

Order of checks follows Part 3's "Command Processing" clause: tag, size,
command code, failure mode, initialization, handles, sessions and
authorizations, then parameters.  Any check that fails produces a 10-byte
error response with the response code positioned at the offending handle,
session or parameter: by the field being read, or, for an error a handler
raises, by the name it gives (``at=``), looked up in the command's
declaration.

TPM_RC_FAILURE means failure mode.  Anything else that escapes a handler --
an exception, a name the declaration lacks, a response that is not the
declared structure -- is an engine bug: it is logged as an internal error and
answered TPM_RC_FAILURE, and the tests treat both as a failed test.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from typing import TYPE_CHECKING, Any

from . import audit
from .algorithms import hash_alg
from .auth import SessionUse
from .command import Command, CommandTable
from .constants import TPM_RH, TPM_RS_PW, TPM_ST, TPMA_SESSION
from .dispatcher_plan import FAILURE_MODE_COMMANDS, CommandPlan, PlanCache
from .entities import Entity
from .errors import TPM_RC, Area, TpmError, rc_name
from .handle_types import load_session, resolve
from .marshal import UINT32, Reader
from .physical_presence import check_platform_authorization
from .types import TPMI_ST_COMMAND_TAG, TPMS_AUTH_COMMAND, TPMS_AUTH_RESPONSE
from .wire import HEADER_SIZE, error_response, response_header

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)

__all__ = ["FAILURE_MODE_COMMANDS", "CommandContext", "Dispatcher", "HandlerBug"]

MAX_SESSIONS = 3
#: The smallest TPMS_AUTH_COMMAND: handle (4), empty nonce (2), attributes (1), empty hmac (2).
MIN_AUTH_SIZE = 9
#: tag, commandSize, commandCode: read in one go when the whole header is there.
_HEADER = struct.Struct(">HII")
# Plain ints: an IntFlag operator is a Python-level call on every command.
_SESSIONS_TAG = int(TPM_ST.SESSIONS)
_DECRYPT = int(TPMA_SESSION.decrypt)
_ENCRYPT = int(TPMA_SESSION.encrypt)
#: One plan per command declaration, shared by every engine of the process.
_PLANS = PlanCache()


class HandlerBug(Exception):
    """A handler broke its declaration's contract (an engine bug, never a client's)."""


@dataclasses.dataclass(slots=True)
class CommandContext:
    """Everything a handler may need about the command being executed."""

    engine: Engine
    command: Command
    locality: int
    tag: int
    handles: list[int]
    entities: list[Entity | None]
    cp_parameters: bytes = b""
    sessions: list[SessionUse] = dataclasses.field(default_factory=list)
    #: The response parameters as sent (encrypted where a session encrypts them).
    rp_parameters: bytes = b""
    _rp_hashes: dict[int, bytes] = dataclasses.field(default_factory=dict)

    def response(self, **fields: Any) -> Any:
        """The command's declared response structure (response handles and parameters)."""
        return self.command.Response(**fields)

    def entity(self, name: str) -> Entity | None:
        """The entity of the handle the declaration calls ``name``."""
        area, number = self.command.positions[name]
        if area is not Area.HANDLE:
            raise HandlerBug(f"{self.command.name}: {name!r} is a parameter, not a handle")
        return self.entities[number - 1]

    def resolve(self, handle: int) -> Entity:
        """What ``handle`` names now (it may differ from the handle area's view after the handler ran)."""
        return resolve(self.engine, handle)

    def cp_hash(self, alg: int) -> bytes:
        """cpHash = H(commandCode || Name(handles)... || parameters) (Part 1, 18.7)."""
        h = hash_alg(alg).new()
        h.update(self.command.code.to_bytes(4, "big"))
        for entity in self.entities:
            if entity is not None:
                h.update(entity.name)
        h.update(self.cp_parameters)
        return h.digest()

    def rp_hash(self, alg: int) -> bytes:
        """rpHash = H(responseCode (0) || commandCode || parameters) of the response being built."""
        if alg not in self._rp_hashes:
            data = bytes(4) + self.command.code.to_bytes(4, "big") + self.rp_parameters
            self._rp_hashes[alg] = hash_alg(alg).digest(data)
        return self._rp_hashes[alg]


class Dispatcher:
    def __init__(self, engine: Engine, table: CommandTable) -> None:
        self.engine = engine
        self.table = table

    def execute(self, request: bytes, locality: int) -> tuple[bytes, Command | None]:
        """Run one command; never raises.  Returns the response and the command (if known)."""
        command: Command | None = None
        try:
            tag, code, r = self._header(bytes(request))
            command = self.table.get(code)
            if command is None:
                raise TpmError(TPM_RC.COMMAND_CODE, f"command 0x{code:x} not implemented")
            return self._run(_PLANS.plan(command), tag, r, locality), command
        except TpmError as err:
            if err.rc == TPM_RC.BAD_TAG:
                # A TPM 1.2 driver must understand the answer to its command (Part 3, 5.2).
                return error_response(err.rc, TPM_ST.RSP_COMMAND), command
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: %s (%s)", command.name if command else "?", rc_name(err.rc), err.detail)
            return error_response(err.rc), command
        except Exception:  # an engine bug must not take the transport down
            log.exception("internal error executing %s", command.name if command else "command")
            return error_response(TPM_RC.FAILURE), command

    def _header(self, request: bytes) -> tuple[int, int, Reader]:
        """tag and commandCode, checked in Part 3's order; the Reader is at the handle area."""
        if len(request) >= HEADER_SIZE:
            tag, size, code = _HEADER.unpack_from(request)
            TPMI_ST_COMMAND_TAG.check(tag)
            self._check_size(size, len(request))
            return tag, code, Reader(request, HEADER_SIZE)
        r = Reader(request)  # short: each field read reports what is missing
        tag = TPMI_ST_COMMAND_TAG.unmarshal(r)
        self._check_size(UINT32.unmarshal(r), len(request))
        return tag, UINT32.unmarshal(r), r

    def _check_size(self, size: int, received: int) -> None:
        if size != received or size > self.engine.max_command_size:
            raise TpmError(TPM_RC.COMMAND_SIZE, f"commandSize {size}, received {received}")

    def _run(self, plan: CommandPlan, tag: int, r: Reader, locality: int) -> bytes:
        engine = self.engine
        command = plan.command
        if engine.failure_mode and not plan.runs_in_failure_mode:
            raise TpmError(TPM_RC.FAILURE, "TPM is in failure mode")
        if engine.volatile.started == plan.is_startup:
            raise TpmError(
                TPM_RC.INITIALIZE, "TPM2_Startup already ran" if engine.volatile.started else "TPM2_Startup has not run"
            )

        handles, entities = self._handles(plan, r)
        ctx = CommandContext(engine, command, locality, tag, handles, entities)

        if tag == _SESSIONS_TAG:
            auth_size = UINT32.unmarshal(r)
            if auth_size < MIN_AUTH_SIZE or auth_size > r.remaining:
                raise TpmError(TPM_RC.AUTHSIZE, f"authorizationSize {auth_size}")
            auth_end = r.pos + auth_size
            ctx.cp_parameters = r.data[auth_end : r.end]
            ctx.sessions = self._sessions(ctx, plan, Reader(r.data, r.pos, auth_end))
            self._authorize(ctx)
        else:
            if plan.auth_handle_indexes:
                raise TpmError(TPM_RC.AUTH_MISSING, f"{command.name} needs authorization")
            ctx.cp_parameters = r.data[r.pos : r.end]

        kwargs = dict(zip(plan.handle_names, handles, strict=True))
        kwargs.update(self._parameters(ctx, plan))
        # Decided before the command runs: a command that changes the audit algorithm is not
        # recorded in the digest of the new one.
        command_audit_alg = audit.command_audit_alg(engine, command.code)
        result = self._call_handler(ctx, kwargs)
        if command.nv:
            engine.mark_permanent_dirty()
        return self._response(ctx, plan, result, command_audit_alg)

    # --- the handler -------------------------------------------------------------
    @staticmethod
    def _call_handler(ctx: CommandContext, kwargs: dict[str, Any]) -> Any:
        """Run the handler; position its errors by name and check what it returns."""
        command = ctx.command
        try:
            result = command.handler(ctx, **kwargs)
        except TpmError as err:
            raise _placed(command, err) from None
        if result is None and not command.output_names:
            return command.Response()
        if not isinstance(result, command.Response):
            raise HandlerBug(f"{command.name} returned {type(result).__name__}, not {command.Response.__name__}")
        return result

    # --- handle area -----------------------------------------------------------
    def _handles(self, plan: CommandPlan, r: Reader) -> tuple[list[int], list[Entity | None]]:
        # Every handle is unmarshalled (its type checked) before any is looked up, as Part 3
        # orders handle-area validation and libtpms does: a bad second handle type is reported
        # before a first handle that does not exist.
        handles: list[int] = []
        for number, (unmarshal, _role) in enumerate(plan.handles, start=1):
            try:
                handles.append(unmarshal(r))
            except TpmError as err:
                raise err.placed(Area.HANDLE, number) from None
        entities: list[Entity | None] = []
        for number, (handle, (_unmarshal, role)) in enumerate(zip(handles, plan.handles, strict=True), start=1):
            try:
                entity = resolve(self.engine, handle)
            except TpmError as err:
                if err.rc == TPM_RC.REFERENCE_H0:
                    raise TpmError(TPM_RC.REFERENCE_H0 + number - 1, err.detail) from None
                raise err.placed(Area.HANDLE, number) from None
            entity.role = role
            entities.append(entity)
        return handles, entities

    # --- authorization area ------------------------------------------------------
    def _sessions(self, ctx: CommandContext, plan: CommandPlan, r: Reader) -> list[SessionUse]:
        uses: list[SessionUse] = []
        auth_handles = plan.auth_handle_indexes
        while r.remaining:
            index = len(uses) + 1
            if index > MAX_SESSIONS:
                raise TpmError(TPM_RC.AUTHSIZE, "more than three sessions")
            try:
                auth = TPMS_AUTH_COMMAND.unmarshal(r)
            except TpmError as err:
                if err.rc == TPM_RC.INSUFFICIENT:
                    raise TpmError(TPM_RC.AUTHSIZE, "authorization area ends inside a session") from None
                raise err.at_session(index) from None
            if auth.sessionHandle != TPM_RS_PW and any(u.handle == auth.sessionHandle for u in uses):
                raise TpmError(TPM_RC.HANDLE, "session used twice").at_session(index)
            session = load_session(ctx, auth.sessionHandle, index)
            entity = ctx.entities[auth_handles[index - 1]] if index <= len(auth_handles) else None
            uses.append(
                SessionUse(index, auth.sessionHandle, auth.nonce, auth.sessionAttributes, auth.hmac, session, entity)
            )
        if len(uses) < len(auth_handles):
            raise TpmError(TPM_RC.AUTH_MISSING, f"{len(auth_handles)} authorizations needed, {len(uses)} given")
        return uses

    def _authorize(self, ctx: CommandContext) -> None:
        for use in ctx.sessions:
            try:
                if use.entity is not None and use.entity.handle == TPM_RH.PLATFORM:
                    # Before anything else about the session, as in the reference TPM.
                    check_platform_authorization(ctx.engine, ctx.command.code)
                use.session.check_command(use, ctx)
                if use.entity is not None:
                    use.session.authorize(use, ctx)
            except TpmError as err:
                raise err.at_session(use.index) from None

    # --- parameters --------------------------------------------------------------
    def _parameters(self, ctx: CommandContext, plan: CommandPlan) -> dict[str, Any]:
        data = ctx.cp_parameters
        for use in ctx.sessions:
            if use.attributes & _DECRYPT:
                if not plan.first_param_encryptable:
                    raise TpmError(TPM_RC.ATTRIBUTES, "decrypt session, no encryptable parameter").at_session(use.index)
                data = use.session.decrypt_parameter(use, ctx, data)
        r = Reader(data)
        values: dict[str, Any] = {}
        for number, (name, unmarshal) in enumerate(plan.params, start=1):
            try:
                values[name] = unmarshal(r)
            except TpmError as err:
                raise err.placed(Area.PARAMETER, number) from None
        if r.remaining:
            raise TpmError(TPM_RC.SIZE, f"{r.remaining} bytes after the last parameter")
        return values

    # --- response ----------------------------------------------------------------
    def _response(self, ctx: CommandContext, plan: CommandPlan, result: Any, command_audit_alg: int | None) -> bytes:
        handle_area = bytearray()
        for name, marshal in plan.response_handles:
            marshal(getattr(result, name), handle_area)
        out = bytearray()
        for name, marshal in plan.response_params:
            marshal(getattr(result, name), out)
        params = bytes(out)
        for use in ctx.sessions:
            if use.attributes & _ENCRYPT:
                if not plan.first_response_encryptable:
                    raise TpmError(TPM_RC.ATTRIBUTES, "encrypt session, no encryptable response").at_session(use.index)
                params = use.session.encrypt_parameter(use, ctx, params)
        ctx.rp_parameters = params
        audit.record(ctx, command_audit_alg)
        if ctx.tag == _SESSIONS_TAG:
            sessions = bytearray()
            for use in ctx.sessions:
                nonce, attributes, mac = use.session.response(use, ctx, ctx.rp_hash)
                TPMS_AUTH_RESPONSE.marshal(
                    TPMS_AUTH_RESPONSE(nonce=nonce, sessionAttributes=attributes, hmac=mac), sessions
                )
            parts = (handle_area, len(params).to_bytes(4, "big"), params, sessions)
        else:
            parts = (handle_area, params)
        size = HEADER_SIZE + sum(map(len, parts))
        if size > self.engine.max_response_size:
            raise TpmError(TPM_RC.SIZE, f"response of {size} bytes exceeds the buffer")
        return b"".join((response_header(ctx.tag, size, TPM_RC.SUCCESS), *parts))


def _placed(command: Command, err: TpmError) -> TpmError:
    """A handler's error with the handle or parameter it names turned into its number."""
    if err.at is None:
        return err
    position = command.positions.get(err.at)
    if position is None:
        raise HandlerBug(f"{command.name} raised {rc_name(err.rc)} at {err.at!r}, which it does not declare")
    return err.placed(*position)
