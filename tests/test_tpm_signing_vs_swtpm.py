"""TPM2_Sign and TPM2_VerifySignature against Debian's swtpm (libtpms).

The same bytes go to both TPMs.  Keys made by each TPM differ, except a keyed-hash key
whose key the caller supplies: HMAC signatures with it are deterministic, so the whole
Sign response is compared byte for byte.  RSASSA is deterministic too, but no command
both TPMs share creates the same RSA key (that needs TPM2_LoadExternal), so for RSA the
comparison is of the PSS salt length each TPM chooses; for every bad input it is of the
response code, handle or parameter number included.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from test_tpm_signing import (
    NULL_TICKET,
    SIGN_OUT,
    TPM_GENERATED,
    sign_cmd,
    verify_cmd,
)

from support.engine_oracle import EngineOracle
from support.object_templates import (
    FIXED_PARENT,
    FIXED_TPM,
    NO_SYM,
    RESTRICTED,
    SIGN,
    SIGNING,
    USER_WITH_AUTH,
    create_cmd,
    create_primary_cmd,
    ecc_template,
    keyedhash_template,
    load_cmd,
    rsa_template,
)
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH, TPM_ST
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import rc_name
from vtpm_cuse.tpm.marshal import Reader, Struct

pytestmark = pytest.mark.swtpm

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
SRK = 0x80000000
HMAC_KEY = b"the same HMAC key in both TPMs"
CREATE_OUT = Struct("Create_Out", [("outPrivate", T.TPM2B_PRIVATE), ("outPublic", T.TPM2B_PUBLIC)])
HASH_OUT = Struct("Hash_Out", [("outHash", T.TPM2B_DIGEST), ("validation", T.TPMT_TK_HASHCHECK)])
VERIFY_OUT = Struct("VerifySignature_Out", [("validation", T.TPMT_TK_VERIFIED)])
DIGEST = hashlib.sha256(b"signed by both").digest()


@pytest.fixture(scope="module")
def pair():
    from support.swtpm_oracle import SwtpmOracle

    oracle = SwtpmOracle()
    ours = EngineOracle(Engine(max_objects=3))  # as many transient slots as libtpms
    try:
        for t in (oracle, ours):
            assert Response(t.execute(STARTUP_CLEAR)).rc == 0
            assert handle_of(ok(t, create_primary_cmd(ecc_template()))) == SRK
        yield oracle, ours
    finally:
        oracle.close()


def ok(tpm, cmd: bytes) -> Response:
    resp = Response(tpm.execute(cmd))
    assert resp.rc == 0, rc_name(resp.rc)
    return resp


def handle_of(resp: Response) -> int:
    return int.from_bytes(resp.raw[10:14], "big")


def load_new(tpm, template, data: bytes = b"") -> tuple[int, object]:
    out = CREATE_OUT.unmarshal(Reader(ok(tpm, create_cmd(SRK, template, data=data)).params()))
    return handle_of(ok(tpm, load_cmd(SRK, out.outPrivate, out.outPublic))), out.outPublic


@pytest.fixture
def loaded(pair):
    """Load a key with the same template (and data) into both TPMs; flush them afterwards."""
    handles: list[tuple[object, int]] = []

    def load(template, data: bytes = b"") -> tuple[int, list]:
        made = [load_new(t, template, data) for t in pair]
        handles.extend((t, handle) for t, (handle, _) in zip(pair, made, strict=True))
        assert made[0][0] == made[1][0]
        return made[0][0], [public for _, public in made]

    yield load
    for t, handle in handles:
        t.execute(command(TPM_CC.FlushContext, u32(handle)))


def codes(pair, cmd: bytes) -> tuple[str, str]:
    theirs, ours = (rc_name(Response(t.execute(cmd)).rc) for t in pair)
    return theirs, ours


def test_hmac_signatures_are_identical(pair, loaded):
    template = keyedhash_template(FIXED_TPM | FIXED_PARENT | USER_WITH_AUTH | SIGN, TPM_ALG.HMAC, TPM_ALG.SHA256)
    handle, _ = loaded(template, HMAC_KEY)
    for alg in (TPM_ALG.NULL, TPM_ALG.HMAC):
        cmd = sign_cmd(handle, DIGEST, alg, TPM_ALG.SHA256)
        theirs, ours = (t.execute(cmd) for t in pair)
        assert Response(theirs).rc == 0 and theirs == ours
    signature = SIGN_OUT.unpack(Response(ours).params()).signature
    tickets = [VERIFY_OUT.unpack(ok(t, verify_cmd(handle, DIGEST, signature)).params()).validation for t in pair]
    # Each TPM's ticket is under its own proof: the same shape, other octets.
    assert [(v.tag, v.hierarchy, len(v.digest)) for v in tickets] == [(TPM_ST.VERIFIED, TPM_RH.OWNER, 64)] * 2


def test_hmac_error_codes_match(pair, loaded):
    template = keyedhash_template(FIXED_TPM | FIXED_PARENT | USER_WITH_AUTH | SIGN, TPM_ALG.HMAC, TPM_ALG.SHA256)
    handle, _ = loaded(template, HMAC_KEY)
    good = SIGN_OUT.unpack(ok(pair[1], sign_cmd(handle, DIGEST, TPM_ALG.NULL)).params()).signature
    tampered = T.TPMT_SIGNATURE_PLUS(sigAlg=TPM_ALG.HMAC, signature=T.TPMT_HA(hashAlg=TPM_ALG.SHA256, digest=bytes(32)))
    weaker = T.TPMT_SIGNATURE_PLUS(sigAlg=TPM_ALG.HMAC, signature=T.TPMT_HA(hashAlg=TPM_ALG.SHA1, digest=bytes(20)))
    ecdsa = T.TPMT_SIGNATURE_PLUS(
        sigAlg=TPM_ALG.ECDSA, signature=T.TPMS_SIGNATURE_ECC(hash=TPM_ALG.SHA256, signatureR=b"\1", signatureS=b"\1")
    )
    cases = [
        sign_cmd(handle, DIGEST, TPM_ALG.HMAC, TPM_ALG.SHA1),
        sign_cmd(handle, DIGEST, TPM_ALG.ECDSA, TPM_ALG.SHA256),
        sign_cmd(handle, DIGEST[:20], TPM_ALG.NULL),
        sign_cmd(handle, DIGEST, TPM_ALG.NULL, auth=b"wrong"),
        verify_cmd(handle, DIGEST, good),
        verify_cmd(handle, DIGEST[::-1], good),
        verify_cmd(handle, DIGEST, tampered),
        verify_cmd(handle, DIGEST, weaker),
        verify_cmd(handle, DIGEST, ecdsa),
    ]
    for cmd in cases:
        theirs, ours = codes(pair, cmd)
        assert ours == theirs, cmd.hex()


def test_ecc_error_codes_match(pair, loaded):
    handle, _ = loaded(ecc_template(SIGNING, sym=NO_SYM))
    ours = pair[1]
    ecdsa = SIGN_OUT.unpack(ok(ours, sign_cmd(handle, DIGEST, TPM_ALG.ECDSA, TPM_ALG.SHA256)).params()).signature
    zero_r = T.TPMT_SIGNATURE_PLUS(
        sigAlg=TPM_ALG.ECDSA,
        signature=T.TPMS_SIGNATURE_ECC(hash=TPM_ALG.SHA256, signatureR=bytes(32), signatureS=b"\1" * 32),
    )
    rsassa = T.TPMT_SIGNATURE_PLUS(
        sigAlg=TPM_ALG.RSASSA, signature=T.TPMS_SIGNATURE_RSA(hash=TPM_ALG.SHA256, sig=bytes(128))
    )
    bogus = T.TPMT_TK_HASHCHECK(tag=TPM_ST.HASHCHECK, hierarchy=TPM_RH.OWNER, digest=bytes(64))
    scheme = T.TPMT_SIG_SCHEME_PLUS.pack(
        T.TPMT_SIG_SCHEME_PLUS(scheme=TPM_ALG.ECDSA, details=T.TPMS_SCHEME_HASH(hashAlg=TPM_ALG.SHA256))
    )
    cases = [
        sign_cmd(SRK, DIGEST, TPM_ALG.ECDSA, TPM_ALG.SHA256),
        sign_cmd(handle, DIGEST, TPM_ALG.NULL),
        sign_cmd(handle, DIGEST, TPM_ALG.RSASSA, TPM_ALG.SHA256),
        sign_cmd(handle, DIGEST, TPM_ALG.HMAC, TPM_ALG.SHA256),
        sign_cmd(handle, DIGEST[:31], TPM_ALG.ECDSA, TPM_ALG.SHA256),
        sign_cmd(handle, DIGEST, TPM_ALG.ECDSA, TPM_ALG.SHA256, ticket=bogus),
        command(TPM_CC.Sign, tpm2b(DIGEST) + u16(TPM_ALG.ECDSA) + u16(TPM_ALG.NULL), u32(handle), b""),
        command(TPM_CC.Sign, tpm2b(DIGEST) + u16(0x7777) + u16(TPM_ALG.SHA256), u32(handle), b""),
        command(
            TPM_CC.Sign, tpm2b(DIGEST) + scheme + u16(TPM_ST.VERIFIED) + u32(TPM_RH.NULL) + u16(0), u32(handle), b""
        ),
        command(
            TPM_CC.Sign, tpm2b(DIGEST) + scheme + u16(TPM_ST.HASHCHECK) + u32(TPM_RH.LOCKOUT) + u16(0), u32(handle), b""
        ),
        verify_cmd(handle, DIGEST[::-1], ecdsa),
        verify_cmd(handle, DIGEST, zero_r),
        verify_cmd(handle, DIGEST, rsassa),
        verify_cmd(SRK, DIGEST, ecdsa),
        command(TPM_CC.VerifySignature, tpm2b(DIGEST) + u16(TPM_ALG.NULL), u32(handle)),
    ]
    for cmd in cases:
        theirs, mine = codes(pair, cmd)
        assert mine == theirs, cmd.hex()
    # A hash sequence where a key should be.
    sequences = {handle_of(ok(t, command(TPM_CC.HashSequenceStart, tpm2b(b"") + u16(TPM_ALG.SHA256)))) for t in pair}
    assert len(sequences) == 1
    sequence = sequences.pop()
    try:
        for cmd in (sign_cmd(sequence, DIGEST, TPM_ALG.ECDSA, TPM_ALG.SHA256), verify_cmd(sequence, DIGEST, zero_r)):
            theirs, mine = codes(pair, cmd)
            assert mine == theirs, cmd.hex()
    finally:
        for t in pair:
            t.execute(command(TPM_CC.FlushContext, u32(sequence)))
    for t in pair:  # each TPM verifies its own signature and hands out a ticket
        sig = SIGN_OUT.unpack(ok(t, sign_cmd(handle, DIGEST, TPM_ALG.ECDSA, TPM_ALG.SHA256)).params()).signature
        ticket = VERIFY_OUT.unpack(ok(t, verify_cmd(handle, DIGEST, sig)).params()).validation
        assert (ticket.tag, ticket.hierarchy, len(ticket.digest)) == (TPM_ST.VERIFIED, TPM_RH.OWNER, 64)
        assert len(sig.signature.signatureR) == len(sig.signature.signatureS) == 32


def test_restricted_key_ticket_rules_match(pair, loaded):
    handle, _ = loaded(ecc_template(SIGNING | RESTRICTED, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256))
    results = []
    for t in pair:
        hashed = HASH_OUT.unpack(
            ok(t, command(TPM_CC.Hash, tpm2b(b"data") + u16(TPM_ALG.SHA256) + u32(TPM_RH.OWNER))).params()
        )
        generated = HASH_OUT.unpack(
            ok(t, command(TPM_CC.Hash, tpm2b(TPM_GENERATED + b"x") + u16(TPM_ALG.SHA256) + u32(TPM_RH.OWNER))).params()
        )
        assert generated.validation == NULL_TICKET
        results.append(
            [
                Response(t.execute(sign_cmd(handle, hashed.outHash, TPM_ALG.NULL, ticket=hashed.validation))).rc,
                Response(t.execute(sign_cmd(handle, hashed.outHash, TPM_ALG.NULL))).rc,
                Response(t.execute(sign_cmd(handle, generated.outHash, TPM_ALG.NULL, ticket=generated.validation))).rc,
                Response(t.execute(sign_cmd(handle, DIGEST, TPM_ALG.NULL, ticket=hashed.validation))).rc,
            ]
        )
    assert [rc_name(c) for c in results[1]] == [rc_name(c) for c in results[0]]
    assert results[1][0] == 0


@pytest.mark.parametrize(("alg", "salt"), [(TPM_ALG.SHA256, 32), (TPM_ALG.SHA512, 62)])
def test_pss_salt_length_matches(pair, loaded, alg, salt):
    """libtpms uses a salt as long as the digest when it fits, else the longest one; so do we."""
    handle, publics = loaded(rsa_template(SIGNING, bits=1024, sym=NO_SYM))
    name = {TPM_ALG.SHA256: "sha256", TPM_ALG.SHA512: "sha512"}[alg]
    crypto = {TPM_ALG.SHA256: hashes.SHA256, TPM_ALG.SHA512: hashes.SHA512}[alg]
    digest = hashlib.new(name, b"pss").digest()
    for t, public in zip(pair, publics, strict=True):
        sig = SIGN_OUT.unpack(ok(t, sign_cmd(handle, digest, TPM_ALG.RSAPSS, alg)).params()).signature
        key = rsa.RSAPublicNumbers(65537, int.from_bytes(public.unique, "big")).public_key()
        pss = padding.PSS(mgf=padding.MGF1(crypto()), salt_length=salt)
        key.verify(sig.signature.sig, digest, pss, Prehashed(crypto()))
