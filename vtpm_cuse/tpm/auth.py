"""Authorization sessions: the interface every session kind implements, and
the password session (TPM_RS_PW).

The dispatcher parses the authorization area into :class:`SessionUse`
records, pairs each with the entity of the matching authorization handle,
and asks the session object to authorize; after the handler ran it asks the
same objects for their response sessions.  HMAC and policy sessions plug in
by implementing :class:`AuthSession`; which implementation serves a session
handle is the table in :mod:`.handle_types`.
"""

from __future__ import annotations

import abc
import dataclasses
import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING

from .constants import TPM_RS_PW, TPMA_SESSION
from .dictionary_attack import authorization_failed, check_lockout
from .entities import require_auth_value_usable, value_checked
from .errors import TPM_RC, TpmError

if TYPE_CHECKING:
    from .dispatcher import CommandContext
    from .entities import Entity


def strip_trailing_zeros(value: bytes) -> bytes:
    """authValues compare without trailing zero octets (Part 1, authValue)."""
    return value.rstrip(b"\x00")


def auth_equal(given: bytes, expected: bytes) -> bool:
    """Constant-time comparison of two authValues."""
    return hmac.compare_digest(strip_trailing_zeros(given), strip_trailing_zeros(expected))


@dataclasses.dataclass
class SessionUse:
    """One TPMS_AUTH_COMMAND of the current command."""

    index: int  # 1-based position in the authorization area
    handle: int
    nonce: bytes
    attributes: int
    hmac: bytes
    session: AuthSession
    entity: Entity | None = None


class AuthSession(abc.ABC):
    """A session kind: how it checks an authorization and what it answers."""

    handle: int

    @abc.abstractmethod
    def check_command(self, use: SessionUse, ctx: CommandContext) -> None:
        """Validate the session fields before any authorization (nonce, attributes)."""

    @abc.abstractmethod
    def authorize(self, use: SessionUse, ctx: CommandContext) -> None:
        """Authorize ``use.entity`` for this command or raise TpmError (bare code)."""

    @abc.abstractmethod
    def response(
        self, use: SessionUse, ctx: CommandContext, rp_hash: Callable[[int], bytes]
    ) -> tuple[bytes, int, bytes]:
        """The (nonce, attributes, hmac) of this session's TPMS_AUTH_RESPONSE."""

    def decrypt_parameter(self, use: SessionUse, ctx: CommandContext, data: bytes) -> bytes:
        raise TpmError(TPM_RC.ATTRIBUTES, "session cannot decrypt parameters")

    def encrypt_parameter(self, use: SessionUse, ctx: CommandContext, data: bytes) -> bytes:
        raise TpmError(TPM_RC.ATTRIBUTES, "session cannot encrypt parameters")


class PasswordSession(AuthSession):
    """TPM_RS_PW: the authValue in the clear, no nonces, no parameter encryption."""

    handle = TPM_RS_PW

    def check_command(self, use: SessionUse, ctx: CommandContext) -> None:
        if use.nonce:
            raise TpmError(TPM_RC.NONCE, "password session with a nonce")
        allowed = TPMA_SESSION.continueSession
        if use.attributes & ~allowed:
            raise TpmError(TPM_RC.ATTRIBUTES, f"password session attributes 0x{use.attributes:02x}")

    def authorize(self, use: SessionUse, ctx: CommandContext) -> None:
        entity = use.entity
        if entity is None:
            raise TpmError(TPM_RC.AUTH_CONTEXT, "password session without an authorization handle")
        check_lockout(ctx.engine, entity)
        require_auth_value_usable(entity, ctx.command)
        ok = auth_equal(use.hmac, entity.auth_value)
        value_checked(ctx.engine, entity, ok)
        if not ok:
            raise authorization_failed(ctx.engine, entity, f"wrong password for 0x{entity.handle:08x}")

    def response(
        self, use: SessionUse, ctx: CommandContext, rp_hash: Callable[[int], bytes]
    ) -> tuple[bytes, int, bytes]:
        return b"", int(TPMA_SESSION.continueSession), b""


PASSWORD_SESSION = PasswordSession()
