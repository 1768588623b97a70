"""The command a policy is bound to by a digest: cpHash, nameHash, templateHash, pHash.

A policy session holds at most one such digest (Part 3, 23.13-23.15, 23.21, 23.24): a
second assertion of another kind, or of the same kind with another value, is
TPM_RC_CPHASH.  When the session authorizes a command, the digest must be the one of
that command (TPM_RC_POLICY_FAIL otherwise):

* cpHash:       H(commandCode || Names of the handles || parameters)
* nameHash:     H(Names of the handles)
* templateHash: H(the inPublic template) of Create, CreatePrimary or CreateLoaded
* pHash:        H(commandCode || parameters)  (TPM 2.0 Library 1.83)
"""

from __future__ import annotations

import enum
import hmac
from typing import TYPE_CHECKING

from .algorithms import hash_alg
from .constants import TPM_CC
from .errors import TPM_RC, TpmError
from .marshal import UINT16, Reader
from .sessions import Session

if TYPE_CHECKING:
    from .dispatcher import CommandContext


class CommandHashKind(enum.IntEnum):
    NONE = 0
    CP = 1
    NAME = 2
    TEMPLATE = 3
    PARAMETERS = 4


#: The commands whose second parameter is the template a templateHash is computed over
#: (their first, inSensitive, may be encrypted; the template never is).
TEMPLATE_COMMANDS = frozenset({TPM_CC.Create, TPM_CC.CreatePrimary, TPM_CC.CreateLoaded})


def require_digest_size(session: Session, value: bytes, at: str) -> None:
    size = hash_alg(session.auth_hash).digest_size
    if len(value) != size:
        raise TpmError(TPM_RC.SIZE, f"a {len(value)}-octet digest in a session of {size}-octet digests", at=at)


def check_command_hash(session: Session, kind: CommandHashKind, value: bytes, *, repeatable: bool) -> None:
    """TPM_RC_CPHASH when the session holds a command digest already, unless ``repeatable`` and
    it is the same digest of the same kind."""
    policy = session.policy
    if policy.command_hash_kind == CommandHashKind.NONE:
        return
    same = policy.command_hash_kind == kind and hmac.compare_digest(policy.command_hash, value)
    if not (repeatable and same):
        raise TpmError(
            TPM_RC.CPHASH, f"the session is bound to a {CommandHashKind(policy.command_hash_kind).name} digest already"
        )


def bind_command_hash(session: Session, kind: CommandHashKind, value: bytes, *, repeatable: bool) -> None:
    """Record ``value`` as the session's command digest (checked as :func:`check_command_hash` does)."""
    check_command_hash(session, kind, value, repeatable=repeatable)
    session.policy.command_hash, session.policy.command_hash_kind = value, kind


def names_digest(alg: int, ctx: CommandContext) -> bytes:
    return hash_alg(alg).digest(b"".join(e.name for e in ctx.entities if e is not None))


def _template_digest(alg: int, ctx: CommandContext) -> bytes | None:
    """H(template) of a command in TEMPLATE_COMMANDS; None for other commands or a parameter
    area too short to hold one (the command then fails its own unmarshalling)."""
    if ctx.command.code not in TEMPLATE_COMMANDS:
        return None
    r = Reader(ctx.cp_parameters)
    try:
        r.take(UINT16.unmarshal(r))
        template = r.take(UINT16.unmarshal(r))
    except TpmError:
        return None
    return hash_alg(alg).digest(template)


def command_digest(kind: int, alg: int, ctx: CommandContext) -> bytes | None:
    """The digest of kind ``kind`` of the command being authorized."""
    if kind == CommandHashKind.CP:
        return ctx.cp_hash(alg)
    if kind == CommandHashKind.NAME:
        return names_digest(alg, ctx)
    if kind == CommandHashKind.TEMPLATE:
        return _template_digest(alg, ctx)
    return hash_alg(alg).digest(ctx.command.code.to_bytes(4, "big") + ctx.cp_parameters)


def command_hash_matches(session: Session, ctx: CommandContext) -> bool:
    policy = session.policy
    if policy.command_hash_kind == CommandHashKind.NONE:
        return True
    actual = command_digest(policy.command_hash_kind, session.auth_hash, ctx)
    return actual is not None and hmac.compare_digest(actual, policy.command_hash)
