"""How a policy assertion extends a session's policyDigest (Part 3, 23.2).

Every assertion is ``policyDigest := H(policyDigest || TPM_CC || what was asserted)``;
the authorizations by an entity (PolicySigned, PolicySecret, PolicyTicket, PolicyAuthorize)
add its Name that way and then, in a second step, the policyRef:
``policyDigest := H(policyDigest || policyRef)`` (the "PolicyUpdate" of Part 3).
"""

from __future__ import annotations

from .algorithms import hash_alg
from .sessions import Session


def policy_session(ctx, handle: int) -> Session:
    """The policy session a policy command names (the dispatcher resolved the handle)."""
    return ctx.engine.volatile.sessions.loaded[handle]


def extend(session: Session, code: int, *parts: bytes) -> None:
    policy = session.policy
    policy.digest = hash_alg(session.auth_hash).digest(policy.digest + code.to_bytes(4, "big") + b"".join(parts))


def extend_with_name_and_ref(session: Session, code: int, name: bytes, policy_ref: bytes) -> None:
    """PolicyUpdate: the entity's Name, then the policyRef in a hash of its own."""
    extend(session, code, name)
    session.policy.digest = hash_alg(session.auth_hash).digest(session.policy.digest + policy_ref)


def reset_digest(session: Session) -> None:
    """PolicyOR, PolicyAuthorize and PolicyAuthorizeNV replace the policy so far: the new
    digest starts from zeros."""
    session.policy.digest = bytes(hash_alg(session.auth_hash).digest_size)
