"""TPM2_Sign and TPM2_VerifySignature (Part 3, clause 20) through Engine.execute.

Every signature the TPM makes is checked outside it with ``cryptography`` (RSA PKCS#1 v1.5
and PSS, ECDSA from r || s) or the ``hmac`` module, and VerifySignature is checked against
signatures made outside it; the error paths are checked code by code, with the handle or
parameter number Part 3's order gives.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature

from support.engine_oracle import EngineOracle
from support.object_templates import (
    DECRYPT,
    FIXED_PARENT,
    FIXED_TPM,
    NO_SYM,
    RESTRICTED,
    SDO,
    SIGN,
    SIGNING,
    USER_WITH_AUTH,
    create_cmd,
    create_primary_cmd,
    ecc_template,
    keyedhash_template,
    load_cmd,
    pw,
    rsa_template,
)
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.commands import COMMANDS
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_RH, TPM_ST
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_P, RC_S, TPM_RC, rc_name
from vtpm_cuse.tpm.hierarchy import hierarchy_proof
from vtpm_cuse.tpm.keys import ecc_private_key
from vtpm_cuse.tpm.marshal import Reader, Struct

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
X509SIGN = 1 << 19
HASHES = {TPM_ALG.SHA1: "sha1", TPM_ALG.SHA256: "sha256", TPM_ALG.SHA384: "sha384", TPM_ALG.SHA512: "sha512"}
CRYPTO = {TPM_ALG.SHA1: hashes.SHA1, TPM_ALG.SHA256: hashes.SHA256, TPM_ALG.SHA384: hashes.SHA384}
CRYPTO[TPM_ALG.SHA512] = hashes.SHA512
HMAC_KEY = bytes(range(1, 33))
HMAC_NULL_KEY = b"an HMAC key that has no scheme"
P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
TPM_GENERATED = b"\xffTCG"

CREATE_OUT = Struct("Create_Out", [("outPrivate", T.TPM2B_PRIVATE), ("outPublic", T.TPM2B_PUBLIC)])
SIGN_OUT = Struct("Sign_Out", [("signature", T.TPMT_SIGNATURE_PLUS)])
VERIFY_OUT = Struct("VerifySignature_Out", [("validation", T.TPMT_TK_VERIFIED)])
HASH_OUT = Struct("Hash_Out", [("outHash", T.TPM2B_DIGEST), ("validation", T.TPMT_TK_HASHCHECK)])
SEQ_OUT = Struct("SequenceComplete_Out", [("result", T.TPM2B_DIGEST), ("validation", T.TPMT_TK_HASHCHECK)])
NULL_TICKET = T.TPMT_TK_HASHCHECK(tag=TPM_ST.HASHCHECK, hierarchy=TPM_RH.NULL, digest=b"")


def p(rc: int, n: int) -> int:
    """A format-one code at parameter ``n``."""
    return rc | RC_P | n << 8


def h(rc: int, n: int) -> int:
    """A format-one code at handle ``n``."""
    return rc | n << 8


# --- command builders --------------------------------------------------------------------------------


def scheme(alg: int, hash_alg: int | None = None):
    details = None if alg == TPM_ALG.NULL else T.TPMS_SCHEME_HASH(hashAlg=hash_alg)
    return T.TPMT_SIG_SCHEME_PLUS(scheme=alg, details=details)


def sign_cmd(handle: int, digest: bytes, alg: int, hash_alg: int | None = None, ticket=NULL_TICKET, auth=pw) -> bytes:
    body = tpm2b(digest) + T.TPMT_SIG_SCHEME_PLUS.pack(scheme(alg, hash_alg)) + T.TPMT_TK_HASHCHECK.pack(ticket)
    return command(TPM_CC.Sign, body, u32(handle), auth)


def verify_cmd(handle: int, digest: bytes, signature) -> bytes:
    return command(TPM_CC.VerifySignature, tpm2b(digest) + T.TPMT_SIGNATURE_PLUS.pack(signature), u32(handle))


def run(tpm, cmd: bytes) -> Response:
    return Response(tpm.execute(cmd))


def ok(tpm, cmd: bytes) -> Response:
    resp = run(tpm, cmd)
    assert resp.rc == 0, rc_name(resp.rc)
    return resp


def rc(tpm, cmd: bytes) -> str:
    return rc_name(run(tpm, cmd).rc)


def handle_of(resp: Response) -> int:
    return int.from_bytes(resp.raw[10:14], "big")


def tpm_sign(tpm, handle: int, digest: bytes, alg: int, hash_alg: int | None = None, **kw):
    return SIGN_OUT.unpack(ok(tpm, sign_cmd(handle, digest, alg, hash_alg, **kw)).params()).signature


def tpm_verify(tpm, handle: int, digest: bytes, signature):
    return VERIFY_OUT.unpack(ok(tpm, verify_cmd(handle, digest, signature)).params()).validation


def tpm_hash(tpm, data: bytes, alg: int = TPM_ALG.SHA256, hierarchy: int = TPM_RH.OWNER):
    return HASH_OUT.unpack(ok(tpm, command(TPM_CC.Hash, tpm2b(data) + u16(alg) + u32(hierarchy))).params())


# --- keys ----------------------------------------------------------------------------------------


class Key:
    """A loaded key and its public area."""

    def __init__(self, handle: int, public) -> None:
        self.handle, self.public = handle, public

    @property
    def name(self) -> bytes:
        return u16(self.public.nameAlg) + hashlib.sha256(T.TPMT_PUBLIC.pack(self.public)).digest()


def make_key(tpm, parent: int, template, data: bytes = b"") -> Key:
    # Only Create's first two outputs are needed; the creation data and ticket are left unread.
    out = CREATE_OUT.unmarshal(Reader(ok(tpm, create_cmd(parent, template, data=data)).params()))
    return Key(handle_of(ok(tpm, load_cmd(parent, out.outPrivate, out.outPublic))), out.outPublic)


def read_public(tpm, handle: int):
    return T.TPM2B_PUBLIC.unmarshal(Reader(ok(tpm, command(TPM_CC.ReadPublic, handles=u32(handle))).params()))


def rsa_signer(sch: int = TPM_ALG.NULL, hash_alg: int | None = None, attrs: int = SIGNING):
    return rsa_template(attrs, bits=1024, sym=NO_SYM, scheme=sch, hash_alg=hash_alg)


def ecc_signer(curve: int = 0x0003, sch: int = TPM_ALG.NULL, hash_alg: int | None = None, attrs: int = SIGNING):
    return ecc_template(attrs, curve=curve, sym=NO_SYM, scheme=sch, hash_alg=hash_alg)


HMAC_ATTRS = FIXED_TPM | FIXED_PARENT | USER_WITH_AUTH | SIGN


@pytest.fixture(scope="module")
def tpm():
    engine = EngineOracle(Engine())
    assert Response(engine.execute(STARTUP_CLEAR)).rc == 0
    return engine


@pytest.fixture(scope="module")
def keys(tpm):
    srk = handle_of(ok(tpm, create_primary_cmd(ecc_template())))
    made = {
        "srk": srk,
        "rsa": make_key(tpm, srk, rsa_signer()),
        "rsa_ssa": make_key(tpm, srk, rsa_signer(TPM_ALG.RSASSA, TPM_ALG.SHA256)),
        "rsa_restricted": make_key(tpm, srk, rsa_signer(TPM_ALG.RSASSA, TPM_ALG.SHA256, SIGNING | RESTRICTED)),
        "ecc": make_key(tpm, srk, ecc_signer()),
        "ecc384": make_key(tpm, srk, ecc_signer(0x0004, TPM_ALG.ECDSA, TPM_ALG.SHA384)),
        "ecc521": make_key(tpm, srk, ecc_signer(0x0005)),
        "ecc192": make_key(tpm, srk, ecc_signer(0x0001)),
        "ecc224": make_key(tpm, srk, ecc_signer(0x0002, TPM_ALG.ECDSA, TPM_ALG.SHA256)),
        "ecc_restricted": make_key(tpm, srk, ecc_signer(0x0003, TPM_ALG.ECDSA, TPM_ALG.SHA256, SIGNING | RESTRICTED)),
        "ecc_x509": make_key(tpm, srk, ecc_signer(attrs=SIGNING | X509SIGN)),
        "ecc_decrypt": make_key(tpm, srk, ecc_signer(attrs=FIXED_TPM | FIXED_PARENT | SDO | USER_WITH_AUTH | DECRYPT)),
        "hmac": make_key(tpm, srk, keyedhash_template(HMAC_ATTRS, TPM_ALG.HMAC, TPM_ALG.SHA256), data=HMAC_KEY),
        "hmac_null": make_key(tpm, srk, keyedhash_template(HMAC_ATTRS | DECRYPT), data=HMAC_NULL_KEY),
    }
    return made


# --- outside verification -------------------------------------------------------------------------


def rsa_public(key: Key) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(65537, int.from_bytes(key.public.unique, "big")).public_key()


def ecc_public(key: Key, curve: ec.EllipticCurve) -> ec.EllipticCurvePublicKey:
    x, y = (int.from_bytes(c, "big") for c in (key.public.unique.x, key.public.unique.y))
    return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()


#: The curves of the keys above, as ``cryptography`` names them.
CRYPTO_CURVES = {
    0x0001: ec.SECP192R1(),
    0x0002: ec.SECP224R1(),
    0x0003: ec.SECP256R1(),
    0x0004: ec.SECP384R1(),
    0x0005: ec.SECP521R1(),
}


def check_outside(key: Key, sig, digest: bytes, hmac_key: bytes = b"") -> None:
    """Verify a TPM signature with cryptography / hmac, as any relying party would."""
    hash_alg = sig.signature.hashAlg if sig.sigAlg == TPM_ALG.HMAC else sig.signature.hash
    prehashed = Prehashed(CRYPTO[hash_alg]())
    if sig.sigAlg == TPM_ALG.RSASSA:
        rsa_public(key).verify(sig.signature.sig, digest, padding.PKCS1v15(), prehashed)
    elif sig.sigAlg == TPM_ALG.RSAPSS:
        pss = padding.PSS(mgf=padding.MGF1(CRYPTO[hash_alg]()), salt_length=padding.PSS.AUTO)
        rsa_public(key).verify(sig.signature.sig, digest, pss, prehashed)
    elif sig.sigAlg == TPM_ALG.ECDSA:
        curve = CRYPTO_CURVES[key.public.parameters.curveID]
        r, s = (int.from_bytes(v, "big") for v in (sig.signature.signatureR, sig.signature.signatureS))
        assert len(sig.signature.signatureR) == len(sig.signature.signatureS) == (curve.key_size + 7) // 8
        ecc_public(key, curve).verify(encode_dss_signature(r, s), digest, ec.ECDSA(prehashed))
    else:
        assert sig.sigAlg == TPM_ALG.HMAC
        assert sig.signature.digest == hmac.new(hmac_key, digest, HASHES[hash_alg]).digest()


def verified_hmac(tpm, hierarchy: int, digest: bytes, name: bytes) -> bytes:
    """TPMT_TK_VERIFIED.digest by Part 1's formula, with the context-integrity hash (SHA-512)."""
    data = u16(TPM_ST.VERIFIED) + digest + name
    return hmac.new(hierarchy_proof(tpm.engine, hierarchy), data, "sha512").digest()


def digest_of(alg: int, data: bytes = b"message to sign") -> bytes:
    return hashlib.new(HASHES[alg], data).digest()


# --- every scheme and hash ------------------------------------------------------------------------

ALL_HASHES = list(HASHES)
CASES = (
    [("rsa", TPM_ALG.RSASSA, a) for a in ALL_HASHES]
    + [("rsa", TPM_ALG.RSAPSS, a) for a in ALL_HASHES]
    + [("ecc", TPM_ALG.ECDSA, a) for a in ALL_HASHES]
    + [("ecc521", TPM_ALG.ECDSA, a) for a in (TPM_ALG.SHA256, TPM_ALG.SHA512)]
    + [("ecc192", TPM_ALG.ECDSA, a) for a in (TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA512)]
    + [("ecc224", TPM_ALG.ECDSA, TPM_ALG.SHA256)]
    + [("hmac_null", TPM_ALG.HMAC, a) for a in ALL_HASHES]
)


@pytest.mark.parametrize(("key", "sch", "alg"), CASES, ids=[f"{k}-{s.name}-{a.name}" for k, s, a in CASES])
def test_sign_verifies_outside_and_inside(tpm, keys, key, sch, alg):
    signer, digest = keys[key], digest_of(alg)
    sig = tpm_sign(tpm, signer.handle, digest, sch, alg)
    assert sig.sigAlg == sch
    check_outside(signer, sig, digest, HMAC_NULL_KEY)
    ticket = tpm_verify(tpm, signer.handle, digest, sig)
    assert (ticket.tag, ticket.hierarchy) == (TPM_ST.VERIFIED, TPM_RH.OWNER)
    assert ticket.digest == verified_hmac(tpm, TPM_RH.OWNER, digest, signer.name)


@pytest.mark.parametrize(
    ("key", "sigalg", "alg"),
    [
        ("rsa_ssa", TPM_ALG.RSASSA, TPM_ALG.SHA256),
        ("ecc384", TPM_ALG.ECDSA, TPM_ALG.SHA384),
        ("hmac", TPM_ALG.HMAC, TPM_ALG.SHA256),
    ],
)
def test_a_key_with_a_scheme_signs_with_it_when_the_caller_names_none(tpm, keys, key, sigalg, alg):
    signer, digest = keys[key], digest_of(alg)
    for requested in ((TPM_ALG.NULL, None), (sigalg, alg)):
        sig = tpm_sign(tpm, signer.handle, digest, *requested)
        assert sig.sigAlg == sigalg
        check_outside(signer, sig, digest, HMAC_KEY)
        tpm_verify(tpm, signer.handle, digest, sig)


def test_rsassa_is_deterministic_and_pss_is_not(tpm, keys):
    digest = digest_of(TPM_ALG.SHA256)
    ssa = [tpm_sign(tpm, keys["rsa"].handle, digest, TPM_ALG.RSASSA, TPM_ALG.SHA256) for _ in range(2)]
    pss = [tpm_sign(tpm, keys["rsa"].handle, digest, TPM_ALG.RSAPSS, TPM_ALG.SHA256) for _ in range(2)]
    assert ssa[0] == ssa[1] and pss[0] != pss[1]
    assert len(ssa[0].signature.sig) == len(pss[0].signature.sig) == 128


@pytest.mark.parametrize(("alg", "salt"), [(TPM_ALG.SHA256, 32), (TPM_ALG.SHA384, 48), (TPM_ALG.SHA512, 62)])
def test_pss_salt_is_the_digest_length_when_it_fits(tpm, keys, alg, salt):
    """As the reference TPM: salt = hash length, or the longest that fits (RSA-1024, SHA-512: 62)."""
    digest = digest_of(alg)
    sig = tpm_sign(tpm, keys["rsa"].handle, digest, TPM_ALG.RSAPSS, alg)
    pss = padding.PSS(mgf=padding.MGF1(CRYPTO[alg]()), salt_length=salt)
    rsa_public(keys["rsa"]).verify(sig.signature.sig, digest, pss, Prehashed(CRYPTO[alg]()))
    wrong = padding.PSS(mgf=padding.MGF1(CRYPTO[alg]()), salt_length=salt - 1)
    with pytest.raises(InvalidSignature):
        rsa_public(keys["rsa"]).verify(sig.signature.sig, digest, wrong, Prehashed(CRYPTO[alg]()))


# --- the scheme rules ---------------------------------------------------------------------------------


def test_scheme_errors(tpm, keys):
    d256, d1 = digest_of(TPM_ALG.SHA256), digest_of(TPM_ALG.SHA1)
    at_scheme = rc_name(p(TPM_RC.SCHEME, 2))
    # A key with a scheme signs only with that scheme and hash.
    assert rc(tpm, sign_cmd(keys["rsa_ssa"].handle, d256, TPM_ALG.RSAPSS, TPM_ALG.SHA256)) == at_scheme
    assert rc(tpm, sign_cmd(keys["rsa_ssa"].handle, d1, TPM_ALG.RSASSA, TPM_ALG.SHA1)) == at_scheme
    assert rc(tpm, sign_cmd(keys["hmac"].handle, d1, TPM_ALG.HMAC, TPM_ALG.SHA1)) == at_scheme
    assert rc(tpm, sign_cmd(keys["ecc384"].handle, d256, TPM_ALG.ECDSA, TPM_ALG.SHA256)) == at_scheme
    # Neither key nor caller names one.
    for key in ("rsa", "ecc", "hmac_null"):
        assert rc(tpm, sign_cmd(keys[key].handle, d256, TPM_ALG.NULL)) == at_scheme
    # The caller's scheme does not suit the key type (libtpms places this at inScheme too).
    assert rc(tpm, sign_cmd(keys["rsa"].handle, d256, TPM_ALG.ECDSA, TPM_ALG.SHA256)) == at_scheme
    assert rc(tpm, sign_cmd(keys["rsa"].handle, d256, TPM_ALG.HMAC, TPM_ALG.SHA256)) == at_scheme
    assert rc(tpm, sign_cmd(keys["ecc"].handle, d256, TPM_ALG.RSASSA, TPM_ALG.SHA256)) == at_scheme
    assert rc(tpm, sign_cmd(keys["hmac_null"].handle, d256, TPM_ALG.ECDSA, TPM_ALG.SHA256)) == at_scheme


@pytest.mark.parametrize("alg", [TPM_ALG.SM2, TPM_ALG.ECDAA, TPM_ALG.RSAES, 0x7777])
def test_unimplemented_signature_schemes_are_refused(tpm, keys, alg):
    digest = digest_of(TPM_ALG.SHA256)
    body = tpm2b(digest) + u16(alg) + u16(TPM_ALG.SHA256) + T.TPMT_TK_HASHCHECK.pack(NULL_TICKET)
    assert rc(tpm, command(TPM_CC.Sign, body, u32(keys["ecc"].handle), pw)) == rc_name(p(TPM_RC.SCHEME, 2))
    body = tpm2b(digest) + u16(alg) + u16(TPM_ALG.SHA256) + tpm2b(bytes(32)) + tpm2b(bytes(32))
    cmd = command(TPM_CC.VerifySignature, body, u32(keys["ecc"].handle))
    assert rc(tpm, cmd) == rc_name(p(TPM_RC.SCHEME, 2))


def test_tpm_cap_algs_reports_only_the_implemented_signing_schemes(tpm):
    resp = ok(tpm, command(TPM_CC.GetCapability, u32(TPM_CAP.ALGS) + u32(0) + u32(256)))
    algs = {prop.alg for prop in T.TPMS_CAPABILITY_DATA.unpack(resp.params()[1:]).data}
    assert {TPM_ALG.RSASSA, TPM_ALG.RSAPSS, TPM_ALG.ECDSA, TPM_ALG.ECSCHNORR, TPM_ALG.HMAC} <= algs
    assert not {TPM_ALG.SM2, TPM_ALG.ECDAA} & algs


def test_bad_scheme_hash_and_ticket_fields_are_unmarshalling_errors(tpm, keys):
    handle, digest = keys["ecc"].handle, digest_of(TPM_ALG.SHA256)
    ticket = T.TPMT_TK_HASHCHECK.pack(NULL_TICKET)
    bad_hash = tpm2b(digest) + u16(TPM_ALG.ECDSA) + u16(TPM_ALG.NULL) + ticket
    assert rc(tpm, command(TPM_CC.Sign, bad_hash, u32(handle), pw)) == rc_name(p(TPM_RC.HASH, 2))
    scheme_bytes = T.TPMT_SIG_SCHEME_PLUS.pack(scheme(TPM_ALG.ECDSA, TPM_ALG.SHA256))
    bad_tag = tpm2b(digest) + scheme_bytes + u16(TPM_ST.CREATION) + u32(TPM_RH.NULL) + tpm2b(b"")
    assert rc(tpm, command(TPM_CC.Sign, bad_tag, u32(handle), pw)) == rc_name(p(TPM_RC.TAG, 3))
    bad_hierarchy = tpm2b(digest) + scheme_bytes + u16(TPM_ST.HASHCHECK) + u32(TPM_RH.LOCKOUT) + tpm2b(b"")
    assert rc(tpm, command(TPM_CC.Sign, bad_hierarchy, u32(handle), pw)) == rc_name(p(TPM_RC.VALUE, 3))
    long_digest = tpm2b(bytes(65)) + scheme_bytes + ticket
    assert rc(tpm, command(TPM_CC.Sign, long_digest, u32(handle), pw)) == rc_name(p(TPM_RC.SIZE, 1))


def test_an_unticketed_digest_must_have_the_scheme_hash_size(tpm, keys):
    for key, sch in (("rsa", TPM_ALG.RSASSA), ("ecc", TPM_ALG.ECDSA), ("hmac_null", TPM_ALG.HMAC)):
        for size in (0, 20, 31, 33, 64):
            cmd = sign_cmd(keys[key].handle, bytes(size), sch, TPM_ALG.SHA256)
            assert rc(tpm, cmd) == rc_name(p(TPM_RC.SIZE, 1)), (key, size)


# --- restricted keys and hashcheck tickets ------------------------------------------------------------


@pytest.mark.parametrize("key", ["rsa_restricted", "ecc_restricted"])
def test_restricted_key_signs_only_ticketed_digests(tpm, keys, key):
    signer = keys[key]
    at_ticket = rc_name(p(TPM_RC.TICKET, 3))
    hashed = tpm_hash(tpm, b"data the TPM hashed")
    assert hashed.validation.hierarchy == TPM_RH.OWNER and hashed.validation.digest
    sig = tpm_sign(tpm, signer.handle, hashed.outHash, TPM_ALG.NULL, ticket=hashed.validation)
    check_outside(signer, sig, hashed.outHash)
    tpm_verify(tpm, signer.handle, hashed.outHash, sig)
    # No ticket, a ticket for another digest, hierarchy or hash: refused.
    assert rc(tpm, sign_cmd(signer.handle, hashed.outHash, TPM_ALG.NULL)) == at_ticket
    other = digest_of(TPM_ALG.SHA256, b"data the TPM did not hash")
    assert rc(tpm, sign_cmd(signer.handle, other, TPM_ALG.NULL, ticket=hashed.validation)) == at_ticket
    moved = T.TPMT_TK_HASHCHECK(tag=TPM_ST.HASHCHECK, hierarchy=TPM_RH.ENDORSEMENT, digest=hashed.validation.digest)
    assert rc(tpm, sign_cmd(signer.handle, hashed.outHash, TPM_ALG.NULL, ticket=moved)) == at_ticket
    flipped = bytearray(hashed.validation.digest)
    flipped[0] ^= 1
    forged = T.TPMT_TK_HASHCHECK(tag=TPM_ST.HASHCHECK, hierarchy=TPM_RH.OWNER, digest=bytes(flipped))
    assert rc(tpm, sign_cmd(signer.handle, hashed.outHash, TPM_ALG.NULL, ticket=forged)) == at_ticket
    sha384 = tpm_hash(tpm, b"data the TPM hashed", TPM_ALG.SHA384)
    cmd = sign_cmd(signer.handle, sha384.outHash[:32], TPM_ALG.NULL, ticket=sha384.validation)
    assert rc(tpm, cmd) == at_ticket


def test_restricted_key_refuses_digests_of_tpm_generated_data(tpm, keys):
    """Hash gives no ticket for data starting with TPM_GENERATED_VALUE, so a restricted key
    cannot be made to sign something that looks like an attestation structure."""
    signer = keys["rsa_restricted"]
    hashed = tpm_hash(tpm, TPM_GENERATED + b"a forged TPMS_ATTEST")
    assert hashed.validation == NULL_TICKET
    cmd = sign_cmd(signer.handle, hashed.outHash, TPM_ALG.NULL, ticket=hashed.validation)
    assert rc(tpm, cmd) == rc_name(p(TPM_RC.TICKET, 3))
    # The same through a sequence, the marker split over the start.
    seq = handle_of(ok(tpm, command(TPM_CC.HashSequenceStart, tpm2b(b"") + u16(TPM_ALG.SHA256))))
    ok(tpm, command(TPM_CC.SequenceUpdate, tpm2b(TPM_GENERATED), u32(seq), b""))
    done = SEQ_OUT.unpack(
        ok(tpm, command(TPM_CC.SequenceComplete, tpm2b(b"rest") + u32(TPM_RH.OWNER), u32(seq), b"")).params()
    )
    assert done.validation == NULL_TICKET
    cmd = sign_cmd(signer.handle, done.result, TPM_ALG.NULL, ticket=done.validation)
    assert rc(tpm, cmd) == rc_name(p(TPM_RC.TICKET, 3))
    # A NULL-hierarchy hash gets no ticket either.
    null = tpm_hash(tpm, b"ordinary data", hierarchy=TPM_RH.NULL)
    assert null.validation == NULL_TICKET
    cmd = sign_cmd(signer.handle, null.outHash, TPM_ALG.NULL, ticket=null.validation)
    assert rc(tpm, cmd) == rc_name(p(TPM_RC.TICKET, 3))


def test_restricted_key_accepts_a_sequence_ticket(tpm, keys):
    signer = keys["ecc_restricted"]
    seq = handle_of(ok(tpm, command(TPM_CC.HashSequenceStart, tpm2b(b"") + u16(TPM_ALG.SHA256))))
    ok(tpm, command(TPM_CC.SequenceUpdate, tpm2b(b"part one, "), u32(seq), b""))
    done = SEQ_OUT.unpack(
        ok(tpm, command(TPM_CC.SequenceComplete, tpm2b(b"part two") + u32(TPM_RH.OWNER), u32(seq), b"")).params()
    )
    assert done.result == hashlib.sha256(b"part one, part two").digest()
    sig = tpm_sign(tpm, signer.handle, done.result, TPM_ALG.ECDSA, TPM_ALG.SHA256, ticket=done.validation)
    check_outside(signer, sig, done.result)


def test_unrestricted_key_checks_a_ticket_it_is_given(tpm, keys):
    signer = keys["ecc"]
    hashed = tpm_hash(tpm, b"anything")
    sig = tpm_sign(tpm, signer.handle, hashed.outHash, TPM_ALG.ECDSA, TPM_ALG.SHA256, ticket=hashed.validation)
    check_outside(signer, sig, hashed.outHash)
    bogus = T.TPMT_TK_HASHCHECK(tag=TPM_ST.HASHCHECK, hierarchy=TPM_RH.OWNER, digest=bytes(64))
    cmd = sign_cmd(signer.handle, hashed.outHash, TPM_ALG.ECDSA, TPM_ALG.SHA256, ticket=bogus)
    assert rc(tpm, cmd) == rc_name(p(TPM_RC.TICKET, 3))


# --- which keys may sign ---------------------------------------------------------------------------


def test_sign_key_errors(tpm, keys):
    digest = digest_of(TPM_ALG.SHA256)
    at_key = rc_name(h(TPM_RC.KEY, 1))
    assert rc(tpm, sign_cmd(keys["srk"], digest, TPM_ALG.ECDSA, TPM_ALG.SHA256)) == at_key
    assert rc(tpm, sign_cmd(keys["ecc_decrypt"].handle, digest, TPM_ALG.ECDSA, TPM_ALG.SHA256)) == at_key
    seq = handle_of(ok(tpm, command(TPM_CC.HashSequenceStart, tpm2b(b"") + u16(TPM_ALG.SHA256))))
    try:
        assert rc(tpm, sign_cmd(seq, digest, TPM_ALG.ECDSA, TPM_ALG.SHA256, auth=b"")) == at_key
    finally:
        ok(tpm, command(TPM_CC.FlushContext, u32(seq)))
    x509 = sign_cmd(keys["ecc_x509"].handle, digest, TPM_ALG.ECDSA, TPM_ALG.SHA256)
    assert rc(tpm, x509) == rc_name(h(TPM_RC.ATTRIBUTES, 1))
    wrong_auth = sign_cmd(keys["ecc"].handle, digest, TPM_ALG.ECDSA, TPM_ALG.SHA256, auth=b"wrong")
    assert rc(tpm, wrong_auth) == rc_name(TPM_RC.AUTH_FAIL | RC_S | 1 << 8)
    assert rc(tpm, sign_cmd(0x80FFFFFF, digest, TPM_ALG.ECDSA, TPM_ALG.SHA256)) != rc_name(TPM_RC.SUCCESS)
    assert rc(tpm, command(TPM_CC.Sign, tpm2b(digest), u32(keys["ecc"].handle))) == rc_name(TPM_RC.AUTH_MISSING)


def test_sign_is_cancelable_and_verify_signature_needs_no_authorization():
    sign, verify = COMMANDS.get(TPM_CC.Sign), COMMANDS.get(TPM_CC.VerifySignature)
    assert sign.cancelable and not verify.cancelable
    assert [hs.name for hs in sign.auth_handles] == ["keyHandle"] and not verify.auth_handles


def test_sign_with_a_persistent_key(tpm, keys):
    persistent = 0x81000100
    signer = keys["ecc"]
    ok(tpm, command(TPM_CC.EvictControl, u32(persistent), u32(TPM_RH.OWNER) + u32(signer.handle), b""))
    try:
        digest = digest_of(TPM_ALG.SHA384)
        sig = tpm_sign(tpm, persistent, digest, TPM_ALG.ECDSA, TPM_ALG.SHA384)
        check_outside(signer, sig, digest)
        ticket = tpm_verify(tpm, persistent, digest, sig)
        assert ticket.digest == verified_hmac(tpm, TPM_RH.OWNER, digest, signer.name)
    finally:
        ok(tpm, command(TPM_CC.EvictControl, u32(persistent), u32(TPM_RH.OWNER) + u32(persistent), b""))


# --- VerifySignature ----------------------------------------------------------------------------------


def _tampered(sig):
    """The same signature with one bit of its value flipped."""
    raw = bytearray(T.TPMT_SIGNATURE_PLUS.pack(sig))
    raw[-1] ^= 1
    return T.TPMT_SIGNATURE_PLUS.unpack(bytes(raw))


@pytest.mark.parametrize(
    ("key", "sch"), [("rsa", TPM_ALG.RSASSA), ("rsa", TPM_ALG.RSAPSS), ("ecc", TPM_ALG.ECDSA), ("hmac", TPM_ALG.HMAC)]
)
def test_verify_refuses_bad_signatures(tpm, keys, key, sch):
    signer, digest = keys[key], digest_of(TPM_ALG.SHA256)
    sig = tpm_sign(tpm, signer.handle, digest, sch, TPM_ALG.SHA256)
    bad = rc_name(p(TPM_RC.SIGNATURE, 2))
    assert rc(tpm, verify_cmd(signer.handle, digest, _tampered(sig))) == bad
    assert rc(tpm, verify_cmd(signer.handle, digest_of(TPM_ALG.SHA256, b"other"), sig)) == bad
    assert rc(tpm, verify_cmd(signer.handle, digest[:20], sig)) == bad


def test_verify_signature_errors(tpm, keys):
    digest = digest_of(TPM_ALG.SHA256)
    rsa_sig = tpm_sign(tpm, keys["rsa"].handle, digest, TPM_ALG.RSASSA, TPM_ALG.SHA256)
    ecc_sig = tpm_sign(tpm, keys["ecc"].handle, digest, TPM_ALG.ECDSA, TPM_ALG.SHA256)
    hmac_sig = tpm_sign(tpm, keys["hmac"].handle, digest, TPM_ALG.NULL)
    at_scheme, bad = rc_name(p(TPM_RC.SCHEME, 2)), rc_name(p(TPM_RC.SIGNATURE, 2))
    # A signature of another key type.
    assert rc(tpm, verify_cmd(keys["ecc"].handle, digest, rsa_sig)) == at_scheme
    assert rc(tpm, verify_cmd(keys["rsa"].handle, digest, ecc_sig)) == at_scheme
    assert rc(tpm, verify_cmd(keys["hmac"].handle, digest, ecc_sig)) == at_scheme
    assert rc(tpm, verify_cmd(keys["rsa"].handle, digest, hmac_sig)) == at_scheme
    # Out-of-range ECDSA values, a short RSA signature.
    ecdsa = ecc_sig.signature
    for r, s in ((0, 1), (1, 0), (P256_ORDER, 1), (1, P256_ORDER)):
        values = T.TPMS_SIGNATURE_ECC(
            hash=ecdsa.hash, signatureR=r.to_bytes(32, "big"), signatureS=s.to_bytes(32, "big")
        )
        sig = T.TPMT_SIGNATURE_PLUS(sigAlg=TPM_ALG.ECDSA, signature=values)
        assert rc(tpm, verify_cmd(keys["ecc"].handle, digest, sig)) == bad
    short = T.TPMT_SIGNATURE_PLUS(
        sigAlg=TPM_ALG.RSASSA, signature=T.TPMS_SIGNATURE_RSA(hash=TPM_ALG.SHA256, sig=rsa_sig.signature.sig[1:])
    )
    assert rc(tpm, verify_cmd(keys["rsa"].handle, digest, short)) == bad
    # An RSASSA signature presented as PSS, or with another hash.
    as_pss = T.TPMT_SIGNATURE_PLUS(sigAlg=TPM_ALG.RSAPSS, signature=rsa_sig.signature)
    assert rc(tpm, verify_cmd(keys["rsa"].handle, digest, as_pss)) == bad
    other_hash = T.TPMS_SIGNATURE_RSA(hash=TPM_ALG.SHA1, sig=rsa_sig.signature.sig)
    sig = T.TPMT_SIGNATURE_PLUS(sigAlg=TPM_ALG.RSASSA, signature=other_hash)
    assert rc(tpm, verify_cmd(keys["rsa"].handle, digest_of(TPM_ALG.SHA1), sig)) == bad
    # An HMAC key with a scheme verifies only its own hash, even if the HMAC is right.
    sha1 = digest_of(TPM_ALG.SHA1)
    weaker = T.TPMT_HA(hashAlg=TPM_ALG.SHA1, digest=hmac.new(HMAC_KEY, sha1, "sha1").digest())
    sig = T.TPMT_SIGNATURE_PLUS(sigAlg=TPM_ALG.HMAC, signature=weaker)
    assert rc(tpm, verify_cmd(keys["hmac"].handle, sha1, sig)) == bad
    # Not a signing key.
    at_attrs = rc_name(h(TPM_RC.ATTRIBUTES, 1))
    assert rc(tpm, verify_cmd(keys["srk"], digest, ecc_sig)) == at_attrs
    assert rc(tpm, verify_cmd(keys["ecc_decrypt"].handle, digest, ecc_sig)) == at_attrs
    # Unmarshalling: a NULL signature, an HMAC without a hash.
    null_sig = tpm2b(digest) + u16(TPM_ALG.NULL)
    assert rc(tpm, command(TPM_CC.VerifySignature, null_sig, u32(keys["ecc"].handle))) == at_scheme
    no_hash = tpm2b(digest) + u16(TPM_ALG.HMAC) + u16(TPM_ALG.NULL)
    assert rc(tpm, command(TPM_CC.VerifySignature, no_hash, u32(keys["hmac"].handle))) == rc_name(p(TPM_RC.HASH, 2))


def test_verify_signatures_made_outside(tpm, keys):
    """ECDSA over digests of any length (the leftmost bits of the order's size are signed)."""
    signer = keys["ecc"]
    private = ecc_private_key(tpm.engine.volatile.objects.loaded[signer.handle])
    cases = [
        (digest_of(TPM_ALG.SHA1), digest_of(TPM_ALG.SHA1), hashes.SHA1()),
        (b"ten octets", bytes(22) + b"ten octets", hashes.SHA256()),  # e = the short digest
        (digest_of(TPM_ALG.SHA512), digest_of(TPM_ALG.SHA512), hashes.SHA512()),
    ]
    for digest, signed, prehash in cases:
        r, s = decode_dss_signature(private.sign(signed, ec.ECDSA(Prehashed(prehash))))
        values = T.TPMS_SIGNATURE_ECC(
            hash=TPM_ALG.SHA256, signatureR=r.to_bytes(32, "big"), signatureS=s.to_bytes(32, "big")
        )
        sig = T.TPMT_SIGNATURE_PLUS(sigAlg=TPM_ALG.ECDSA, signature=values)
        tpm_verify(tpm, signer.handle, digest, sig)
        changed = bytes([digest[0] ^ 1]) + digest[1:]
        assert rc(tpm, verify_cmd(signer.handle, changed, sig)) == rc_name(p(TPM_RC.SIGNATURE, 2))
        if len(digest) * 8 > P256_ORDER.bit_length():  # bits beyond the order's are not signed
            tpm_verify(tpm, signer.handle, digest[:-1] + bytes([digest[-1] ^ 1]), sig)
    mac = hmac.new(HMAC_NULL_KEY, b"short", "sha384").digest()
    sig = T.TPMT_SIGNATURE_PLUS(sigAlg=TPM_ALG.HMAC, signature=T.TPMT_HA(hashAlg=TPM_ALG.SHA384, digest=mac))
    tpm_verify(tpm, keys["hmac_null"].handle, b"short", sig)


def test_null_hierarchy_key_gets_a_null_verified_ticket(tpm):
    handle = handle_of(ok(tpm, create_primary_cmd(ecc_signer(), TPM_RH.NULL)))
    try:
        digest = digest_of(TPM_ALG.SHA256)
        sig = tpm_sign(tpm, handle, digest, TPM_ALG.ECDSA, TPM_ALG.SHA256)
        ticket = tpm_verify(tpm, handle, digest, sig)
        assert (ticket.tag, ticket.hierarchy, ticket.digest) == (TPM_ST.VERIFIED, TPM_RH.NULL, b"")
    finally:
        ok(tpm, command(TPM_CC.FlushContext, u32(handle)))


def test_endorsement_key_ticket_is_under_the_endorsement_proof(tpm):
    handle = handle_of(ok(tpm, create_primary_cmd(ecc_signer(), TPM_RH.ENDORSEMENT)))
    try:
        public = read_public(tpm, handle)
        digest = digest_of(TPM_ALG.SHA256)
        sig = tpm_sign(tpm, handle, digest, TPM_ALG.ECDSA, TPM_ALG.SHA256)
        ticket = tpm_verify(tpm, handle, digest, sig)
        assert ticket.hierarchy == TPM_RH.ENDORSEMENT
        assert ticket.digest == verified_hmac(tpm, TPM_RH.ENDORSEMENT, digest, Key(handle, public).name)
    finally:
        ok(tpm, command(TPM_CC.FlushContext, u32(handle)))


# --- public-only keys ---------------------------------------------------------------------------------


def _public_only(tpm, key: Key) -> int:
    """A copy of ``key`` without its sensitive part, loaded by TPM2_LoadExternal."""
    public = tpm.engine.volatile.objects.loaded[key.handle].public
    resp = Response(tpm.execute(command(TPM_CC.LoadExternal, u16(0) + tpm2b(public) + u32(TPM_RH.NULL))))
    assert resp.rc == 0, rc_name(resp.rc)
    return int.from_bytes(resp.raw[10:14], "big")


@pytest.mark.parametrize(("key", "sch"), [("rsa", TPM_ALG.RSAPSS), ("ecc", TPM_ALG.ECDSA)])
def test_public_only_key_verifies_but_cannot_sign(tpm, keys, key, sch):
    digest = digest_of(TPM_ALG.SHA256)
    sig = tpm_sign(tpm, keys[key].handle, digest, sch, TPM_ALG.SHA256)
    handle = _public_only(tpm, keys[key])
    try:
        ticket = tpm_verify(tpm, handle, digest, sig)
        assert ticket.hierarchy == TPM_RH.NULL and ticket.digest == b""
        # No private part, so no authValue to prove: refused at authorization, as libtpms does (0x12f).
        assert rc(tpm, sign_cmd(handle, digest, sch, TPM_ALG.SHA256)) == rc_name(TPM_RC.AUTH_UNAVAILABLE)
    finally:
        ok(tpm, command(TPM_CC.FlushContext, u32(handle)))


def test_public_only_key_stays_public_only_through_a_saved_context(tpm, keys):
    """tpm2-tools keeps every loaded key as a context file: the round trip must not give a
    public-only copy a usable (empty) authValue and a missing private key."""
    handle = _public_only(tpm, keys["ecc"])
    saved = ok(tpm, command(TPM_CC.ContextSave, handles=u32(handle))).params()
    ok(tpm, command(TPM_CC.FlushContext, u32(handle)))
    loaded = int.from_bytes(ok(tpm, command(TPM_CC.ContextLoad, saved)).raw[10:14], "big")
    try:
        digest = digest_of(TPM_ALG.SHA256)
        assert rc(tpm, sign_cmd(loaded, digest, TPM_ALG.ECDSA, TPM_ALG.SHA256)) == rc_name(TPM_RC.AUTH_UNAVAILABLE)
    finally:
        ok(tpm, command(TPM_CC.FlushContext, u32(loaded)))


def test_public_only_hmac_key_cannot_verify(tpm, keys):
    digest = digest_of(TPM_ALG.SHA256)
    sig = tpm_sign(tpm, keys["hmac"].handle, digest, TPM_ALG.NULL)
    handle = _public_only(tpm, keys["hmac"])
    try:
        assert rc(tpm, verify_cmd(handle, digest, sig)) == rc_name(p(TPM_RC.HANDLE, 2))
    finally:
        ok(tpm, command(TPM_CC.FlushContext, u32(handle)))
