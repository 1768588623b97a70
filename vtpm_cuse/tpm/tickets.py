"""Tickets: HMACs under a hierarchy's proof value, so the TPM can later
recognise data it produced or checked itself (Part 1, "Tickets")."""

from __future__ import annotations

import hmac

from .constants import TPM_RH, TPM_ST

#: Data starting with this value could forge TPM-generated structures, so it never gets a ticket.
TPM_GENERATED_VALUE = b"\xffTCG"


def hierarchy_proof(engine, hierarchy: int) -> bytes:
    """The secret proof value of a hierarchy: phProof, shProof or ehProof as stored in NV
    (replaced by TPM2_ChangePPS, TPM2_Clear, TPM2_ChangeEPS -- not with the seeds), or the
    NULL hierarchy's, which changes at every TPM Reset (hierarchy.py)."""
    from .hierarchy import hierarchy_proof as stored_proof

    return stored_proof(engine, hierarchy)


#: Tickets are HMACs with the context-integrity hash, whatever the ticketed digest's algorithm.
TICKET_HASH = "sha512"


def ticket_digest(engine, tag: int, hierarchy: int, *parts: bytes) -> bytes:
    mac = hmac.new(hierarchy_proof(engine, hierarchy), digestmod=TICKET_HASH)
    mac.update(int(tag).to_bytes(2, "big"))
    for part in parts:
        mac.update(part)
    return mac.digest()


def hashcheck_ticket(engine, hierarchy: int, alg: int, digest: bytes, ticket_ok: bool):
    """TPMT_TK_HASHCHECK for ``digest``; a NULL ticket when the hierarchy is NULL or the data may not be ticketed."""
    from .types import TPMT_TK_HASHCHECK

    if hierarchy == TPM_RH.NULL or not ticket_ok:
        return TPMT_TK_HASHCHECK(tag=TPM_ST.HASHCHECK, hierarchy=TPM_RH.NULL, digest=b"")
    return TPMT_TK_HASHCHECK(
        tag=TPM_ST.HASHCHECK,
        hierarchy=hierarchy,
        digest=ticket_digest(engine, TPM_ST.HASHCHECK, hierarchy, alg.to_bytes(2, "big"), digest),
    )


def creation_ticket(engine, hierarchy: int, name: bytes, creation_hash: bytes):
    """TPMT_TK_CREATION: HMAC(proof, TPM_ST_CREATION || Name || creationHash) (Part 3, CreatePrimary).

    Unlike a hashcheck ticket, the NULL hierarchy gets a real ticket (under its
    per-reset proof), so CertifyCreation works for temporary objects until TPM Reset.
    """
    from .types import TPMT_TK_CREATION

    return TPMT_TK_CREATION(
        tag=TPM_ST.CREATION,
        hierarchy=hierarchy,
        digest=ticket_digest(engine, TPM_ST.CREATION, hierarchy, name, creation_hash),
    )
