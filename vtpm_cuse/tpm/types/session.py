"""Authorization area structures (Part 2, clause 10.13)."""

from __future__ import annotations

from ..marshal import UINT8, Attributes, Struct
from .buffers import TPM2B_AUTH, TPM2B_NONCE
from .interfaces import TPMI_SH_AUTH_SESSION

__all__ = [
    "TPMA_SESSION_T",
    "TPMS_AUTH_COMMAND",
    "TPMS_AUTH_RESPONSE",
]

#: continueSession 0, auditExclusive 1, auditReset 2, decrypt 5, encrypt 6, audit 7.
TPMA_SESSION_T = Attributes("TPMA_SESSION", UINT8, 0x18)

TPMS_AUTH_COMMAND = Struct(
    "TPMS_AUTH_COMMAND",
    [
        ("sessionHandle", TPMI_SH_AUTH_SESSION.plus()),
        ("nonce", TPM2B_NONCE),
        ("sessionAttributes", TPMA_SESSION_T),
        ("hmac", TPM2B_AUTH),
    ],
)
TPMS_AUTH_RESPONSE = Struct(
    "TPMS_AUTH_RESPONSE", [("nonce", TPM2B_NONCE), ("sessionAttributes", TPMA_SESSION_T), ("hmac", TPM2B_AUTH)]
)
