"""Command declarations: one per TPM command, collected in one table.

A declaration names everything the dispatcher needs — the command code, the
handles with the authorization role each needs, the parameter and response
structures, and the handler — so the dispatcher can do header checks, handle
lookup, sessions, authorization and parameter encryption identically for
every command, and GetCapability(TPM_CAP_COMMANDS) can report exactly what
is declared.

The declaration is also the handler's contract, checked when it is made: the
handler takes the declared names, returns the declared response structure,
and places errors only at names the declaration has (see README, "How to add
a TPM command").
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any

from .constants import TPM_CC, TPMA_CC, TPMA_CC_CHANDLES_SHIFT, TPMA_CC_COMMAND_INDEX_MASK
from .declaration_check import check_handler_body, declaration_checks_enabled
from .errors import Area
from .marshal import Field, Sized, Struct, TpmType


class AuthRole(enum.Enum):
    """Which authorization a handle needs (Part 3, "Auth Index" / "Auth Role")."""

    NONE = "none"
    USER = "user"
    ADMIN = "admin"
    DUP = "dup"


@dataclasses.dataclass(frozen=True)
class HandleSpec:
    name: str
    type: TpmType
    role: AuthRole = AuthRole.NONE


def H(name: str, type_: TpmType, role: AuthRole = AuthRole.NONE) -> HandleSpec:
    return HandleSpec(name, type_, role)


Handler = Callable[..., Any]


class DeclarationError(Exception):
    """A command declaration and its handler do not agree; raised at import time."""


def _response_type(name: str, names: list[str]) -> type:
    """The structure a handler returns: response handles then response parameters, by name.

    Built from the declaration, so a missing or misspelt field is a TypeError in the
    first test that runs the command (and, for literal keywords, a DeclarationError at
    import: see :mod:`.declaration_check`).  Not frozen: a frozen dataclass's __init__
    costs a microsecond more on every command.
    """
    return dataclasses.make_dataclass(f"{name}_Response", [(n, Any) for n in names], kw_only=True, slots=True)


@dataclasses.dataclass
class Command:
    code: int
    handles: tuple[HandleSpec, ...]
    params: Struct
    response_handles: tuple[HandleSpec, ...]
    response: Struct
    handler: Handler
    #: TPMA_CC flags: nv (may write NV), extensive (changes many NV locations),
    #: flushed (flushes its first handle's object on completion).
    nv: bool = False
    extensive: bool = False
    flushed: bool = False
    #: An NV write operation (Part 3: NV_Write, NV_Increment, NV_Extend, NV_SetBits,
    #: NV_WriteLock): an NV index authorizing it needs TPMA_NV_AUTHWRITE for its authValue and
    #: TPMA_NV_POLICYWRITE for a policy; every other command needs AUTHREAD / POLICYREAD.
    nv_write: bool = False
    #: May run while the TPM is in failure mode.
    in_failure_mode: bool = False
    #: swtpm runs these on its worker thread and they can be cancelled.
    cancelable: bool = False
    #: handle/parameter name -> (area, 1-based number): how ``TpmError(at=name)`` is placed.
    positions: dict[str, tuple[Area, int]] = dataclasses.field(init=False, repr=False)
    #: The Response's fields: response handles, then response parameters.
    output_names: tuple[str, ...] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        named = [(h.name, Area.HANDLE, i) for i, h in enumerate(self.handles, start=1)]
        named += [(f.name, Area.PARAMETER, i) for i, f in enumerate(self.params.fields, start=1)]
        _require_unique(self.name, [field_name for field_name, _, _ in named])
        self.positions = {field_name: (area, number) for field_name, area, number in named}
        out = [h.name for h in self.response_handles] + [f.name for f in self.response.fields]
        _require_unique(self.name, out)
        self.output_names = tuple(out)
        if declaration_checks_enabled():
            _check_signature(self)

    @functools.cached_property
    def Response(self) -> type:  # noqa: N802 -- a class, named like one
        """The dataclass the handler returns (``ctx.response(...)`` builds one); made on
        first use, as every command's is otherwise part of each daemon start."""
        return _response_type(self.name, list(self.output_names))

    @property
    def name(self) -> str:
        try:
            return TPM_CC(self.code).name
        except ValueError:
            return f"CC_{self.code:x}"

    @property
    def input_names(self) -> list[str]:
        """The handler's keyword arguments: handles, then parameters, in declaration order."""
        return list(self.positions)

    @property
    def auth_handles(self) -> tuple[HandleSpec, ...]:
        return tuple(h for h in self.handles if h.role is not AuthRole.NONE)

    @property
    def first_param_encryptable(self) -> bool:
        """Parameter encryption applies when the first parameter is a TPM2B."""
        return bool(self.params.fields) and isinstance(self.params.fields[0].type, Sized)

    @property
    def first_response_encryptable(self) -> bool:
        return bool(self.response.fields) and isinstance(self.response.fields[0].type, Sized)

    def attributes(self) -> int:
        """TPMA_CC as reported by GetCapability(TPM_CAP_COMMANDS)."""
        value = self.code & TPMA_CC_COMMAND_INDEX_MASK
        value |= TPMA_CC.nv if self.nv else 0
        value |= TPMA_CC.extensive if self.extensive else 0
        value |= TPMA_CC.flushed if self.flushed else 0
        value |= len(self.handles) << TPMA_CC_CHANDLES_SHIFT
        value |= TPMA_CC.rHandle if self.response_handles else 0
        value |= TPMA_CC.V if self.vendor else 0
        return int(value)

    @property
    def vendor(self) -> bool:
        """A vendor-specific command (TPM_CC with the V bit, e.g. TPM2_Vendor_TCG_Test)."""
        return bool(self.code & TPMA_CC.V)


def _require_unique(command_name: str, names: list[str]) -> None:
    """Handles and parameters (or response handles and parameters) share one name space."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DeclarationError(f"{command_name}: {', '.join(map(repr, twice))} is declared twice")


def _check_signature(cmd: Command) -> None:
    """The handler takes ``ctx`` and then exactly the declared handles and parameters, by name."""
    try:
        signature = inspect.signature(cmd.handler)
    except (TypeError, ValueError) as err:
        raise DeclarationError(f"{cmd.name}: handler has no signature: {err}") from None
    params = list(signature.parameters.values())
    simple = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    got = [p.name for p in params[1:]]
    if (
        not params
        or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        or any(p.kind not in simple for p in params[1:])
        or got != cmd.input_names
    ):
        raise DeclarationError(
            f"{cmd.name}: handler {getattr(cmd.handler, '__qualname__', cmd.handler)}{signature} must take "
            f"(ctx, {', '.join(cmd.input_names)}) as declared"
        )


class CommandTable:
    """Command code -> declaration, built from an explicit list of commands."""

    def __init__(self, commands: Iterable[Command] = ()) -> None:
        self._commands: dict[int, Command] = {}
        for cmd in commands:
            self.add(cmd)

    @classmethod
    def of_modules(cls, *modules: ModuleType) -> CommandTable:
        """Every :class:`Command` a module defines at its top level, from each module named."""
        return cls(value for module in modules for value in vars(module).values() if isinstance(value, Command))

    def add(self, cmd: Command) -> None:
        if cmd.code in self._commands:
            raise DeclarationError(f"command {cmd.name} declared twice")
        self._commands[cmd.code] = cmd

    def get(self, code: int) -> Command | None:
        return self._commands.get(code)

    def codes(self) -> list[int]:
        return sorted(self._commands)

    def __iter__(self) -> Iterator[Command]:
        return iter(self._commands[c] for c in self.codes())

    def __len__(self) -> int:
        return len(self._commands)


def command(
    code: int,
    *,
    handles: Sequence[HandleSpec] = (),
    params: Sequence = (),
    response_handles: Sequence[HandleSpec] = (),
    response: Sequence = (),
    **flags: Any,
) -> Callable[[Handler], Command]:
    """Declare a command; the decorated function is its handler, and the name it is
    defined under holds the :class:`Command` (collected by :meth:`CommandTable.of_modules`).

    The handler is called as ``handler(ctx, **handles_and_params)`` and returns
    ``ctx.response(...)`` with every response handle and parameter by name, or
    None when the command returns nothing.  Its signature, and the names its body
    places errors at and responds with, are checked here.
    """
    name = TPM_CC(code).name if code in TPM_CC._value2member_map_ else f"CC_{code:x}"

    def fields(items: Sequence) -> list[Field]:
        return [f if isinstance(f, Field) else Field(*f) for f in items]

    def register(handler: Handler) -> Command:
        _require_unique(name, [h.name for h in handles] + [f.name for f in fields(params)])
        _require_unique(name, [h.name for h in response_handles] + [f.name for f in fields(response)])
        cmd = Command(
            code=code,
            handles=tuple(handles),
            params=Struct(f"{name}_In", fields(params)),
            response_handles=tuple(response_handles),
            response=Struct(f"{name}_Out", fields(response)),
            handler=handler,
            **flags,
        )
        check_handler_body(cmd)
        return cmd

    return register
