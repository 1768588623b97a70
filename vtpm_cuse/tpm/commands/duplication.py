"""Duplication commands (Part 3, clause 13): TPM2_Duplicate, TPM2_Rewrap, TPM2_Import.

A duplicable object (fixedParent CLEAR) leaves the TPM as a duplicate: its
TPM2B_SENSITIVE under an optional inner wrapper, keyed by a symmetric key the
caller gives or the TPM makes, and an outer wrapper keyed from a seed that only
the new parent's private key recovers (:mod:`~vtpm_cuse.tpm.secret_exchange`,
label "DUPLICATE").  Without a new parent (TPM_RH_NULL) there is no outer
wrapper.  An object with encryptedDuplication SET may only travel with both.

Rewrap moves the outer wrapper from one parent to another without seeing the
inner content; Import turns a duplicate into an ordinary private blob under a
storage parent.  The wrappers themselves are :mod:`~vtpm_cuse.tpm.protection`'s.
"""

from __future__ import annotations

from ..algorithms import hash_alg
from ..command import AuthRole, H, command
from ..constants import TPM_ALG, TPM_CC, TPM_RH, TPMA_OBJECT
from ..errors import TPM_RC, TpmError, errors_at
from ..objects import LoadedObject, object_name
from ..protection import (
    duplicate_outer_unwrap,
    duplicate_outer_wrap,
    duplicate_to_sensitive,
    sensitive_to_duplicate,
    wrap_sensitive,
)
from ..secret_exchange import DUPLICATE_LABEL, decrypt_secret, encrypt_secret
from ..types import (
    MAX_PRIVATE_SIZE,
    TPM2B_DATA,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_NAME,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPMI_DH_OBJECT,
    TPMT_PUBLIC,
    TPMT_SYM_DEF_OBJECT_PLUS,
)
from .object import loadable_checks, loaded_object, storage_parent

#: An outer wrapper adds a TPM2B_DIGEST: its size field and one digest of the parent's nameAlg.
OUTER_INTEGRITY_OVERHEAD = 2


def _inner_key_size(symmetric) -> int:
    """Octets of the inner wrapper's key for a (non-NULL) TPMT_SYM_DEF_OBJECT."""
    return (symmetric.keyBits + 7) // 8


def _check_inner_key(symmetric, key: bytes, may_be_empty: bool) -> None:
    """The caller's inner-wrapper key fits ``symmetric``: none without an algorithm, else exactly
    the key size (Duplicate may leave it empty, asking the TPM for one).  Bare TPM_RC_SIZE."""
    if symmetric.algorithm == TPM_ALG.NULL:
        if key:
            raise TpmError(TPM_RC.SIZE, f"a key of {len(key)} octets for no inner wrapper")
    elif (key or not may_be_empty) and len(key) != _inner_key_size(symmetric):
        raise TpmError(TPM_RC.SIZE, f"a key of {len(key)} octets, the algorithm takes {_inner_key_size(symmetric)}")


def _parent_or_null(ctx, handle: int, at: str) -> LoadedObject | None:
    """A storage parent, or None for TPM_RH_NULL (no outer wrapper)."""
    if handle == TPM_RH.NULL:
        return None
    return storage_parent(ctx, handle, at=at)


@command(
    TPM_CC.Duplicate,
    handles=[H("objectHandle", TPMI_DH_OBJECT, AuthRole.DUP), H("newParentHandle", TPMI_DH_OBJECT.plus())],
    params=[("encryptionKeyIn", TPM2B_DATA), ("symmetricAlg", TPMT_SYM_DEF_OBJECT_PLUS)],
    response=[("encryptionKeyOut", TPM2B_DATA), ("duplicate", TPM2B_PRIVATE), ("outSymSeed", TPM2B_ENCRYPTED_SECRET)],
)
def duplicate(ctx, objectHandle: int, newParentHandle: int, encryptionKeyIn: bytes, symmetricAlg):
    """Export a duplicable object for ``newParentHandle``; encryptionKeyOut is the inner key the
    TPM made, empty when the caller gave one or asked for no inner wrapper."""
    obj = loaded_object(ctx, objectHandle, at="objectHandle")
    attrs = obj.attributes
    if attrs & TPMA_OBJECT.fixedParent:
        raise TpmError(TPM_RC.ATTRIBUTES, "a fixedParent object cannot be duplicated", at="objectHandle")
    if obj.name_alg == TPM_ALG.NULL:
        raise TpmError(TPM_RC.TYPE, "an object without a Name cannot be duplicated", at="objectHandle")
    new_parent = _parent_or_null(ctx, newParentHandle, at="newParentHandle")
    inner = symmetricAlg.algorithm != TPM_ALG.NULL
    if attrs & TPMA_OBJECT.encryptedDuplication:
        if not inner:
            raise TpmError(TPM_RC.SYMMETRIC, "encryptedDuplication needs an inner wrapper", at="symmetricAlg")
        if new_parent is None:
            raise TpmError(TPM_RC.HIERARCHY, "encryptedDuplication needs a new parent", at="newParentHandle")
    with errors_at("encryptionKeyIn"):
        _check_inner_key(symmetricAlg, encryptionKeyIn, may_be_empty=True)
    random = ctx.engine.random
    seed, out_seed = b"", b""
    if new_parent is not None:
        with errors_at("newParentHandle"):
            seed, out_seed = encrypt_secret(new_parent, DUPLICATE_LABEL, random)
    generated = random(_inner_key_size(symmetricAlg)) if inner and not encryptionKeyIn else b""
    inner_key = (encryptionKeyIn or generated) if inner else None
    blob = sensitive_to_duplicate(obj.sensitive_area(), obj.name, obj.name_alg, new_parent, seed, inner_key)
    return ctx.response(encryptionKeyOut=generated, duplicate=blob, outSymSeed=out_seed)


@command(
    TPM_CC.Rewrap,
    handles=[H("oldParent", TPMI_DH_OBJECT.plus(), AuthRole.USER), H("newParent", TPMI_DH_OBJECT.plus())],
    params=[("inDuplicate", TPM2B_PRIVATE), ("name", TPM2B_NAME), ("inSymSeed", TPM2B_ENCRYPTED_SECRET)],
    response=[("outDuplicate", TPM2B_PRIVATE), ("outSymSeed", TPM2B_ENCRYPTED_SECRET)],
)
def rewrap(ctx, oldParent: int, newParent: int, inDuplicate: bytes, name: bytes, inSymSeed: bytes):
    """Replace a duplicate's outer wrapper (for ``oldParent``) by one for ``newParent``; the
    content, inner wrapper included, is passed on untouched."""
    if (oldParent == TPM_RH.NULL) != (not inSymSeed):
        raise TpmError(TPM_RC.HANDLE, "a seed goes with an old parent, and only with one", at="oldParent")
    content = inDuplicate
    old = _parent_or_null(ctx, oldParent, at="oldParent")
    if old is not None:
        try:
            seed = decrypt_secret(old, DUPLICATE_LABEL, inSymSeed)
        except TpmError as err:
            raise TpmError(TPM_RC.VALUE, f"inSymSeed: {err.detail}", at="inSymSeed") from None
        with errors_at("inDuplicate"):
            content = duplicate_outer_unwrap(old, seed, name, inDuplicate)
    new = _parent_or_null(ctx, newParent, at="newParent")
    if new is None:
        return ctx.response(outDuplicate=content, outSymSeed=b"")
    with errors_at("newParent"):
        seed, out_seed = encrypt_secret(new, DUPLICATE_LABEL, ctx.engine.random)
    if len(content) + OUTER_INTEGRITY_OVERHEAD + hash_alg(new.name_alg).digest_size > MAX_PRIVATE_SIZE:
        raise TpmError(TPM_RC.VALUE, "the duplicate does not fit an outer wrapper", at="inDuplicate")
    return ctx.response(outDuplicate=duplicate_outer_wrap(new, seed, name, content), outSymSeed=out_seed)


@command(
    TPM_CC.Import,
    handles=[H("parentHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[
        ("encryptionKey", TPM2B_DATA),
        ("objectPublic", TPM2B_PUBLIC),
        ("duplicate", TPM2B_PRIVATE),
        ("inSymSeed", TPM2B_ENCRYPTED_SECRET),
        ("symmetricAlg", TPMT_SYM_DEF_OBJECT_PLUS),
    ],
    response=[("outPrivate", TPM2B_PRIVATE)],
)
def import_(
    ctx, parentHandle: int, encryptionKey: bytes, objectPublic, duplicate: bytes, inSymSeed: bytes, symmetricAlg
):
    """Turn a duplicate into a private blob under ``parentHandle`` (loaded with TPM2_Load)."""
    attrs = objectPublic.objectAttributes
    if attrs & (TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent):
        raise TpmError(TPM_RC.ATTRIBUTES, "a fixedTPM or fixedParent object is never duplicated", at="objectPublic")
    parent = storage_parent(ctx, parentHandle, at="parentHandle")
    with errors_at("encryptionKey"):
        _check_inner_key(symmetricAlg, encryptionKey, may_be_empty=False)
    inner = symmetricAlg.algorithm != TPM_ALG.NULL
    if not inner and attrs & TPMA_OBJECT.encryptedDuplication:
        raise TpmError(TPM_RC.ATTRIBUTES, "encryptedDuplication needs an inner wrapper", at="encryptionKey")
    seed = None
    if inSymSeed:
        if parent.type == TPM_ALG.SYMCIPHER:
            raise TpmError(TPM_RC.TYPE, "a symmetric parent cannot recover a seed", at="parentHandle")
        with errors_at("inSymSeed"):
            seed = decrypt_secret(parent, DUPLICATE_LABEL, inSymSeed)
    elif attrs & TPMA_OBJECT.encryptedDuplication:
        raise TpmError(TPM_RC.ATTRIBUTES, "encryptedDuplication needs an outer wrapper", at="inSymSeed")
    if objectPublic.nameAlg == TPM_ALG.NULL:
        raise TpmError(TPM_RC.HASH, "an object without nameAlg has no Name", at="objectPublic")
    name = object_name(objectPublic.nameAlg, TPMT_PUBLIC.pack(objectPublic))
    with errors_at("duplicate"):
        sensitive = duplicate_to_sensitive(
            duplicate, name, objectPublic.nameAlg, parent, seed, encryptionKey if inner else None
        )
    if parent.attributes & TPMA_OBJECT.fixedTPM:
        # Checked now as TPM2_Load would, so that what this TPM re-protects is loadable.
        loadable_checks(objectPublic, parent, sensitive, public_at="objectPublic", private_at="duplicate")
    return ctx.response(outPrivate=wrap_sensitive(parent, name, sensitive, ctx.engine.random))
