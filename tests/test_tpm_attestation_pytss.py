"""Every attestation and audit command once through tpm2-pytss's ESAPI against ``vtpm-cuse socket``.

tpm2-tss marshals the commands and unmarshals the responses with its own C code, and checks
the response HMAC of the audit session (over the attributes the TPM echoes, auditExclusive
included); each attestation is verified with ``cryptography`` and parsed back.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from test_tpm_pytss_keys import SIGNING, STORAGE, daemon, ecc_key, esys, flush, scheme, sensitive  # noqa: F401
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CC, TPM2_SE, TPMA_NV, TPMA_SESSION
from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPM2B_PUBLIC, TPML_CC, TPML_PCR_SELECTION, TPMS_NV_PUBLIC, TPMT_SYM_DEF

from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ST

NV_INDEX = 0x01500040


@pytest.fixture(scope="module")
def ak(esys):  # noqa: F811 (the fixture)
    """A restricted ECDSA-SHA256 key under an owner primary, and the primary."""
    template = TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=STORAGE)
    srk, _, _, _, _ = esys.create_primary(sensitive(), template, ESYS_TR.OWNER)
    ak_template = TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256:null", objectAttributes=SIGNING + "|restricted")
    private, public, _, creation_hash, ticket = esys.create(srk, sensitive(), ak_template)
    handle = esys.load(srk, private, public)
    yield {"handle": handle, "public": public, "srk": srk, "creation": (creation_hash, ticket)}
    esys.flush_context(handle)
    esys.flush_context(srk)


def checked(ak, attest, signature, kind: int):
    """Verify the ECDSA signature over the TPM2B_ATTEST octets; the parsed TPMS_ATTEST."""
    data = bytes(attest)
    r = int.from_bytes(bytes(signature.signature.ecdsa.signatureR), "big")
    s = int.from_bytes(bytes(signature.signature.ecdsa.signatureS), "big")
    ecc_key(ak["public"]).verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    parsed = T.TPMS_ATTEST.unpack(data)
    assert parsed.type == kind and parsed.qualifiedSigner
    return parsed


ECDSA = scheme(TPM2_ALG.ECDSA)


def test_quote(esys, ak):  # noqa: F811 (the fixture)
    attest, sig = esys.quote(ak["handle"], TPML_PCR_SELECTION.parse("sha256:0,1,2"), b"nonce", ECDSA)
    parsed = checked(ak, attest, sig, TPM_ST.ATTEST_QUOTE)
    assert parsed.extraData == b"nonce" and len(parsed.attested.pcrDigest) == 32


def test_certify_and_certify_creation(esys, ak):  # noqa: F811 (the fixture)
    attest, sig = esys.certify(ak["handle"], ak["handle"], b"c", ECDSA)
    assert checked(ak, attest, sig, TPM_ST.ATTEST_CERTIFY).attested.name == bytes(esys.tr_get_name(ak["handle"]))
    creation_hash, ticket = ak["creation"]
    attest, sig = esys.certify_creation(ak["handle"], ak["handle"], b"cc", creation_hash, ECDSA, ticket)
    assert checked(ak, attest, sig, TPM_ST.ATTEST_CREATION).attested.creationHash == bytes(creation_hash)


def test_get_time(esys, ak):  # noqa: F811 (the fixture)
    attest, sig = esys.get_time(ak["handle"], b"t", ECDSA)
    assert checked(ak, attest, sig, TPM_ST.ATTEST_TIME).attested.time.time > 0


def test_nv_certify(esys, ak):  # noqa: F811 (the fixture)
    attrs = TPMA_NV.OWNERREAD | TPMA_NV.OWNERWRITE
    public = TPM2B_NV_PUBLIC(TPMS_NV_PUBLIC(nvIndex=NV_INDEX, nameAlg=TPM2_ALG.SHA256, attributes=attrs, dataSize=16))
    index = esys.nv_define_space(b"", public)
    try:
        esys.nv_write(index, b"0123456789abcdef", 0, ESYS_TR.OWNER)
        attest, sig = esys.nv_certify(ak["handle"], index, b"nv", ECDSA, 4, 2, auth_handle=ESYS_TR.OWNER)
        info = checked(ak, attest, sig, TPM_ST.ATTEST_NV).attested
        assert (info.offset, info.nvContents) == (2, b"2345")
    finally:
        esys.nv_undefine_space(index, ESYS_TR.OWNER)


def test_session_audit(esys, ak):  # noqa: F811 (the fixture)
    session = esys.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
    )
    try:
        esys.trsess_set_attributes(session, TPMA_SESSION.AUDIT | TPMA_SESSION.CONTINUESESSION)
        random = bytes(esys.get_random(8, session1=session))
        attest, sig = esys.get_session_audit_digest(ak["handle"], session, b"s", ECDSA)
        info = checked(ak, attest, sig, TPM_ST.ATTEST_SESSION_AUDIT).attested
        cc = TPM2_CC.GetRandom.to_bytes(4, "big")
        cp = hashlib.sha256(cc + (8).to_bytes(2, "big")).digest()
        rp = hashlib.sha256(bytes(4) + cc + len(random).to_bytes(2, "big") + random).digest()
        assert info.exclusiveSession == 1
        assert info.sessionDigest == hashlib.sha256(bytes(32) + cp + rp).digest()
    finally:
        esys.flush_context(session)


def test_command_audit(esys, ak):  # noqa: F811 (the fixture)
    esys.set_command_code_audit_status(TPM2_ALG.NULL, TPML_CC([TPM2_CC.GetRandom]), TPML_CC())
    try:
        esys.get_command_audit_digest(ak["handle"], b"", ECDSA)  # signed: starts a new sequence
        esys.get_random(4)
        attest, sig = esys.get_command_audit_digest(ak["handle"], b"a", ECDSA)
        info = checked(ak, attest, sig, TPM_ST.ATTEST_COMMAND_AUDIT).attested
        assert info.auditCounter >= 2 and len(info.auditDigest) == 64  # the default SHA-512
        codes = sorted([TPM2_CC.GetRandom, TPM2_CC.SetCommandCodeAuditStatus])
        assert info.commandDigest == hashlib.sha512(b"".join(c.to_bytes(4, "big") for c in codes)).digest()
    finally:
        esys.set_command_code_audit_status(TPM2_ALG.NULL, TPML_CC(), TPML_CC([TPM2_CC.GetRandom]))
