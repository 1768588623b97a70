"""Import-time checks of what a handler's body says against its declaration.

Python alone would notice ``TpmError(..., at="inPublik")`` (no such
parameter) or ``ctx.response(outPublik=...)`` (no such field) only when the
command runs, and the dispatcher would then answer TPM_RC_FAILURE to a
client.  So when a command is declared, this module reads the source of its
handler and of the engine functions the handler calls (transitively, by
name, within the command modules) and checks the names written there as
literals:

- ``at="name"`` keywords and ``errors_at("name")`` blocks name one of the
  command's handles or parameters;
- ``ctx.response(...)`` passes response fields by keyword only, each one
  declared, and, unless it also unpacks a ``**mapping``, all of them.

A name computed at run time cannot be read here; the dispatcher checks those
when the command runs, and a wrong one is an internal error the tests see.
Where no source is available (a frozen build) there is nothing to read and
only the run-time checks apply.

Reading every handler's source (and its signature) costs 20-60 ms, a tenth of the daemon's start-up,
for a check whose findings are developers' mistakes: the daemon switches it off
(``VTPM_CUSE_DECLARATION_CHECK=0`` in its own environment, before the engine is
imported), so it runs wherever the engine is imported otherwise -- the tests, which
import every command module, and development.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import os
from collections.abc import Iterator
from types import FunctionType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .command import Command

#: Environment variable that switches the check off when it is "0".
ENV_SWITCH = "VTPM_CUSE_DECLARATION_CHECK"
#: Functions followed from a handler: the helpers of the command modules, where errors
#: are placed and responses built (the layers below raise bare codes).
FOLLOWED_PACKAGE = "vtpm_cuse.tpm.commands"
#: The context manager whose first argument names a position.
ERRORS_AT = "errors_at"
#: The CommandContext method that builds the declared response.
RESPONSE_METHOD = "response"


def declaration_checks_enabled() -> bool:
    """Whether declarations are checked against their handlers (here and the handler's
    signature in :mod:`.command`): everywhere but in the daemon, which switches them off."""
    return os.environ.get(ENV_SWITCH) != "0"


def check_handler_body(cmd: Command) -> None:
    """Raise DeclarationError listing every literal name that the declaration lacks."""
    if not declaration_checks_enabled():
        return
    from .command import DeclarationError

    problems: list[str] = []
    for fn in _reached(_function_of(cmd.handler)):
        facts = _facts(fn)
        for name, line in facts.positions:
            if name not in cmd.positions:
                problems.append(
                    f"{facts.where(line)}: {name!r} is not a handle or parameter of {cmd.name}"
                    f" (declared: {', '.join(cmd.positions) or 'none'})"
                )
        for call in facts.responses:
            problems.extend(f"{facts.where(call.lineno)}: {p}" for p in _response_problems(cmd, call))
    if problems:
        raise DeclarationError("; ".join(problems))


@dataclasses.dataclass(frozen=True)
class _Facts:
    """What one function's body says, read once however many commands reach it."""

    fn: FunctionType
    positions: tuple[tuple[str, int], ...]
    responses: tuple[ast.Call, ...]
    callees: tuple[FunctionType, ...]

    def where(self, line: int) -> str:
        return f"{self.fn.__code__.co_filename}:{line} ({self.fn.__qualname__})"


def _function_of(handler: object) -> FunctionType | None:
    fn = inspect.unwrap(getattr(handler, "__func__", handler))  # type: ignore[arg-type]
    return fn if isinstance(fn, FunctionType) else None


def _reached(start: FunctionType | None) -> Iterator[FunctionType]:
    """The handler and every command-module function it calls by a global name, each once."""
    seen: set[FunctionType] = set()
    pending = [start] if start is not None else []
    while pending:
        fn = pending.pop()
        if fn not in seen:
            seen.add(fn)
            yield fn
            pending.extend(_facts(fn).callees)


@functools.cache
def _facts(fn: FunctionType) -> _Facts:
    node = _definitions(fn.__code__.co_filename).get(fn.__code__.co_firstlineno)
    calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)] if node is not None else []
    callees = []
    for call in calls:
        if isinstance(call.func, ast.Name) and call.func.id in fn.__globals__:
            callee = _function_of(fn.__globals__[call.func.id])
            if callee is not None and callee.__module__.startswith(FOLLOWED_PACKAGE):
                callees.append(callee)
    return _Facts(
        fn,
        tuple(p for call in calls for p in _positions_named(call)),
        tuple(call for call in calls if _is_response_call(call)),
        tuple(callees),
    )


@functools.cache
def _definitions(filename: str) -> dict[int, ast.AST]:
    """First line (the first decorator's, as in co_firstlineno) -> function definition."""
    try:
        with open(filename, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename)
    except (OSError, SyntaxError, ValueError):
        return {}
    found: dict[int, ast.AST] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[min([node.lineno] + [d.lineno for d in node.decorator_list])] = node
    return found


def _positions_named(call: ast.Call) -> Iterator[tuple[str, int]]:
    for kw in call.keywords:
        if kw.arg == "at" and _is_str(kw.value):
            yield kw.value.value, call.lineno
    func = call.func
    called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    if called == ERRORS_AT and call.args and _is_str(call.args[0]):
        yield call.args[0].value, call.lineno


def _is_response_call(call: ast.Call) -> bool:
    func = call.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr == RESPONSE_METHOD
        and isinstance(func.value, ast.Name)
        and func.value.id == "ctx"
    )


def _response_problems(cmd: Command, call: ast.Call) -> list[str]:
    declared = cmd.output_names
    if call.args:
        return [f"ctx.response takes the fields of {cmd.name} by name"]
    given = [kw.arg for kw in call.keywords if kw.arg is not None]
    problems = [
        f"{name!r} is not a response field of {cmd.name} (declared: {', '.join(declared) or 'none'})"
        for name in given
        if name not in declared
    ]
    unpacks = any(kw.arg is None for kw in call.keywords)
    missing = [name for name in declared if name not in given]
    if missing and not unpacks:
        problems.append(f"ctx.response leaves out {', '.join(missing)} of {cmd.name}")
    return problems


def _is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)
