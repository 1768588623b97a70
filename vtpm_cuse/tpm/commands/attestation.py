"""Attestation commands (Part 3, clause 18): Certify, CertifyCreation, Quote,
GetSessionAuditDigest, GetCommandAuditDigest, GetTime, and NV_Certify (31.16), which signs
the same TPMS_ATTEST; and CertifyX509, which signs an X.509 TBSCertificate instead
(:mod:`~vtpm_cuse.tpm.x509_tbs`).

Each handler checks its own inputs, picks the signer (:func:`_signer`: the key at
signHandle and the scheme chosen as for TPM2_Sign, or nobody for TPM_RH_NULL), builds its
TPMU_ATTEST member and lets :func:`~vtpm_cuse.tpm.attest.attest` add the common header and
sign.  The order of the checks and where each error lands are the reference TPM's: the
signing key (TPM_RC_KEY at signHandle), the scheme (TPM_RC_SCHEME at inScheme), then the
command's own.  The audit digests themselves are kept by :mod:`~vtpm_cuse.tpm.audit`;
SetCommandCodeAuditStatus is in :mod:`.audit`.
"""

from __future__ import annotations

import hmac

from ..attest import Signer, attest, firmware_version
from ..audit import audit_alg, command_digest, reset_command_audit
from ..command import AuthRole, H, command
from ..constants import MAX_NV_BUFFER_SIZE, TPM_CC, TPM_RH, TPM_ST
from ..errors import TPM_RC, TpmError, errors_at
from ..marshal import UINT16
from ..nv_index import get as nv_get
from ..pcr_selection import filter_selection, selection_digest
from ..persistent import find_object
from ..signing import is_signing_key, select_scheme
from ..tickets import creation_ticket
from ..types import (
    TPM2B_ATTEST,
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_MAX_BUFFER,
    TPMI_DH_OBJECT,
    TPMI_RH_ENDORSEMENT,
    TPMI_RH_NV_AUTH,
    TPMI_RH_NV_INDEX,
    TPMI_SH_HMAC,
    TPML_PCR_SELECTION,
    TPMS_CERTIFY_INFO,
    TPMS_COMMAND_AUDIT_INFO,
    TPMS_CREATION_INFO,
    TPMS_NV_CERTIFY_INFO,
    TPMS_NV_DIGEST_CERTIFY_INFO,
    TPMS_QUOTE_INFO,
    TPMS_SESSION_AUDIT_INFO,
    TPMS_TIME_ATTEST_INFO,
    TPMT_SIG_SCHEME_PLUS,
    TPMT_SIGNATURE_PLUS,
    TPMT_TK_CREATION,
)
from ..x509_tbs import check_extensions, complete, parse_partial, signature_algorithm, subject_public_key_info
from .clock import time_info
from .nv import read_checks

#: signHandle of every attestation: a signing key, or TPM_RH_NULL for an unsigned attestation.
SIGN_HANDLE = H("signHandle", TPMI_DH_OBJECT.plus(), AuthRole.USER)
SIGNED = [("signature", TPMT_SIGNATURE_PLUS)]


def _signer(ctx, signHandle: int, inScheme) -> Signer:
    """The key at signHandle (which must be able to sign) and the scheme it signs with."""
    if signHandle == TPM_RH.NULL:
        return Signer(None)
    key = find_object(ctx.engine, signHandle)
    if key is None or not is_signing_key(key) or key.public_only:
        raise TpmError(TPM_RC.KEY, f"0x{signHandle:08x} is not a key that can sign", at="signHandle")
    with errors_at("inScheme"):
        scheme = select_scheme(key, inScheme)
    return Signer(key, scheme)


def _attest(ctx, signer: Signer, kind: int, qualifyingData: bytes, attested) -> tuple[bytes, object]:
    return attest(ctx.engine, signer, kind, qualifyingData, time_info(ctx.engine).clockInfo, attested)


# --- 18.2 TPM2_Certify ------------------------------------------------------------------------------


@command(
    TPM_CC.Certify,
    handles=[H("objectHandle", TPMI_DH_OBJECT, AuthRole.ADMIN), SIGN_HANDLE],
    params=[("qualifyingData", TPM2B_DATA), ("inScheme", TPMT_SIG_SCHEME_PLUS)],
    response=[("certifyInfo", TPM2B_ATTEST), *SIGNED],
)
def certify(ctx, objectHandle: int, signHandle: int, qualifyingData: bytes, inScheme):
    signer = _signer(ctx, signHandle, inScheme)
    obj = find_object(ctx.engine, objectHandle)
    if obj is None:
        raise TpmError(TPM_RC.HANDLE, f"0x{objectHandle:08x} is not an object", at="objectHandle")
    info = TPMS_CERTIFY_INFO(name=obj.name, qualifiedName=obj.qualified_name)
    body, signature = _attest(ctx, signer, TPM_ST.ATTEST_CERTIFY, qualifyingData, info)
    return ctx.response(certifyInfo=body, signature=signature)


# --- 18.3 TPM2_CertifyCreation ----------------------------------------------------------------------


@command(
    TPM_CC.CertifyCreation,
    handles=[SIGN_HANDLE, H("objectHandle", TPMI_DH_OBJECT)],
    params=[
        ("qualifyingData", TPM2B_DATA),
        ("creationHash", TPM2B_DIGEST),
        ("inScheme", TPMT_SIG_SCHEME_PLUS),
        ("creationTicket", TPMT_TK_CREATION),
    ],
    response=[("certifyInfo", TPM2B_ATTEST), *SIGNED],
)
def certify_creation(
    ctx, signHandle: int, objectHandle: int, qualifyingData: bytes, creationHash: bytes, inScheme, creationTicket
):
    signer = _signer(ctx, signHandle, inScheme)
    obj = find_object(ctx.engine, objectHandle)
    if obj is None:
        raise TpmError(TPM_RC.HANDLE, f"0x{objectHandle:08x} is not an object", at="objectHandle")
    # The ticket says this TPM created the object with that creationHash (creation.py).
    expected = creation_ticket(ctx.engine, creationTicket.hierarchy, obj.name, creationHash)
    if not hmac.compare_digest(expected.digest, creationTicket.digest):
        raise TpmError(
            TPM_RC.TICKET, "the creation ticket is not for this object and creationHash", at="creationTicket"
        )
    info = TPMS_CREATION_INFO(objectName=obj.name, creationHash=creationHash)
    body, signature = _attest(ctx, signer, TPM_ST.ATTEST_CREATION, qualifyingData, info)
    return ctx.response(certifyInfo=body, signature=signature)


# --- 18.4 TPM2_Quote ------------------------------------------------------------------------------


@command(
    TPM_CC.Quote,
    handles=[SIGN_HANDLE],
    params=[("qualifyingData", TPM2B_DATA), ("inScheme", TPMT_SIG_SCHEME_PLUS), ("PCRselect", TPML_PCR_SELECTION)],
    response=[("quoted", TPM2B_ATTEST), *SIGNED],
)
def quote(ctx, signHandle: int, qualifyingData: bytes, inScheme, PCRselect: list):
    if signHandle == TPM_RH.NULL:
        # Unlike the other attestations, a quote must be signed: pcrDigest is computed with
        # the signing scheme's hash, and there is none (the reference TPM refuses it here).
        raise TpmError(TPM_RC.SCHEME, "TPM2_Quote needs a signing key for the pcrDigest hash", at="inScheme")
    signer = _signer(ctx, signHandle, inScheme)
    banks = ctx.engine.volatile.pcrs
    selection, _ = filter_selection(banks, PCRselect)
    info = TPMS_QUOTE_INFO(pcrSelect=selection, pcrDigest=selection_digest(banks, signer.hash_alg, selection))
    body, signature = _attest(ctx, signer, TPM_ST.ATTEST_QUOTE, qualifyingData, info)
    return ctx.response(quoted=body, signature=signature)


# --- 18.5 TPM2_GetSessionAuditDigest ----------------------------------------------------------------


@command(
    TPM_CC.GetSessionAuditDigest,
    handles=[
        H("privacyAdminHandle", TPMI_RH_ENDORSEMENT, AuthRole.USER),
        SIGN_HANDLE,
        H("sessionHandle", TPMI_SH_HMAC),
    ],
    params=[("qualifyingData", TPM2B_DATA), ("inScheme", TPMT_SIG_SCHEME_PLUS)],
    response=[("auditInfo", TPM2B_ATTEST), *SIGNED],
)
def get_session_audit_digest(
    ctx, privacyAdminHandle: int, signHandle: int, sessionHandle: int, qualifyingData: bytes, inScheme
):
    signer = _signer(ctx, signHandle, inScheme)
    session = ctx.engine.volatile.sessions.loaded[sessionHandle]  # the handle area found it loaded
    if not session.audit_digest:
        raise TpmError(TPM_RC.TYPE, f"session 0x{sessionHandle:08x} has audited nothing", at="sessionHandle")
    exclusive = ctx.engine.volatile.exclusive_audit == sessionHandle
    info = TPMS_SESSION_AUDIT_INFO(exclusiveSession=int(exclusive), sessionDigest=session.audit_digest)
    body, signature = _attest(ctx, signer, TPM_ST.ATTEST_SESSION_AUDIT, qualifyingData, info)
    return ctx.response(auditInfo=body, signature=signature)


# --- 18.6 TPM2_GetCommandAuditDigest ----------------------------------------------------------------


@command(
    TPM_CC.GetCommandAuditDigest,
    handles=[H("privacyHandle", TPMI_RH_ENDORSEMENT, AuthRole.USER), SIGN_HANDLE],
    params=[("qualifyingData", TPM2B_DATA), ("inScheme", TPMT_SIG_SCHEME_PLUS)],
    response=[("auditInfo", TPM2B_ATTEST), *SIGNED],
    nv=True,
)
def get_command_audit_digest(ctx, privacyHandle: int, signHandle: int, qualifyingData: bytes, inScheme):
    signer = _signer(ctx, signHandle, inScheme)
    engine = ctx.engine
    info = TPMS_COMMAND_AUDIT_INFO(
        auditCounter=engine.permanent.audit_counter,
        digestAlg=audit_alg(engine),
        auditDigest=engine.permanent.audit_digest,
        commandDigest=command_digest(engine),
    )
    body, signature = _attest(ctx, signer, TPM_ST.ATTEST_COMMAND_AUDIT, qualifyingData, info)
    if signer.key is not None:
        # A signed digest closes the audit sequence; an unsigned one only reads it (as libtpms).
        reset_command_audit(engine)
    return ctx.response(auditInfo=body, signature=signature)


# --- 18.7 TPM2_GetTime ----------------------------------------------------------------------------


@command(
    TPM_CC.GetTime,
    handles=[H("privacyAdminHandle", TPMI_RH_ENDORSEMENT, AuthRole.USER), SIGN_HANDLE],
    params=[("qualifyingData", TPM2B_DATA), ("inScheme", TPMT_SIG_SCHEME_PLUS)],
    response=[("timeInfo", TPM2B_ATTEST), *SIGNED],
)
def get_time(ctx, privacyAdminHandle: int, signHandle: int, qualifyingData: bytes, inScheme):
    signer = _signer(ctx, signHandle, inScheme)
    now = time_info(ctx.engine)
    info = TPMS_TIME_ATTEST_INFO(time=now, firmwareVersion=firmware_version())
    body, signature = attest(ctx.engine, signer, TPM_ST.ATTEST_TIME, qualifyingData, now.clockInfo, info)
    return ctx.response(timeInfo=body, signature=signature)


# --- 18.8 TPM2_CertifyX509 ------------------------------------------------------------------------


@command(
    TPM_CC.CertifyX509,
    handles=[H("objectHandle", TPMI_DH_OBJECT, AuthRole.ADMIN), SIGN_HANDLE],
    params=[("reserved", TPM2B_DATA), ("inScheme", TPMT_SIG_SCHEME_PLUS), ("partialCertificate", TPM2B_MAX_BUFFER)],
    response=[("addedToCertificate", TPM2B_MAX_BUFFER), ("tbsDigest", TPM2B_DIGEST), *SIGNED],
)
def certify_x509(ctx, objectHandle: int, signHandle: int, reserved: bytes, inScheme, partialCertificate: bytes):
    if reserved:
        raise TpmError(TPM_RC.SIZE, f"reserved must be empty, not {len(reserved)} octets", at="reserved")
    if signHandle == TPM_RH.NULL:
        # A certificate is its signature: there is no unsigned form (libtpms would crash here).
        raise TpmError(TPM_RC.KEY, "TPM2_CertifyX509 needs a signing key, not TPM_RH_NULL", at="signHandle")
    signer = _signer(ctx, signHandle, inScheme)
    obj = find_object(ctx.engine, objectHandle)
    if obj is None:
        raise TpmError(TPM_RC.HANDLE, f"0x{objectHandle:08x} is not an object", at="objectHandle")
    spki = subject_public_key_info(obj)
    if spki is None:
        raise TpmError(
            TPM_RC.ASYMMETRIC, f"an object of type 0x{obj.type:04x} has no X.509 public key", at="objectHandle"
        )
    with errors_at("partialCertificate"):
        partial = parse_partial(partialCertificate)
    algorithm = partial.signature or signature_algorithm(signer.key, signer.scheme)
    if algorithm is None:
        raise TpmError(
            TPM_RC.SCHEME,
            f"no X.509 signature algorithm for scheme 0x{signer.scheme.scheme:04x}/0x{signer.hash_alg:04x}",
            at="signHandle",
        )
    try:
        check_extensions(partial, obj.attributes)
    except TpmError as e:
        # A contradiction with the object is the object's fault; a malformed extension the buffer's.
        raise e.about("objectHandle" if e.rc == TPM_RC.ATTRIBUTES else "partialCertificate") from None
    completed = complete(partial, algorithm, spki, signer.key, obj)
    return ctx.response(
        addedToCertificate=completed.added, tbsDigest=signer.digest(completed.tbs), signature=signer.sign(completed.tbs)
    )


# --- 31.16 TPM2_NV_Certify ------------------------------------------------------------------------


@command(
    TPM_CC.NV_Certify,
    handles=[SIGN_HANDLE, H("authHandle", TPMI_RH_NV_AUTH, AuthRole.USER), H("nvIndex", TPMI_RH_NV_INDEX)],
    params=[
        ("qualifyingData", TPM2B_DATA),
        ("inScheme", TPMT_SIG_SCHEME_PLUS),
        ("size", UINT16),
        ("offset", UINT16),
    ],
    response=[("certifyInfo", TPM2B_ATTEST), *SIGNED],
)
def nv_certify(
    ctx, signHandle: int, authHandle: int, nvIndex: int, qualifyingData: bytes, inScheme, size: int, offset: int
):
    signer = _signer(ctx, signHandle, inScheme)
    nv = nv_get(ctx.engine, nvIndex)
    if nv is None:
        raise TpmError(TPM_RC.HANDLE, f"NV index 0x{nvIndex:08x} is not defined", at="nvIndex")
    read_checks(authHandle, nv)
    if size + offset > nv.data_size:
        raise TpmError(TPM_RC.NV_RANGE, f"{size} octets at {offset} exceed dataSize {nv.data_size}")
    if size > MAX_NV_BUFFER_SIZE:
        raise TpmError(TPM_RC.VALUE, f"size {size} exceeds MAX_NV_BUFFER_SIZE", at="size")
    if size == 0 and offset == 0:
        # The 1.59 form: a digest of the whole index, for indices larger than one buffer.
        kind = TPM_ST.ATTEST_NV_DIGEST
        info = TPMS_NV_DIGEST_CERTIFY_INFO(indexName=nv.name, nvDigest=signer.digest(nv.data))
    else:
        kind = TPM_ST.ATTEST_NV
        info = TPMS_NV_CERTIFY_INFO(indexName=nv.name, offset=offset, nvContents=nv.data[offset : offset + size])
    body, signature = _attest(ctx, signer, kind, qualifyingData, info)
    return ctx.response(certifyInfo=body, signature=signature)
