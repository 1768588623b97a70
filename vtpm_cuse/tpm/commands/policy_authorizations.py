"""Enhanced Authorization by another entity (Part 3, 23.3-23.5, 23.16, 23.22):
TPM2_PolicySigned, PolicySecret, PolicyTicket, PolicyAuthorize and PolicyAuthorizeNV.

PolicySigned and PolicySecret prove, now, that the holder of a key or of an entity's
authorization approved this session (bound to it by nonceTPM) or a command (cpHashA), for a
limited time (expiration); with a negative expiration they answer a TPMT_TK_AUTH that
PolicyTicket accepts later in their place (:mod:`~vtpm_cuse.tpm.policy_tickets`).
PolicyAuthorize and PolicyAuthorizeNV replace the policy so far by an approved one: signed
(a TPMT_TK_VERIFIED from TPM2_VerifySignature) or stored in an NV index.

In a trial session the digest is computed and nothing is checked.
"""

from __future__ import annotations

import dataclasses
import hmac

from ..algorithms import HASHES, hash_alg
from ..command import AuthRole, H, command
from ..constants import TPM_ALG, TPM_CC, TPM_NT, TPM_ST, TPMA_OBJECT
from ..errors import TPM_RC, TpmError, errors_at
from ..marshal import INT32, Reader
from ..nv_index import get as nv_get
from ..persistent import find_object
from ..policy_digest import extend, extend_with_name_and_ref, policy_session, reset_digest
from ..policy_hashes import CommandHashKind, check_command_hash, require_digest_size
from ..policy_tickets import (
    TICKET_COMMANDS,
    auth_ticket,
    auth_ticket_valid,
    entity_hierarchy,
    null_auth_ticket,
    parse_timeout,
    timeout_buffer,
)
from ..policy_time import auth_timeout, require_unexpired
from ..sessions import Session
from ..signing import verify
from ..tickets import ticket_digest
from ..types import (
    TPM2B_DIGEST,
    TPM2B_NAME,
    TPM2B_NONCE,
    TPM2B_TIMEOUT,
    TPMI_DH_ENTITY,
    TPMI_DH_OBJECT,
    TPMI_RH_NV_AUTH,
    TPMI_RH_NV_INDEX,
    TPMI_SH_POLICY,
    TPMT_HA,
    TPMT_SIGNATURE,
    TPMT_TK_AUTH,
    TPMT_TK_VERIFIED,
)
from .nv import read_checks

POLICY_SESSION = H("policySession", TPMI_SH_POLICY)
#: The parameters PolicySigned and PolicySecret share, in Part 3's order.
_AUTHORIZATION_PARAMS = [
    ("nonceTPM", TPM2B_NONCE),
    ("cpHashA", TPM2B_DIGEST),
    ("policyRef", TPM2B_NONCE),
    ("expiration", INT32),
]
_TICKET_RESPONSE = [("timeout", TPM2B_TIMEOUT), ("policyTicket", TPMT_TK_AUTH)]
#: A Name is a nameAlg (UINT16) and a digest.
_NAME_ALG_SIZE = 2


def _check_nonce(session: Session, nonce: bytes) -> None:
    """A nonceTPM, when given, binds the authorization to this session (TPM_RC_NONCE)."""
    if nonce and not hmac.compare_digest(nonce, session.nonce_tpm):
        raise TpmError(TPM_RC.NONCE, "nonceTPM is not the session's current nonce", at="nonceTPM")


def _check_limits(ctx, session: Session, cp_hash: bytes, timeout: int) -> None:
    """What PolicySigned, PolicySecret and PolicyTicket check after the nonce: the time limit
    has not passed (a bare TPM_RC_EXPIRED the caller places) and a cpHashA has the session's
    digest size and agrees with a cpHash already asserted (TPM_RC_CPHASH)."""
    require_unexpired(ctx.engine, session, timeout)
    if cp_hash:
        require_digest_size(session, cp_hash, "cpHashA")
        check_command_hash(session, CommandHashKind.CP, cp_hash, repeatable=True)


def _assert(session: Session, code: int, name: bytes, ref: bytes, cp_hash: bytes, timeout: int) -> None:
    """Extend the digest with the authorizing entity and record the cpHashA and the time limit."""
    if cp_hash:
        # Checked by _check_limits in a real session; a trial session records it unchecked.
        session.policy.command_hash, session.policy.command_hash_kind = cp_hash, CommandHashKind.CP
    extend_with_name_and_ref(session, code, name, ref)
    policy = session.policy
    if timeout and (policy.timeout == 0 or timeout < policy.timeout):
        policy.timeout = timeout


@dataclasses.dataclass(frozen=True)
class _Authorization:
    """What a PolicySigned / PolicySecret ticket is for."""

    tag: int
    handle: int
    name: bytes
    cp_hash: bytes
    ref: bytes


def _ticket_response(ctx, session: Session, auth: _Authorization, expiration: int, timeout: int):
    """A ticket for a negative expiration in a real session; an empty timeout and a NULL ticket otherwise."""
    if expiration >= 0 or session.is_trial:
        return ctx.response(timeout=b"", policyTicket=null_auth_ticket(auth.tag))
    hierarchy = entity_hierarchy(ctx.engine, auth.handle)
    ticket = auth_ticket(ctx.engine, auth.tag, hierarchy, timeout, auth.cp_hash, auth.ref, auth.name)
    return ctx.response(timeout=timeout_buffer(timeout), policyTicket=ticket)


def _signature_hash(signature) -> int:
    body = signature.signature
    return body.hashAlg if hasattr(body, "hashAlg") else body.hash


@command(
    TPM_CC.PolicySigned,
    handles=[H("authObject", TPMI_DH_OBJECT), POLICY_SESSION],
    params=[*_AUTHORIZATION_PARAMS, ("auth", TPMT_SIGNATURE)],
    response=_TICKET_RESPONSE,
)
def policy_signed(
    ctx, authObject: int, policySession: int, nonceTPM: bytes, cpHashA: bytes, policyRef: bytes, expiration: int, auth
):
    session = policy_session(ctx, policySession)
    timeout = 0
    if not session.is_trial:
        timeout = auth_timeout(ctx.engine, session, expiration, nonceTPM)
        _check_nonce(session, nonceTPM)
        with errors_at("expiration"):
            _check_limits(ctx, session, cpHashA, timeout)
        obj = find_object(ctx.engine, authObject)
        if obj is None:
            raise TpmError(TPM_RC.HANDLE, f"0x{authObject:08x} is not a key", at="authObject")
        # aHash := H_sigHash(nonceTPM || expiration || cpHashA || policyRef)
        signed = nonceTPM + INT32.pack(expiration) + cpHashA + policyRef
        with errors_at("auth"):
            if not obj.attributes & TPMA_OBJECT.sign:
                raise TpmError(TPM_RC.ATTRIBUTES, f"0x{authObject:08x} is not a signing key")
            verify(obj, auth, hash_alg(_signature_hash(auth)).digest(signed))
    name = ctx.entity("authObject").name
    _assert(session, TPM_CC.PolicySigned, name, policyRef, cpHashA, timeout)
    signer = _Authorization(TPM_ST.AUTH_SIGNED, authObject, name, cpHashA, policyRef)
    return _ticket_response(ctx, session, signer, expiration, timeout)


def _is_pin_pass(ctx, handle: int) -> bool:
    nv = nv_get(ctx.engine, handle)
    return nv is not None and nv.nt == TPM_NT.PIN_PASS


@command(
    TPM_CC.PolicySecret,
    handles=[H("authHandle", TPMI_DH_ENTITY, AuthRole.USER), POLICY_SESSION],
    params=_AUTHORIZATION_PARAMS,
    response=_TICKET_RESPONSE,
)
def policy_secret(
    ctx, authHandle: int, policySession: int, nonceTPM: bytes, cpHashA: bytes, policyRef: bytes, expiration: int
):
    """The authorization of authHandle (checked by the dispatcher) is the assertion."""
    session = policy_session(ctx, policySession)
    timeout = 0
    if not session.is_trial:
        timeout = auth_timeout(ctx.engine, session, expiration, nonceTPM)
        _check_nonce(session, nonceTPM)
        with errors_at("expiration"):
            _check_limits(ctx, session, cpHashA, timeout)
    name = ctx.entity("authHandle").name
    _assert(session, TPM_CC.PolicySecret, name, policyRef, cpHashA, timeout)
    # A PIN Pass index counts every use: a ticket would let it be used without counting.
    if _is_pin_pass(ctx, authHandle):
        expiration = max(expiration, 0)
    secret = _Authorization(TPM_ST.AUTH_SECRET, authHandle, name, cpHashA, policyRef)
    return _ticket_response(ctx, session, secret, expiration, timeout)


@command(
    TPM_CC.PolicyTicket,
    handles=[POLICY_SESSION],
    params=[
        ("timeout", TPM2B_TIMEOUT),
        ("cpHashA", TPM2B_DIGEST),
        ("policyRef", TPM2B_NONCE),
        ("authName", TPM2B_NAME),
        ("ticket", TPMT_TK_AUTH),
    ],
)
def policy_ticket(ctx, policySession: int, timeout: bytes, cpHashA: bytes, policyRef: bytes, authName: bytes, ticket):
    session = policy_session(ctx, policySession)
    if session.is_trial:
        # A trial session asserts the authorization itself, not a ticket for it.
        raise TpmError(TPM_RC.ATTRIBUTES, "a trial session cannot use a ticket", at="policySession")
    limit = parse_timeout(timeout)
    with errors_at("timeout"):
        _check_limits(ctx, session, cpHashA, limit)
    if not auth_ticket_valid(ctx.engine, ticket, limit, cpHashA, policyRef, authName):
        raise TpmError(TPM_RC.TICKET, "the ticket is not this TPM's for these parameters", at="ticket")
    _assert(session, TICKET_COMMANDS[ticket.tag], authName, policyRef, cpHashA, limit)


def _name_alg(key_sign: bytes) -> int:
    """The hash algorithm of a Name (TPM_RC_SIZE / TPM_RC_HASH at keySign when it is none)."""
    # Too short to hold an algorithm is as bad as a Name of no hash algorithm (what libtpms answers).
    alg = int.from_bytes(key_sign[:_NAME_ALG_SIZE], "big") if len(key_sign) >= _NAME_ALG_SIZE else TPM_ALG.ERROR
    if alg not in HASHES:
        raise TpmError(TPM_RC.HASH, f"Name algorithm 0x{alg:04x}", at="keySign")
    if len(key_sign) != _NAME_ALG_SIZE + hash_alg(alg).digest_size:
        raise TpmError(TPM_RC.SIZE, f"a {len(key_sign)}-octet Name with algorithm 0x{alg:04x}", at="keySign")
    return alg


@command(
    TPM_CC.PolicyAuthorize,
    handles=[POLICY_SESSION],
    params=[
        ("approvedPolicy", TPM2B_DIGEST),
        ("policyRef", TPM2B_NONCE),
        ("keySign", TPM2B_NAME),
        ("checkTicket", TPMT_TK_VERIFIED),
    ],
)
def policy_authorize(ctx, policySession: int, approvedPolicy: bytes, policyRef: bytes, keySign: bytes, checkTicket):
    session = policy_session(ctx, policySession)
    alg = _name_alg(keySign)
    if not session.is_trial:
        if not hmac.compare_digest(approvedPolicy, session.policy.digest):
            raise TpmError(TPM_RC.VALUE, "approvedPolicy is not the current policyDigest", at="approvedPolicy")
        # keySign signed aHash := H_nameAlg(approvedPolicy || policyRef); VerifySignature said so.
        approval = hash_alg(alg).digest(approvedPolicy + policyRef)
        expected = ticket_digest(ctx.engine, TPM_ST.VERIFIED, checkTicket.hierarchy, approval, keySign)
        if not hmac.compare_digest(expected, checkTicket.digest):
            raise TpmError(TPM_RC.VALUE, "checkTicket does not verify keySign's approval", at="checkTicket")
    reset_digest(session)
    extend_with_name_and_ref(session, TPM_CC.PolicyAuthorize, keySign, policyRef)


@command(
    TPM_CC.PolicyAuthorizeNV,
    handles=[H("authHandle", TPMI_RH_NV_AUTH, AuthRole.USER), H("nvIndex", TPMI_RH_NV_INDEX), POLICY_SESSION],
)
def policy_authorize_nv(ctx, authHandle: int, nvIndex: int, policySession: int):
    """The approved policy is the TPMT_HA at the start of the index's data."""
    session = policy_session(ctx, policySession)
    if not session.is_trial:
        nv = nv_get(ctx.engine, nvIndex)
        read_checks(authHandle, nv)
        stored = TPMT_HA.unmarshal(Reader(nv.data[: nv.data_size]))
        if stored.hashAlg != session.auth_hash:
            raise TpmError(TPM_RC.HASH, f"the index holds a 0x{stored.hashAlg:04x} policy", at="nvIndex")
        if not hmac.compare_digest(stored.digest, session.policy.digest):
            raise TpmError(TPM_RC.VALUE, "policyDigest is not the policy in the index")
    reset_digest(session)
    extend(session, TPM_CC.PolicyAuthorizeNV, ctx.entity("nvIndex").name)
