"""What the dispatcher needs of a command declaration, worked out once per command.

Why: a :class:`~.command.Command` is written for people -- handle specs, a parameter
Struct of Fields, properties that derive the auth handles or whether the first
parameter is a TPM2B.  Walking it on every command cost the dispatcher attribute
chains, generator expressions and property calls before any work was done.  A plan
is the same declaration flattened into tuples of bound (un)marshal methods and
plain flags, built the first time a command runs and reused for every later one.
The declaration stays the only source: a plan holds nothing it does not derive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .command import AuthRole, Command
from .constants import TPM_CC
from .marshal import Reader

__all__ = ["FAILURE_MODE_COMMANDS", "CommandPlan", "PlanCache"]

#: Commands a TPM in failure mode still answers (Part 3, "Failure Mode").
FAILURE_MODE_COMMANDS = frozenset({TPM_CC.GetTestResult, TPM_CC.GetCapability})

Unmarshal = Callable[[Reader], Any]
Marshal = Callable[[Any, bytearray], None]


@dataclass(frozen=True, slots=True)
class CommandPlan:
    """One command's declaration, ready to run (see the module docstring)."""

    command: Command
    #: Per handle: its interface type's unmarshaller and its authorization role.
    handles: tuple[tuple[Unmarshal, AuthRole], ...]
    #: The handler's keyword names of the handles, in order.
    handle_names: tuple[str, ...]
    #: Positions (0-based) of the handles that need an authorization.
    auth_handle_indexes: tuple[int, ...]
    #: Per parameter: its name and unmarshaller, in order.
    params: tuple[tuple[str, Unmarshal], ...]
    #: Per response handle / response parameter: its name and marshaller, in order.
    response_handles: tuple[tuple[str, Marshal], ...]
    response_params: tuple[tuple[str, Marshal], ...]
    first_param_encryptable: bool
    first_response_encryptable: bool
    runs_in_failure_mode: bool
    is_startup: bool

    @classmethod
    def of(cls, command: Command) -> CommandPlan:
        return cls(
            command=command,
            handles=tuple((spec.type.unmarshal, spec.role) for spec in command.handles),
            handle_names=tuple(spec.name for spec in command.handles),
            auth_handle_indexes=tuple(i for i, spec in enumerate(command.handles) if spec.role is not AuthRole.NONE),
            params=tuple((f.name, f.type.unmarshal) for f in command.params.fields),
            response_handles=tuple((spec.name, spec.type.marshal) for spec in command.response_handles),
            response_params=tuple((f.name, f.type.marshal) for f in command.response.fields),
            first_param_encryptable=command.first_param_encryptable,
            first_response_encryptable=command.first_response_encryptable,
            runs_in_failure_mode=command.code in FAILURE_MODE_COMMANDS,
            is_startup=command.code == TPM_CC.Startup,
        )


class PlanCache:
    """The plans of a command table's commands, each made on the command's first run.

    Lazily, because an engine is cheap to create (tests make thousands) and most run a
    few commands; keyed by code and checked against the Command object, so a command
    replaced in the table gets a new plan.
    """

    __slots__ = ("_plans",)

    def __init__(self) -> None:
        self._plans: dict[int, CommandPlan] = {}

    def plan(self, command: Command) -> CommandPlan:
        plan = self._plans.get(command.code)
        if plan is None or plan.command is not command:
            plan = self._plans[command.code] = CommandPlan.of(command)
        return plan
