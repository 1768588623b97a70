"""Integrity collection (Part 3, clause 22): PCR_Extend, PCR_Event,
PCR_Read, PCR_Allocate, PCR_SetAuthPolicy, PCR_SetAuthValue, PCR_Reset.

A PCR in an authorization group (pcrs.PCR_AUTH_GROUPS / PCR_POLICY_GROUPS) is
authorized by its group's authValue or authPolicy (entities.pcr_entity); every
other PCR by the empty authValue.
"""

from __future__ import annotations

from ..algorithms import HASHES, hash_alg
from ..auth import strip_trailing_zeros
from ..command import AuthRole, H, command
from ..constants import IMPLEMENTATION_PCR, PCR_SELECT_MAX, TPM_ALG, TPM_CC, TPM_RH
from ..errors import TPM_RC, TpmError
from ..marshal import UINT32
from ..pcr_selection import filter_selection
from ..pcrs import DRTM_PCR, HCRTM_PCR, PCR_AUTH_GROUPS, PCR_POLICY_GROUPS, group_of, may_extend, may_reset
from ..types import (
    TPM2B_DIGEST,
    TPM2B_EVENT,
    TPMI_ALG_HASH,
    TPMI_DH_PCR,
    TPMI_RH_PLATFORM,
    TPMI_YES_NO,
    TPML_DIGEST,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMT_HA,
    selection_bits,
)

#: TPML_DIGEST holds eight digests, so one PCR_Read returns at most eight PCRs.
MAX_PCR_READ = 8
UINT32_MAX = 0xFFFFFFFF


def _check_extend(ctx, pcr: int) -> None:
    if not may_extend(pcr, ctx.locality):
        raise TpmError(TPM_RC.LOCALITY, f"locality {ctx.locality} may not extend PCR {pcr}")


@command(
    TPM_CC.PCR_Extend,
    handles=[H("pcrHandle", TPMI_DH_PCR.plus(), AuthRole.USER)],
    params=[("digests", TPML_DIGEST_VALUES)],
)
def pcr_extend(ctx, pcrHandle: int, digests: list):
    if pcrHandle == TPM_RH.NULL:
        return
    _check_extend(ctx, pcrHandle)
    for ha in digests:
        ctx.engine.pcrs.extend(pcrHandle, ha.hashAlg, ha.digest)


@command(
    TPM_CC.PCR_Event,
    handles=[H("pcrHandle", TPMI_DH_PCR.plus(), AuthRole.USER)],
    params=[("eventData", TPM2B_EVENT)],
    response=[("digests", TPML_DIGEST_VALUES)],
)
def pcr_event(ctx, pcrHandle: int, eventData: bytes):
    if pcrHandle != TPM_RH.NULL:
        _check_extend(ctx, pcrHandle)
    # The event is digested with every implemented algorithm, allocated or not.
    digests = {alg: h.digest(eventData) for alg, h in sorted(HASHES.items())}
    if pcrHandle != TPM_RH.NULL:
        for alg, digest in digests.items():
            ctx.engine.pcrs.extend(pcrHandle, alg, digest)
    return ctx.response(digests=[TPMT_HA(hashAlg=alg, digest=d) for alg, d in digests.items()])


@command(
    TPM_CC.PCR_Read,
    params=[("pcrSelectionIn", TPML_PCR_SELECTION)],
    response=[("pcrUpdateCounter", UINT32), ("pcrSelectionOut", TPML_PCR_SELECTION), ("pcrValues", TPML_DIGEST)],
)
def pcr_read(ctx, pcrSelectionIn: list):
    # Only implemented, allocated PCRs are reported, at most one TPML_DIGEST of them.
    selections, values = filter_selection(ctx.engine.volatile.pcrs, pcrSelectionIn, limit=MAX_PCR_READ)
    return ctx.response(
        pcrUpdateCounter=ctx.engine.volatile.pcr_counter & UINT32_MAX, pcrSelectionOut=selections, pcrValues=values
    )


@command(TPM_CC.PCR_Reset, handles=[H("pcrHandle", TPMI_DH_PCR, AuthRole.USER)])
def pcr_reset(ctx, pcrHandle: int):
    if not may_reset(pcrHandle, ctx.locality):
        raise TpmError(TPM_RC.LOCALITY, f"locality {ctx.locality} may not reset PCR {pcrHandle}")
    ctx.engine.pcrs.set_all_banks(pcrHandle, bytes)


@command(
    TPM_CC.PCR_Allocate,
    handles=[H("authHandle", TPMI_RH_PLATFORM, AuthRole.USER)],
    params=[("pcrAllocation", TPML_PCR_SELECTION)],
    response=[
        ("allocationSuccess", TPMI_YES_NO),
        ("maxPCR", UINT32),
        ("sizeNeeded", UINT32),
        ("sizeAvailable", UINT32),
    ],
    nv=True,
)
def pcr_allocate(ctx, authHandle: int, pcrAllocation: list):
    perm = ctx.engine.permanent
    current = perm.pending_pcr_allocation or perm.pcr_allocation
    # Banks not named keep their allocation; a bank named twice takes its last selection.
    new = {alg: list(pcrs) for alg, pcrs in current.items()}
    for sel in pcrAllocation:
        new[sel.hash] = sorted(p for p in selection_bits(sel.pcrSelect) if p < IMPLEMENTATION_PCR)
    size_needed = sum(hash_alg(alg).digest_size * len(pcrs) for alg, pcrs in new.items())
    size_available = sum(h.digest_size for h in HASHES.values()) * IMPLEMENTATION_PCR
    allocated = set().union(*new.values()) if new else set()
    if HCRTM_PCR not in allocated or DRTM_PCR not in allocated:
        raise TpmError(TPM_RC.PCR, "the allocation must keep PCR 0 and PCR 17 in some bank")
    perm.pending_pcr_allocation = {alg: pcrs for alg, pcrs in sorted(new.items())}
    ctx.engine.volatile.pcr_reconfigured = True
    return ctx.response(
        allocationSuccess=1, maxPCR=IMPLEMENTATION_PCR, sizeNeeded=size_needed, sizeAvailable=size_available
    )


@command(
    TPM_CC.PCR_SetAuthPolicy,
    handles=[H("authHandle", TPMI_RH_PLATFORM, AuthRole.USER)],
    params=[("authPolicy", TPM2B_DIGEST), ("hashAlg", TPMI_ALG_HASH.plus()), ("pcrNum", TPMI_DH_PCR)],
    nv=True,
)
def pcr_set_auth_policy(ctx, authHandle: int, authPolicy: bytes, hashAlg: int, pcrNum: int):
    expected = 0 if hashAlg == TPM_ALG.NULL else hash_alg(hashAlg).digest_size
    if len(authPolicy) != expected:
        raise TpmError(
            TPM_RC.SIZE,
            f"authPolicy of {len(authPolicy)} bytes, hashAlg 0x{hashAlg:x} needs {expected}",
            at="authPolicy",
        )
    group = group_of(PCR_POLICY_GROUPS, pcrNum)
    if group is None:
        raise TpmError(TPM_RC.VALUE, f"PCR {pcrNum} is in no policy group", at="pcrNum")
    ctx.engine.permanent.pcr_policies[group] = (hashAlg, authPolicy)


@command(
    TPM_CC.PCR_SetAuthValue,
    handles=[H("pcrHandle", TPMI_DH_PCR, AuthRole.USER)],
    params=[("auth", TPM2B_DIGEST)],
)
def pcr_set_auth_value(ctx, pcrHandle: int, auth: bytes):
    group = group_of(PCR_AUTH_GROUPS, pcrHandle)
    if group is None:
        # Unplaced, as libtpms answers it (Part 3 names no position for it).
        raise TpmError(TPM_RC.VALUE, f"PCR {pcrHandle} is in no auth group")
    ctx.engine.volatile.pcr_auth_values[group] = strip_trailing_zeros(auth)


assert PCR_SELECT_MAX * 8 >= IMPLEMENTATION_PCR
