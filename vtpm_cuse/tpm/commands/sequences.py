"""Hash, MAC and event sequences (Part 3, clauses 15.4 and 17): Hash, MAC_Start (HMAC_Start),
HashSequenceStart, SequenceUpdate, SequenceComplete, EventSequenceComplete."""

from __future__ import annotations

from ..algorithms import HASHES
from ..command import AuthRole, H, command
from ..constants import TPM_ALG, TPM_CC, TPM_RH
from ..errors import TPM_RC, TpmError
from ..hierarchy import hierarchy_enabled
from ..objects import allocate_handle
from ..pcrs import may_extend
from ..state import SequenceObject
from ..tickets import TPM_GENERATED_VALUE, hashcheck_ticket
from ..types import (
    TPM2B_AUTH,
    TPM2B_DIGEST,
    TPM2B_MAX_BUFFER,
    TPMI_ALG_HASH,
    TPMI_ALG_MAC_SCHEME,
    TPMI_DH_OBJECT,
    TPMI_DH_PCR,
    TPMI_RH_HIERARCHY,
    TPML_DIGEST_VALUES,
    TPMT_HA,
    TPMT_TK_HASHCHECK,
)
from .symmetric import mac_key


def _check_hierarchy(ctx, hierarchy: int) -> None:
    """A ticket may only come from an enabled hierarchy (the parameter ``hierarchy``)."""
    if not hierarchy_enabled(ctx.engine, hierarchy):
        raise TpmError(TPM_RC.HIERARCHY, f"hierarchy 0x{hierarchy:08x} disabled", at="hierarchy")


@command(
    TPM_CC.Hash,
    params=[("data", TPM2B_MAX_BUFFER), ("hashAlg", TPMI_ALG_HASH), ("hierarchy", TPMI_RH_HIERARCHY.plus())],
    response=[("outHash", TPM2B_DIGEST), ("validation", TPMT_TK_HASHCHECK)],
)
def hash_(ctx, data: bytes, hashAlg: int, hierarchy: int):
    _check_hierarchy(ctx, hierarchy)
    digest = HASHES[hashAlg].digest(data)
    ticket = hashcheck_ticket(ctx.engine, hierarchy, hashAlg, digest, not data.startswith(TPM_GENERATED_VALUE))
    return ctx.response(outHash=digest, validation=ticket)


def _free_transient_handle(ctx) -> int:
    """Sequences share the transient slots with loaded objects."""
    return allocate_handle(ctx.engine.volatile)


@command(
    TPM_CC.HashSequenceStart,
    params=[("auth", TPM2B_AUTH), ("hashAlg", TPMI_ALG_HASH.plus())],
    response_handles=[H("sequenceHandle", TPMI_DH_OBJECT)],
)
def hash_sequence_start(ctx, auth: bytes, hashAlg: int):
    handle = _free_transient_handle(ctx)
    algs = sorted(ctx.engine.volatile.pcrs) if hashAlg == TPM_ALG.NULL else [hashAlg]
    ctx.engine.volatile.sequences[handle] = SequenceObject(hash_alg=hashAlg, auth=auth, algs=algs)
    return ctx.response(sequenceHandle=handle)


@command(
    TPM_CC.MAC_Start,
    handles=[H("handle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[("auth", TPM2B_AUTH), ("inScheme", TPMI_ALG_MAC_SCHEME.plus())],
    response_handles=[H("sequenceHandle", TPMI_DH_OBJECT)],
)
def mac_start(ctx, handle: int, auth: bytes, inScheme: int):
    """A MAC sequence (TPM2_MAC_Start, which is TPM2_HMAC_Start for a keyed-hash key):
    SequenceUpdate feeds it, SequenceComplete returns the HMAC or CMAC (no ticket)."""
    key, alg = mac_key(ctx, handle, inScheme)
    seq_handle = _free_transient_handle(ctx)
    ctx.engine.volatile.sequences[seq_handle] = SequenceObject(
        hash_alg=alg, auth=auth, algs=[alg], hmac_key=key.sensitive
    )
    return ctx.response(sequenceHandle=seq_handle)


def _sequence(ctx, handle: int, *, event: bool | None = None) -> SequenceObject:
    """The sequence at ``handle`` (every sequence command names it sequenceHandle)."""
    seq = ctx.engine.volatile.sequences.get(handle)
    if seq is None:
        # A loaded object that is no sequence: TPM_RC_MODE (Part 3, 17.4-17.6; libtpms alike).
        raise TpmError(TPM_RC.MODE, f"0x{handle:08x} is not a sequence object", at="sequenceHandle")
    if event is not None and (seq.hash_alg == TPM_ALG.NULL) != event:
        raise TpmError(TPM_RC.MODE, "wrong kind of sequence", at="sequenceHandle")
    return seq


def _append(seq: SequenceObject, buffer: bytes) -> None:
    if seq.length == 0 and buffer.startswith(TPM_GENERATED_VALUE):
        seq.ticket_ok = False
    seq.update(buffer)


@command(
    TPM_CC.SequenceUpdate,
    handles=[H("sequenceHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[("buffer", TPM2B_MAX_BUFFER)],
)
def sequence_update(ctx, sequenceHandle: int, buffer: bytes):
    _append(_sequence(ctx, sequenceHandle), buffer)


@command(
    TPM_CC.SequenceComplete,
    handles=[H("sequenceHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[("buffer", TPM2B_MAX_BUFFER), ("hierarchy", TPMI_RH_HIERARCHY.plus())],
    response=[("result", TPM2B_DIGEST), ("validation", TPMT_TK_HASHCHECK)],
    flushed=True,
)
def sequence_complete(ctx, sequenceHandle: int, buffer: bytes, hierarchy: int):
    seq = _sequence(ctx, sequenceHandle, event=False)
    if not seq.is_hmac:  # an HMAC gets no ticket, so its hierarchy does not matter
        _check_hierarchy(ctx, hierarchy)
    _append(seq, buffer)
    digest = seq.digests()[seq.hash_alg]
    del ctx.engine.volatile.sequences[sequenceHandle]
    ticket_ok = seq.ticket_ok and not seq.is_hmac
    return ctx.response(
        result=digest, validation=hashcheck_ticket(ctx.engine, hierarchy, seq.hash_alg, digest, ticket_ok)
    )


@command(
    TPM_CC.EventSequenceComplete,
    handles=[H("pcrHandle", TPMI_DH_PCR.plus(), AuthRole.USER), H("sequenceHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[("buffer", TPM2B_MAX_BUFFER)],
    response=[("results", TPML_DIGEST_VALUES)],
    flushed=True,
)
def event_sequence_complete(ctx, pcrHandle: int, sequenceHandle: int, buffer: bytes):
    seq = _sequence(ctx, sequenceHandle, event=True)
    if pcrHandle != TPM_RH.NULL and not may_extend(pcrHandle, ctx.locality):
        raise TpmError(TPM_RC.LOCALITY, f"locality {ctx.locality} may not extend PCR {pcrHandle}")
    _append(seq, buffer)
    digests = seq.digests()
    if pcrHandle != TPM_RH.NULL:
        for alg, digest in digests.items():
            ctx.engine.pcrs.extend(pcrHandle, alg, digest)
    del ctx.engine.volatile.sequences[sequenceHandle]
    return ctx.response(results=[TPMT_HA(hashAlg=alg, digest=d) for alg, d in sorted(digests.items())])
