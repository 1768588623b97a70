"""Command declarations: one per TPM command, collected in one table.

A declaration names everything the dispatcher needs — the command code, the
handles with the authorization role each needs, the parameter and response
structures, and the handler — so the dispatcher can do header checks, handle
lookup, sessions, authorization and parameter encryption identically for
every command, and GetCapability(TPM_CAP_COMMANDS) can report exactly what
is declared.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable

from .constants import TPM_CC, TPMA_CC, TPMA_CC_CHANDLES_SHIFT
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


Handler = Callable[..., "dict[str, Any] | None"]


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
    #: May run while the TPM is in failure mode.
    in_failure_mode: bool = False
    #: swtpm runs these on its worker thread and they can be cancelled.
    cancelable: bool = False

    @property
    def name(self) -> str:
        try:
            return TPM_CC(self.code).name
        except ValueError:
            return f"0x{self.code:x}"

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
        value = self.code & 0xFFFF
        value |= TPMA_CC.nv if self.nv else 0
        value |= TPMA_CC.extensive if self.extensive else 0
        value |= TPMA_CC.flushed if self.flushed else 0
        value |= len(self.handles) << TPMA_CC_CHANDLES_SHIFT
        value |= TPMA_CC.rHandle if self.response_handles else 0
        return int(value)


class CommandTable:
    """Command code -> declaration.  Each engine gets the same, immutable table."""

    def __init__(self) -> None:
        self._commands: dict[int, Command] = {}

    def add(self, cmd: Command) -> None:
        if cmd.code in self._commands:
            raise ValueError(f"command {cmd.name} declared twice")
        self._commands[cmd.code] = cmd

    def get(self, code: int) -> Command | None:
        return self._commands.get(code)

    def codes(self) -> list[int]:
        return sorted(self._commands)

    def __iter__(self):
        return iter(self._commands[c] for c in self.codes())

    def __len__(self) -> int:
        return len(self._commands)


COMMANDS = CommandTable()


def command(code: int, *, handles: list[HandleSpec] | tuple = (), params: list | tuple = (),
            response_handles: list[HandleSpec] | tuple = (), response: list | tuple = (),
            table: CommandTable = COMMANDS, **flags: Any) -> Callable[[Handler], Handler]:
    """Declare a command; the decorated function is its handler.

    The handler is called as ``handler(ctx, **handles_and_params)`` and returns
    a dict of response handles and parameters by name (or None when the
    command returns nothing).
    """
    name = TPM_CC(code).name if code in TPM_CC._value2member_map_ else f"CC_{code:x}"

    def fields(items: list | tuple) -> list[Field]:
        return [f if isinstance(f, Field) else Field(*f) for f in items]

    def register(handler: Handler) -> Handler:
        table.add(Command(
            code=code,
            handles=tuple(handles),
            params=Struct(f"{name}_In", fields(params)),
            response_handles=tuple(response_handles),
            response=Struct(f"{name}_Out", fields(response)),
            handler=handler,
            **flags,
        ))
        return handler

    return register
