"""Signing and signature verification (Part 3, clause 20): TPM2_VerifySignature and TPM2_Sign.

The cryptography and the scheme and ticket rules live in :mod:`~vtpm_cuse.tpm.signing`,
which the attestation commands share; these handlers add the order of the checks and
where each error is reported, as the reference TPM does.
"""

from __future__ import annotations

from ..algorithms import hash_alg
from ..command import AuthRole, H, command
from ..constants import TPM_CC, TPMA_OBJECT
from ..errors import TPM_RC, TpmError, errors_at
from ..objects import LoadedObject
from ..persistent import find_object
from ..signing import hashcheck_valid, is_signing_key, select_scheme, sign, verified_ticket, verify
from ..types import (
    TPM2B_DIGEST,
    TPMI_DH_OBJECT,
    TPMT_SIG_SCHEME_PLUS,
    TPMT_SIGNATURE,
    TPMT_SIGNATURE_PLUS,
    TPMT_TK_HASHCHECK,
    TPMT_TK_VERIFIED,
)


def _signing_key(ctx, handle: int) -> LoadedObject:
    """The key at keyHandle, which must hold a private part that may sign (TPM_RC_KEY otherwise:
    a sequence, a decryption key, a symmetric cipher, or a public-only key)."""
    obj = find_object(ctx.engine, handle)
    if obj is None or not is_signing_key(obj):
        raise TpmError(TPM_RC.KEY, f"0x{handle:08x} is not a signing key", at="keyHandle")
    if obj.public_only:
        raise TpmError(TPM_RC.KEY, f"0x{handle:08x} is public only and cannot sign", at="keyHandle")
    if obj.attributes & TPMA_OBJECT.x509sign:
        raise TpmError(TPM_RC.ATTRIBUTES, "an x509sign key signs only with TPM2_CertifyX509", at="keyHandle")
    return obj


@command(
    TPM_CC.VerifySignature,
    handles=[H("keyHandle", TPMI_DH_OBJECT)],
    params=[("digest", TPM2B_DIGEST), ("signature", TPMT_SIGNATURE)],
    response=[("validation", TPMT_TK_VERIFIED)],
)
def verify_signature(ctx, keyHandle: int, digest: bytes, signature):
    obj = find_object(ctx.engine, keyHandle)
    if obj is None or not obj.attributes & TPMA_OBJECT.sign:
        raise TpmError(TPM_RC.ATTRIBUTES, f"0x{keyHandle:08x} is not a signing key", at="keyHandle")
    with errors_at("signature"):
        verify(obj, signature, digest)
    return ctx.response(validation=verified_ticket(ctx.engine, obj, digest))


@command(
    TPM_CC.Sign,
    handles=[H("keyHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[("digest", TPM2B_DIGEST), ("inScheme", TPMT_SIG_SCHEME_PLUS), ("validation", TPMT_TK_HASHCHECK)],
    response=[("signature", TPMT_SIGNATURE_PLUS)],
    cancelable=True,
)
def sign_(ctx, keyHandle: int, digest: bytes, inScheme, validation):
    obj = _signing_key(ctx, keyHandle)
    with errors_at("inScheme"):
        scheme = select_scheme(obj, inScheme)
    alg = scheme.details.hashAlg
    # A restricted key signs only what the TPM hashed itself, so it never signs a digest of
    # data that could pass for a TPM-generated structure (which gets no ticket).
    if validation.digest or obj.attributes & TPMA_OBJECT.restricted:
        if not hashcheck_valid(ctx.engine, validation, alg, digest):
            raise TpmError(TPM_RC.TICKET, "the hashcheck ticket does not match the digest", at="validation")
    elif len(digest) != hash_alg(alg).digest_size:
        raise TpmError(TPM_RC.SIZE, f"a {len(digest)}-octet digest for hash 0x{alg:04x}", at="digest")
    return ctx.response(signature=sign(obj, scheme, digest))
