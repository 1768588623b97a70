"""Drive an in-process :class:`~vtpm_cuse.tpm.engine.Engine` by command declaration.

Manufacturing a TPM is a short script of TPM commands.  Rather than spelling out
command bytes for each one, :class:`InProcessTpm` marshals the parameters from the
command's own declaration (``vtpm_cuse.tpm.commands``) and unmarshals the response
the same way, so the script reads like tpm2-tools calls and every byte still goes
through :meth:`Engine.execute` exactly as it would from a transport.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..tpm.commands import COMMANDS
from ..tpm.constants import TPM_RS_PW, TPM_ST
from ..tpm.engine import Engine
from ..tpm.errors import TPM_RC
from ..tpm.marshal import UINT32, Reader

__all__ = ["InProcessTpm", "TpmCommandError"]

HEADER_SIZE = 10
#: TPMA_SESSION.continueSession: the password session's attributes.
CONTINUE_SESSION = 0x01


class TpmCommandError(Exception):
    """A manufacturing command was answered with an error code."""

    def __init__(self, command: str, rc: int) -> None:
        super().__init__(f"TPM2_{command} failed with TPM_RC 0x{rc:03x}")
        self.command = command
        self.rc = rc


@dataclass
class Reply:
    """A successful response: the response handles and the declared response fields."""

    handles: list[int]
    fields: Any


def password_session(password: bytes) -> bytes:
    """One TPMS_AUTH_COMMAND for the password session (empty nonce)."""
    return (
        UINT32.pack(TPM_RS_PW) + b"\x00\x00" + bytes([CONTINUE_SESSION]) + len(password).to_bytes(2, "big") + password
    )


class InProcessTpm:
    """An engine plus a declaration-driven command call; hierarchy passwords are empty."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def call(self, code: int, *handles: int, **params: Any) -> Reply:
        """Run command ``code`` with ``handles`` and the declared parameters by name.

        Handles that need authorization get an empty-password session.  Raises
        :class:`TpmCommandError` for any response code but TPM_RC_SUCCESS.
        """
        cmd = COMMANDS.get(code)
        if cmd is None:
            raise ValueError(f"command 0x{code:x} is not implemented by the engine")
        if len(handles) != len(cmd.handles):
            raise ValueError(f"TPM2_{cmd.name} takes {len(cmd.handles)} handles, got {len(handles)}")
        body = b"".join(UINT32.pack(h) for h in handles)
        authorized = len(cmd.auth_handles)
        if authorized:
            sessions = b"".join(password_session(b"") for _ in range(authorized))
            body += UINT32.pack(len(sessions)) + sessions
        body += cmd.params.pack(cmd.params(**params))
        tag = TPM_ST.SESSIONS if authorized else TPM_ST.NO_SESSIONS
        raw = tag.to_bytes(2, "big") + (HEADER_SIZE + len(body)).to_bytes(4, "big") + code.to_bytes(4, "big") + body
        return self._reply(cmd, self.engine.execute(raw))

    @staticmethod
    def _reply(cmd, response: bytes) -> Reply:
        rc = int.from_bytes(response[6:10], "big")
        if rc != TPM_RC.SUCCESS:
            raise TpmCommandError(cmd.name, rc)
        r = Reader(response, HEADER_SIZE)
        out_handles = [UINT32.unmarshal(r) for _ in cmd.response_handles]
        if int.from_bytes(response[0:2], "big") == TPM_ST.SESSIONS:
            size = UINT32.unmarshal(r)
            r = Reader(response, r.pos, r.pos + size)
        return Reply(out_handles, cmd.response.unmarshal(r))
