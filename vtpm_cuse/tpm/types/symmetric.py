"""Structures of the commands that use keys from outside the TPM (Part 3, TPM2_LoadExternal).

TPM2_LoadExternal's inPrivate is a TPM2B_SENSITIVE that may be the Empty
Buffer (a public-only load); everywhere else (TPM2B_PRIVATE's plaintext, saved
contexts) an empty one is malformed, so the lenient form is a type of its own.
"""

from __future__ import annotations

from ..marshal import SizedStruct
from .objects import TPMT_SENSITIVE

__all__ = ["TPM2B_SENSITIVE_OR_EMPTY"]

#: TPM2B_SENSITIVE where size 0 means "no private part" (unmarshalled as None).
TPM2B_SENSITIVE_OR_EMPTY = SizedStruct("TPM2B_SENSITIVE", TPMT_SENSITIVE, allow_empty=True)
