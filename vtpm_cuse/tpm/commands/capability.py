"""Capability commands (Part 3, clause 30): GetCapability, TestParms.

Every capability is computed from the engine's own tables (commands,
algorithms, properties, PCR attributes), so GetCapability reports exactly
what is implemented.  Each capability is a sorted list of items keyed by the
value ``property`` starts from; paging with moreData is the same for all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..algorithms import ALGORITHMS, ECC_CURVES, HASHES
from ..audit import audited_commands
from ..command import command
from ..constants import (
    HR_HANDLE_MASK,
    HR_HMAC_SESSION,
    HR_POLICY_SESSION,
    HR_SHIFT,
    IMPLEMENTATION_PCR,
    PCR_SELECT_MAX,
    TPM_ALG,
    TPM_CAP,
    TPM_CC,
    TPM_HT,
    TPM_RH,
)
from ..errors import TPM_RC, TpmError, errors_at
from ..hierarchy import AUTH_SLOTS, hierarchy_policy
from ..marshal import UINT32
from ..nv_index import handles as nv_handles
from ..objects import transient_handles
from ..parms import check_public_parms
from ..pcrs import pcr_properties
from ..persistent import persistent_handles
from ..physical_presence import pp_list
from ..properties import fixed_properties, variable_properties
from ..types import (
    MAX_CAP_ALGS,
    MAX_CAP_CC,
    MAX_CAP_HANDLES,
    MAX_ECC_CURVES,
    MAX_PCR_PROPERTIES,
    MAX_TAGGED_POLICIES,
    MAX_TPM_PROPERTIES,
    TPM_CAP_T,
    TPMI_YES_NO,
    TPMS_ALG_PROPERTY,
    TPMS_CAPABILITY_DATA,
    TPMS_PCR_SELECTION,
    TPMS_TAGGED_PCR_SELECT,
    TPMS_TAGGED_POLICY,
    TPMS_TAGGED_PROPERTY,
    TPMT_HA,
    TPMT_PUBLIC_PARMS,
    selection_bytes,
)

#: Permanent handles this TPM implements (reported for TPM_HT_PERMANENT).
PERMANENT_HANDLES = (
    TPM_RH.OWNER,
    TPM_RH.NULL,
    TPM_RH.PW,
    TPM_RH.LOCKOUT,
    TPM_RH.ENDORSEMENT,
    TPM_RH.PLATFORM,
    TPM_RH.PLATFORM_NV,
)


def _handles(engine, start: int) -> list[tuple[int, int]]:
    kind = start >> HR_SHIFT
    if kind == TPM_HT.PCR:
        found = list(range(IMPLEMENTATION_PCR))
    elif kind == TPM_HT.PERMANENT:
        found = list(PERMANENT_HANDLES)
    elif kind == TPM_HT.TRANSIENT:
        found = transient_handles(engine.volatile)  # objects and sequences
    elif kind == TPM_HT.PERSISTENT:
        found = persistent_handles(engine)
    elif kind == TPM_HT.HMAC_SESSION:
        # TPM_HT_LOADED_SESSION: every loaded session, HMAC or policy, in slot order.
        return sorted((HR_HMAC_SESSION | s.index, s.handle) for s in engine.volatile.sessions.loaded.values())
    elif kind == TPM_HT.POLICY_SESSION:
        # TPM_HT_SAVED_SESSION: context-saved sessions, listed (as the reference TPM does)
        # with the HMAC-range handle of their slot.
        slots = sorted(h & HR_HANDLE_MASK for h in engine.volatile.sessions.saved)
        return [(HR_POLICY_SESSION | i, HR_HMAC_SESSION | i) for i in slots]
    elif kind == TPM_HT.NV_INDEX:
        found = nv_handles(engine)
    else:
        # TPM_RC_HANDLE, not VALUE: the property names a handle range (Part 3 TPM2_GetCapability
        # reference code; libtpms alike).
        raise TpmError(TPM_RC.HANDLE, f"handle type 0x{kind:02x}", at="property")
    return [(h, h) for h in sorted(found) if h >> HR_SHIFT == kind]


def _algs(engine, start: int):
    return [(alg, TPMS_ALG_PROPERTY(alg=alg, algProperties=attrs)) for alg, attrs in sorted(ALGORITHMS.items())]


def _commands(engine, start: int):
    return [(cmd.code, cmd.attributes()) for cmd in engine.table]


def _audit(engine, start: int):
    return [(cc, cc) for cc in audited_commands(engine)]


def _pp(engine, start: int):
    return [(cc, cc) for cc in pp_list(engine)]


def _properties(engine, start: int):
    return [
        (p, TPMS_TAGGED_PROPERTY(property=p, value=v))
        for p, v in fixed_properties(engine) + variable_properties(engine)
    ]


def _pcr_properties(engine, start: int):
    return [
        (tag, TPMS_TAGGED_PCR_SELECT(tag=tag, pcrSelect=selection_bytes(pcrs, PCR_SELECT_MAX)))
        for tag, pcrs in sorted(pcr_properties().items())
    ]


def _curves(engine, start: int):
    return [(c, c) for c in sorted(ECC_CURVES)]


def _auth_policies(engine, start: int):
    if start >> HR_SHIFT != TPM_HT.PERMANENT:
        raise TpmError(TPM_RC.VALUE, f"0x{start:08x} is not a permanent handle", at="property")
    policies = {h: hierarchy_policy(engine, h) for h in AUTH_SLOTS}
    return [
        (
            h,
            TPMS_TAGGED_POLICY(
                handle=h, policyHash=TPMT_HA(hashAlg=alg, digest=digest if alg != TPM_ALG.NULL else None)
            ),
        )
        for h, (alg, digest) in sorted(policies.items())
    ]


#: Authenticated Countdown Timer handles (TPM_RH_ACT_0..F).
ACT_HANDLES = (0x40000110, 0x4000011F)


def _act(engine, start: int):
    if not ACT_HANDLES[0] <= start <= ACT_HANDLES[1]:
        raise TpmError(TPM_RC.VALUE, f"0x{start:08x} is not an ACT handle", at="property")
    return []  # this TPM implements no Authenticated Countdown Timers


#: capability -> (items as (key, element) sorted by key, most elements per response)
CAPABILITIES: dict[int, tuple[Callable[[Any, int], list], int]] = {
    TPM_CAP.ALGS: (_algs, MAX_CAP_ALGS),
    TPM_CAP.HANDLES: (_handles, MAX_CAP_HANDLES),
    TPM_CAP.COMMANDS: (_commands, MAX_CAP_CC),
    TPM_CAP.PP_COMMANDS: (_pp, MAX_CAP_CC),
    TPM_CAP.AUDIT_COMMANDS: (_audit, MAX_CAP_CC),
    TPM_CAP.TPM_PROPERTIES: (_properties, MAX_TPM_PROPERTIES),
    TPM_CAP.PCR_PROPERTIES: (_pcr_properties, MAX_PCR_PROPERTIES),
    TPM_CAP.ECC_CURVES: (_curves, MAX_ECC_CURVES),
    TPM_CAP.AUTH_POLICIES: (_auth_policies, MAX_TAGGED_POLICIES),
    TPM_CAP.ACT: (_act, MAX_CAP_HANDLES),
}


@command(
    TPM_CC.GetCapability,
    params=[("capability", TPM_CAP_T), ("property", UINT32), ("propertyCount", UINT32)],
    response=[("moreData", TPMI_YES_NO), ("capabilityData", TPMS_CAPABILITY_DATA)],
    in_failure_mode=True,
)
def get_capability(ctx, capability: int, property: int, propertyCount: int):
    if capability == TPM_CAP.PCRS:
        # The whole allocation is always returned; the count does not apply and the property is
        # reserved: it shall be zero (Part 3, TPM2_GetCapability, TPM_CAP_PCRS; libtpms alike).
        if property != 0:
            raise TpmError(TPM_RC.VALUE, f"TPM_CAP_PCRS property 0x{property:x} is not zero", at="property")
        banks = ctx.engine.permanent.pcr_allocation
        data = [
            TPMS_PCR_SELECTION(hash=alg, pcrSelect=selection_bytes(banks.get(alg, []), PCR_SELECT_MAX))
            for alg in sorted(HASHES)
        ]
        return ctx.response(moreData=0, capabilityData=TPMS_CAPABILITY_DATA(capability=capability, data=data))
    if capability not in CAPABILITIES:
        raise TpmError(TPM_RC.VALUE, f"capability 0x{capability:x} not supported", at="capability")
    source, limit = CAPABILITIES[capability]
    items = [element for key, element in source(ctx.engine, property) if key >= property]
    count = min(propertyCount, limit)
    return ctx.response(
        moreData=int(len(items) > count), capabilityData=TPMS_CAPABILITY_DATA(capability=capability, data=items[:count])
    )


@command(TPM_CC.TestParms, params=[("parameters", TPMT_PUBLIC_PARMS)])
def test_parms(ctx, parameters):
    """Unmarshalling already rejected anything unimplemented; check the combinations left."""
    with errors_at("parameters"):
        check_public_parms(parameters.type, parameters.parameters)
