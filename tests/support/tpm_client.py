"""A tiny TPM 2.0 command builder for tests: builds real command bytes so
tests exercise the engine exactly as a transport would."""

from __future__ import annotations

import dataclasses

from vtpm_cuse.tpm.constants import TPM_RS_PW, TPM_ST

PW_SESSION = 4 + 2 + 1 + 2  # TPMS_AUTH_COMMAND with empty nonce/hmac


def command(code: int, body: bytes = b"", handles: bytes = b"", auth: bytes | None = None) -> bytes:
    """A TPM2 command; ``auth`` adds one password session with that password."""
    if auth is None:
        rest = handles + body
        tag = TPM_ST.NO_SESSIONS
    else:
        session = TPM_RS_PW.to_bytes(4, "big") + b"\x00\x00" + b"\x01" + len(auth).to_bytes(2, "big") + auth
        rest = handles + len(session).to_bytes(4, "big") + session + body
        tag = TPM_ST.SESSIONS
    return tag.to_bytes(2, "big") + (10 + len(rest)).to_bytes(4, "big") + code.to_bytes(4, "big") + rest


@dataclasses.dataclass
class Response:
    raw: bytes

    @property
    def tag(self) -> int:
        return int.from_bytes(self.raw[0:2], "big")

    @property
    def size(self) -> int:
        return int.from_bytes(self.raw[2:6], "big")

    @property
    def rc(self) -> int:
        return int.from_bytes(self.raw[6:10], "big")

    def params(self, handles: int = 0) -> bytes:
        """Response parameters (parameterSize stripped for session responses, sessions dropped)."""
        body = self.raw[10 + 4 * handles :]
        if self.tag == TPM_ST.SESSIONS:
            size = int.from_bytes(body[:4], "big")
            return body[4 : 4 + size]
        return body


def u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def tpm2b(data: bytes) -> bytes:
    return u16(len(data)) + data
