"""Attestation commands against Debian's swtpm (libtpms), the same bytes to both TPMs.

Signed attestations cannot match byte for byte (each TPM's keys and clock differ), so the
comparison is of what is deterministic: every error code (with its handle or parameter
number) in the reference TPM's order of checks, and the attested member of unsigned
attestations (NV_Certify of the same index contents, Quote's PCR selection), the header's
shape and the fields a relying party checks.
"""

from __future__ import annotations

import pytest
from test_tpm_attestation import (
    INDEX,
    NO_SCHEME,
    OWNER_RW,
    SIGNED_OUT,
    certify_cmd,
    certify_creation_cmd,
    command,
    get_time_cmd,
    nv_certify_cmd,
    quote_cmd,
    scheme,
    selection,
)
from test_tpm_signing import X509SIGN, ecc_signer, rsa_signer
from test_tpm_signing_vs_swtpm import CREATE_OUT, SRK, codes, handle_of, ok

from support.engine_oracle import EngineOracle
from support.object_templates import (
    DECRYPT,
    FIXED_PARENT,
    FIXED_TPM,
    RESTRICTED,
    SDO,
    SIGNING,
    USER_WITH_AUTH,
    create_cmd,
    create_primary_cmd,
    ecc_template,
    load_cmd,
)
from support.tpm_client import Response, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH, TPM_ST
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.marshal import Reader

pytestmark = pytest.mark.swtpm

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
BIG_INDEX = INDEX + 5


@pytest.fixture(scope="module")
def pair():
    from support.swtpm_oracle import SwtpmOracle

    oracle = SwtpmOracle()
    ours = EngineOracle(Engine(max_objects=3))  # as many transient slots as libtpms
    try:
        for t in (oracle, ours):
            assert Response(t.execute(STARTUP_CLEAR)).rc == 0
            assert handle_of(ok(t, create_primary_cmd(ecc_template()))) == SRK
            for index, size in ((INDEX, 64), (BIG_INDEX, 2048)):
                public = u32(index) + u16(TPM_ALG.SHA256) + u32(OWNER_RW) + tpm2b(b"") + u16(size)
                ok(t, command(TPM_CC.NV_DefineSpace, [TPM_RH.OWNER], tpm2b(b"") + tpm2b(public), [b""]))
            ok(t, command(TPM_CC.NV_Write, [TPM_RH.OWNER, INDEX], tpm2b(bytes(range(64))) + u16(0), [b""]))
        yield oracle, ours
    finally:
        oracle.close()


@pytest.fixture
def loaded(pair):
    """Load keys made from the same templates into both TPMs (same handles); flushed afterwards."""
    handles: list[int] = []

    def load(template) -> tuple[int, list]:
        made = []
        for t in pair:
            out = CREATE_OUT.unmarshal(Reader(ok(t, create_cmd(SRK, template)).params()))
            made.append(handle_of(ok(t, load_cmd(SRK, out.outPrivate, out.outPublic))))
        assert made[0] == made[1]
        handles.append(made[0])
        return made[0]

    yield load
    for t in pair:
        for handle in handles:
            t.execute(command(TPM_CC.FlushContext, [], u32(handle)))


def same_codes(pair, cmds: list[bytes]) -> None:
    got = [codes(pair, cmd) for cmd in cmds]
    assert [theirs for theirs, _ in got] == [ours for _, ours in got]


def unsigned(pair, cmd: bytes) -> list:
    outs = [SIGNED_OUT.unpack(ok(t, cmd).params()) for t in pair]
    assert all(out.signature.sigAlg == TPM_ALG.NULL for out in outs)
    return [T.TPMS_ATTEST.unpack(out.attest) for out in outs]


def test_unsigned_nv_certify_attests_the_same_contents(pair):
    for cmd in (nv_certify_cmd(TPM_RH.NULL, 16, 8), nv_certify_cmd(TPM_RH.NULL, 0, 0)):
        theirs, ours = unsigned(pair, cmd)
        assert theirs.attested == ours.attested
        for att in (theirs, ours):
            assert (att.magic, att.qualifiedSigner, att.extraData) == (0xFF544347, u32(TPM_RH.NULL), b"nv")
        assert theirs.type == ours.type


def test_unsigned_certify_and_get_time_have_the_same_shape(pair):
    for cmd in (certify_cmd(SRK, TPM_RH.NULL), get_time_cmd(TPM_RH.NULL)):
        theirs, ours = unsigned(pair, cmd)
        assert (theirs.type, theirs.qualifiedSigner, theirs.extraData) == (ours.type, u32(TPM_RH.NULL), ours.extraData)
        assert type(theirs.attested) is type(ours.attested)


def test_quotes_of_the_same_selection_select_the_same_pcrs(pair, loaded):
    aik = loaded(rsa_signer(TPM_ALG.RSASSA, TPM_ALG.SHA256, SIGNING | RESTRICTED))
    two = u32(2) + u16(TPM_ALG.SHA1) + b"\x03\x05\x00\x00" + u16(TPM_ALG.SHA256) + b"\x03\x00\x00\x01"
    for pcrs in (selection([0, 1, 7]), two):
        outs = [SIGNED_OUT.unpack(ok(t, quote_cmd(aik, b"nonce", NO_SCHEME, pcrs)).params()) for t in pair]
        theirs, ours = (T.TPMS_ATTEST.unpack(out.attest) for out in outs)
        # Both TPMs start with the same PCR values, so the digests agree too.
        assert (theirs.type, theirs.attested) == (ours.type, ours.attested)


def test_signed_attestations_have_the_same_shape(pair, loaded):
    aik = loaded(rsa_signer(TPM_ALG.RSASSA, TPM_ALG.SHA256, SIGNING | RESTRICTED))
    for cmd in (quote_cmd(aik), certify_cmd(aik, aik), get_time_cmd(aik), nv_certify_cmd(aik, 8, 0)):
        outs = [SIGNED_OUT.unpack(ok(t, cmd).params()) for t in pair]
        atts = [T.TPMS_ATTEST.unpack(out.attest) for out in outs]
        assert len({len(out.attest) for out in outs}) == 1
        assert len({(a.type, len(a.qualifiedSigner), a.extraData) for a in atts}) == 1
        assert [(o.signature.sigAlg, o.signature.signature.hash) for o in outs] == [
            (TPM_ALG.RSASSA, TPM_ALG.SHA256)
        ] * 2


def test_signer_and_scheme_error_codes_match(pair, loaded):
    ssa = loaded(rsa_signer(TPM_ALG.RSASSA, TPM_ALG.SHA256))
    decrypt = loaded(ecc_signer(attrs=FIXED_TPM | FIXED_PARENT | SDO | USER_WITH_AUTH | DECRYPT))
    pss256, ssa1 = scheme(TPM_ALG.RSAPSS, TPM_ALG.SHA256), scheme(TPM_ALG.RSASSA, TPM_ALG.SHA1)
    same_codes(
        pair,
        [
            quote_cmd(decrypt),
            quote_cmd(ssa, sch=pss256),
            quote_cmd(ssa, sch=ssa1),
            quote_cmd(ssa, sch=scheme(TPM_ALG.ECDSA, TPM_ALG.SHA256)),
            quote_cmd(TPM_RH.NULL, sch=scheme(TPM_ALG.RSASSA, TPM_ALG.SHA256)),
            quote_cmd(ssa, pcrs=u32(1) + u16(TPM_ALG.SHA256) + b"\x05" + bytes(5)),
            quote_cmd(SRK),
            certify_cmd(decrypt, decrypt),
            certify_cmd(ssa, decrypt),
            certify_cmd(ssa, ssa, sch=pss256),
            certify_cmd(0x80000002 + 5, ssa),
            command(TPM_CC.Certify, [ssa, ssa], tpm2b(b"") + NO_SCHEME, [b""]),
            get_time_cmd(decrypt),
            command(TPM_CC.GetTime, [TPM_RH.OWNER, TPM_RH.NULL], tpm2b(b"") + NO_SCHEME, [b"", b""]),
            command(TPM_CC.GetTime, [TPM_RH.ENDORSEMENT, TPM_RH.NULL], tpm2b(b"") + NO_SCHEME, [b"x", b""]),
            quote_cmd(ssa, extra=bytes(66)),
            quote_cmd(ssa, extra=bytes(67)),
        ],
    )


def test_x509sign_key_error_codes_match(pair, loaded):
    x509 = loaded(ecc_signer(0x0003, TPM_ALG.ECDSA, TPM_ALG.SHA256, SIGNING | X509SIGN))
    same_codes(pair, [quote_cmd(x509), certify_cmd(x509, x509), nv_certify_cmd(x509, 8, 0)])


def test_certify_creation_error_codes_match(pair, loaded):
    ssa = loaded(rsa_signer(TPM_ALG.RSASSA, TPM_ALG.SHA256))
    ticket = T.TPMT_TK_CREATION(tag=TPM_ST.CREATION, hierarchy=TPM_RH.OWNER, digest=bytes(64))
    null_ticket = T.TPMT_TK_CREATION(tag=TPM_ST.CREATION, hierarchy=TPM_RH.NULL, digest=b"")
    bad_tag = tpm2b(b"") + tpm2b(bytes(32)) + NO_SCHEME + u16(TPM_ST.HASHCHECK) + u32(TPM_RH.OWNER) + tpm2b(b"")
    same_codes(
        pair,
        [
            certify_creation_cmd(TPM_RH.NULL, ssa, bytes(32), ticket),
            certify_creation_cmd(TPM_RH.NULL, ssa, bytes(32), null_ticket),
            certify_creation_cmd(ssa, ssa, bytes(32), ticket, sch=scheme(TPM_ALG.RSAPSS, TPM_ALG.SHA256)),
            command(TPM_CC.CertifyCreation, [TPM_RH.NULL, ssa], bad_tag, [b""]),
        ],
    )


def test_nv_certify_error_codes_match(pair):
    same_codes(
        pair,
        [
            nv_certify_cmd(TPM_RH.NULL, 60, 8),
            nv_certify_cmd(TPM_RH.NULL, 1, 64),
            nv_certify_cmd(TPM_RH.NULL, 1025, 0, index=BIG_INDEX),
            nv_certify_cmd(TPM_RH.NULL, 1025, 2000, index=BIG_INDEX),
            nv_certify_cmd(TPM_RH.NULL, 8, 0, index=BIG_INDEX),
            nv_certify_cmd(TPM_RH.NULL, 8, 0, index=INDEX + 9),
            command(
                TPM_CC.NV_Certify, [TPM_RH.NULL, TPM_RH.PLATFORM, INDEX], tpm2b(b"") + NO_SCHEME + bytes(4), [b"", b""]
            ),
        ],
    )
