"""Enhanced Authorization by comparison with the TPM's data (Part 3, 23.9, 23.10; 1.83 23.23):
TPM2_PolicyNV (an NV index's contents), PolicyCounterTimer (TPMS_TIME_INFO) and
PolicyCapability (one capability value, as GetCapability reports it).

Each compares operandB with the data at ``offset`` (:mod:`~vtpm_cuse.tpm.policy_compare`)
and extends the digest with ``args := H(operandB || offset || operation [|| ...])``; a
trial session compares nothing.
"""

from __future__ import annotations

from ..algorithms import hash_alg
from ..command import AuthRole, H, command
from ..constants import HR_SHIFT, TPM_CAP, TPM_CC, TPM_EO, TPM_HT
from ..errors import TPM_RC, TpmError
from ..marshal import UINT16, UINT32
from ..nv_index import get as nv_get
from ..policy_compare import require_condition
from ..policy_digest import extend, policy_session
from ..sessions import Session
from ..types import TPM2B_OPERAND, TPM_CAP_T, TPMI_RH_NV_AUTH, TPMI_RH_NV_INDEX, TPMI_SH_POLICY, TPMS_TIME_INFO
from ..types.capability import TPMU_CAPABILITIES
from ..types.interfaces import TPM_EO_T
from .capability import CAPABILITIES
from .clock import time_info
from .nv import read_checks

POLICY_SESSION = H("policySession", TPMI_SH_POLICY)
_COMPARISON = [("operandB", TPM2B_OPERAND), ("offset", UINT16), ("operation", TPM_EO_T)]
#: Handle types TPM_CAP_HANDLES can look a handle up in (TPM_RC_HANDLE at property otherwise).
_CAPABILITY_HANDLE_TYPES = frozenset(
    {
        TPM_HT.PCR,
        TPM_HT.NV_INDEX,
        TPM_HT.HMAC_SESSION,
        TPM_HT.POLICY_SESSION,
        TPM_HT.PERMANENT,
        TPM_HT.TRANSIENT,
        TPM_HT.PERSISTENT,
    }
)


def _args(session: Session, operand_b: bytes, offset: int, operation: int, *more: bytes) -> bytes:
    data = operand_b + UINT16.pack(offset) + UINT16.pack(operation) + b"".join(more)
    return hash_alg(session.auth_hash).digest(data)


@command(
    TPM_CC.PolicyNV,
    handles=[H("authHandle", TPMI_RH_NV_AUTH, AuthRole.USER), H("nvIndex", TPMI_RH_NV_INDEX), POLICY_SESSION],
    params=_COMPARISON,
)
def policy_nv(ctx, authHandle: int, nvIndex: int, policySession: int, operandB: bytes, offset: int, operation: int):
    session = policy_session(ctx, policySession)
    if not session.is_trial:
        nv = nv_get(ctx.engine, nvIndex)
        read_checks(authHandle, nv)
        require_condition(nv.data[: nv.data_size], offset, operandB, operation)
    extend(session, TPM_CC.PolicyNV, _args(session, operandB, offset, operation), ctx.entity("nvIndex").name)


@command(TPM_CC.PolicyCounterTimer, handles=[POLICY_SESSION], params=_COMPARISON)
def policy_counter_timer(ctx, policySession: int, operandB: bytes, offset: int, operation: int):
    session = policy_session(ctx, policySession)
    # The bounds are checked for a trial session too: a policy naming octets outside
    # TPMS_TIME_INFO could never be satisfied (Part 3, 23.10; libtpms alike).
    info = TPMS_TIME_INFO.pack(time_info(ctx.engine))
    if offset > len(info):
        raise TpmError(TPM_RC.VALUE, f"offset {offset} beyond TPMS_TIME_INFO's {len(info)} octets", at="offset")
    if offset + len(operandB) > len(info):
        # Unlike PolicyNV's TPM_RC_SIZE at operandB, the reference answers a bare TPM_RC_RANGE.
        raise TpmError(TPM_RC.RANGE, f"{len(operandB)} octets at {offset} exceed TPMS_TIME_INFO's {len(info)}")
    if not session.is_trial:
        require_condition(info, offset, operandB, operation)
    extend(session, TPM_CC.PolicyCounterTimer, _args(session, operandB, offset, operation))


def capability_value(engine, capability: int, prop: int) -> bytes | None:
    """The marshalled element GetCapability(capability, prop) would list for exactly ``prop``;
    None when there is none.  TPM_CAP_PCRS has no single element (TPM_RC_VALUE)."""
    if capability not in CAPABILITIES:
        raise TpmError(TPM_RC.VALUE, f"capability 0x{capability:x} has no single values", at="capability")
    if capability == TPM_CAP.HANDLES and prop >> HR_SHIFT not in _CAPABILITY_HANDLE_TYPES:
        raise TpmError(TPM_RC.HANDLE, f"handle type 0x{prop >> HR_SHIFT:02x}", at="property")
    if capability == TPM_CAP.AUTH_POLICIES and prop >> HR_SHIFT != TPM_HT.PERMANENT:
        raise TpmError(TPM_RC.VALUE, f"0x{prop:08x} is not a permanent handle", at="property")
    source, _ = CAPABILITIES[capability]
    element = TPMU_CAPABILITIES.members[capability].element
    found = [item for key, item in source(engine, prop) if key == prop]
    return element.pack(found[0]) if found else None


@command(
    TPM_CC.PolicyCapability,
    handles=[POLICY_SESSION],
    params=[*_COMPARISON, ("capability", TPM_CAP_T), ("property", UINT32)],
)
def policy_capability(
    ctx, policySession: int, operandB: bytes, offset: int, operation: int, capability: int, property: int
):  # noqa: A002 - Part 3's name
    session = policy_session(ctx, policySession)
    if not session.is_trial:
        value = capability_value(ctx.engine, capability, property)
        if value is None:
            # A value that does not exist is unequal to anything, and nothing else.
            if operation != TPM_EO.NEQ:
                raise TpmError(TPM_RC.POLICY, f"capability 0x{capability:x} has no property 0x{property:x}")
        else:
            require_condition(value, offset, operandB, operation)
    more = UINT32.pack(capability) + UINT32.pack(property)
    extend(session, TPM_CC.PolicyCapability, _args(session, operandB, offset, operation, more))
