"""Clock, time and ticket structures (Part 2, clauses 10.7, 10.11)."""

from __future__ import annotations

from ..constants import TPM_ST
from ..errors import TPM_RC
from ..marshal import UINT16, UINT32, UINT64, Interface, Struct
from .buffers import TPM2B_DIGEST
from .interfaces import TPMI_RH_HIERARCHY, TPMI_YES_NO

__all__ = [
    "TPMS_CLOCK_INFO",
    "TPMS_TIME_INFO",
    "TPMT_TK_AUTH",
    "TPMT_TK_CREATION",
    "TPMT_TK_HASHCHECK",
    "TPMT_TK_VERIFIED",
]

TPMS_CLOCK_INFO = Struct(
    "TPMS_CLOCK_INFO", [("clock", UINT64), ("resetCount", UINT32), ("restartCount", UINT32), ("safe", TPMI_YES_NO)]
)
TPMS_TIME_INFO = Struct("TPMS_TIME_INFO", [("time", UINT64), ("clockInfo", TPMS_CLOCK_INFO)])


def _ticket(name: str, tag: int) -> Struct:
    tag_type = Interface(f"{name}.tag", UINT16, (tag,), rc=TPM_RC.TAG)
    return Struct(name, [("tag", tag_type), ("hierarchy", TPMI_RH_HIERARCHY.plus()), ("digest", TPM2B_DIGEST)])


TPMT_TK_HASHCHECK = _ticket("TPMT_TK_HASHCHECK", TPM_ST.HASHCHECK)
TPMT_TK_CREATION = _ticket("TPMT_TK_CREATION", TPM_ST.CREATION)
TPMT_TK_VERIFIED = _ticket("TPMT_TK_VERIFIED", TPM_ST.VERIFIED)
TPMT_TK_AUTH = Struct(
    "TPMT_TK_AUTH",
    [
        ("tag", Interface("TPMT_TK_AUTH.tag", UINT16, (TPM_ST.AUTH_SECRET, TPM_ST.AUTH_SIGNED), rc=TPM_RC.TAG)),
        ("hierarchy", TPMI_RH_HIERARCHY.plus()),
        ("digest", TPM2B_DIGEST),
    ],
)
