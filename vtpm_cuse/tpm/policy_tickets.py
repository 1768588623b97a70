"""TPMT_TK_AUTH: the ticket TPM2_PolicySigned and TPM2_PolicySecret give for an
authorization with a negative expiration, which TPM2_PolicyTicket accepts in their place.

The ticket is an HMAC under the proof of the authorizing entity's hierarchy over

    tag || timeout || time epoch || cpHashA || policyRef || authName

(each variable-size part with its size, so no two inputs share a message).  The timeout
is a Time value and Time restarts at every _TPM_Init, so the epoch it belongs to is part
of the ticket: after a TPM Reset or Restart the ticket no longer verifies.  The timeout
buffer (TPM2B_TIMEOUT) is this TPM's own format: the timeout as a UINT64.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from .constants import HR_SHIFT, TPM_CC, TPM_HT, TPM_RH, TPM_ST
from .errors import TPM_RC, TpmError
from .nv_index import get as nv_get
from .nv_index import hierarchy_of
from .persistent import find_object
from .policy_time import time_epoch
from .tickets import ticket_digest
from .types import TPMT_TK_AUTH

if TYPE_CHECKING:
    from .engine import Engine

#: TPM2B_TIMEOUT in this TPM: one UINT64.
TIMEOUT_SIZE = 8
#: Permanent handles that are a hierarchy of their own; any other permanent entity is the owner's.
_OWN_HIERARCHIES = (TPM_RH.PLATFORM, TPM_RH.ENDORSEMENT, TPM_RH.NULL)


def entity_hierarchy(engine: Engine, handle: int) -> int:
    """The hierarchy whose proof signs a ticket for the entity at ``handle``."""
    kind = handle >> HR_SHIFT
    if kind in (TPM_HT.TRANSIENT, TPM_HT.PERSISTENT):
        obj = find_object(engine, handle)
        return obj.hierarchy if obj is not None else TPM_RH.NULL  # a sequence object
    if kind == TPM_HT.NV_INDEX:
        nv = nv_get(engine, handle)
        return hierarchy_of(nv) if nv is not None else TPM_RH.OWNER
    if kind == TPM_HT.PERMANENT and handle in _OWN_HIERARCHIES:
        return handle
    return TPM_RH.OWNER


def timeout_buffer(timeout: int) -> bytes:
    return timeout.to_bytes(TIMEOUT_SIZE, "big")


def parse_timeout(buffer: bytes) -> int:
    """The timeout a TPM2B_TIMEOUT from :func:`timeout_buffer` holds (TPM_RC_SIZE at timeout otherwise)."""
    if len(buffer) != TIMEOUT_SIZE:
        raise TpmError(TPM_RC.SIZE, f"a {len(buffer)}-octet timeout; this TPM makes {TIMEOUT_SIZE}", at="timeout")
    return int.from_bytes(buffer, "big")


def _digest(engine: Engine, tag: int, hierarchy: int, timeout: int, cp_hash: bytes, ref: bytes, name: bytes) -> bytes:
    sized = b"".join(len(part).to_bytes(2, "big") + part for part in (cp_hash, ref, name))
    epoch = time_epoch(engine).to_bytes(8, "big")
    return ticket_digest(engine, tag, hierarchy, timeout_buffer(timeout), epoch, sized)


def auth_ticket(engine: Engine, tag: int, hierarchy: int, timeout: int, cp_hash: bytes, ref: bytes, name: bytes) -> Any:
    return TPMT_TK_AUTH(
        tag=tag, hierarchy=hierarchy, digest=_digest(engine, tag, hierarchy, timeout, cp_hash, ref, name)
    )


def null_auth_ticket(tag: int) -> Any:
    """What PolicySigned / PolicySecret answer when they make no ticket."""
    return TPMT_TK_AUTH(tag=tag, hierarchy=TPM_RH.NULL, digest=b"")


def auth_ticket_valid(engine: Engine, ticket: Any, timeout: int, cp_hash: bytes, ref: bytes, name: bytes) -> bool:
    expected = _digest(engine, ticket.tag, ticket.hierarchy, timeout, cp_hash, ref, name)
    return hmac.compare_digest(expected, ticket.digest)


#: The assertion a ticket of each tag stands for.
TICKET_COMMANDS = {TPM_ST.AUTH_SIGNED: TPM_CC.PolicySigned, TPM_ST.AUTH_SECRET: TPM_CC.PolicySecret}
