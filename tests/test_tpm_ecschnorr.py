"""EC-Schnorr (TPM_ALG_ECSCHNORR) in TPM2_Sign, TPM2_VerifySignature and TPM2_Quote, through
Engine.execute, against Debian's swtpm (libtpms) with the same external key in both TPMs,
and through Debian's tpm2-tools (tpm2_sign -s ecschnorr) against ``vtpm-cuse socket``.

EC-Schnorr signatures are randomised, so they cannot be compared byte for byte; instead a
signature made by either TPM must verify on both, a tampered one must fail on both with
the same response code, and every scheme refusal must be libtpms' code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from test_tpm_signing import SIGN_OUT, handle_of, p, scheme, sign_cmd, tpm_hash, verify_cmd

from support.engine_oracle import EngineOracle
from support.object_templates import (
    NO_SYM,
    RESTRICTED,
    SIGN,
    SIGNING,
    USER_WITH_AUTH,
    create_primary_cmd,
    ecc_template,
    pw,
)
from support.tpm_client import Response, command, tpm2b, u32
from tests.test_sockets_tpm2_tools import daemon, tpm2  # noqa: F401 (the fixtures)
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_ECC_CURVE, TPM_RH
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import TPM_RC, rc_name
from vtpm_cuse.tpm.marshal import Reader, Struct

pytestmark = pytest.mark.swtpm

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
CURVES = {
    TPM_ECC_CURVE.NIST_P256: (ec.SECP256R1(), 32),
    TPM_ECC_CURVE.NIST_P384: (ec.SECP384R1(), 48),
    TPM_ECC_CURVE.NIST_P521: (ec.SECP521R1(), 66),
}
HASHLIB = {TPM_ALG.SHA1: "sha1", TPM_ALG.SHA256: "sha256", TPM_ALG.SHA384: "sha384", TPM_ALG.SHA512: "sha512"}
#: VerifySignature's answer to a signature that is not genuine (libtpms': asserted too).
BAD_SIGNATURE = rc_name(p(TPM_RC.SIGNATURE, 2))
QUOTE_OUT = Struct("Quote_Out", [("quoted", T.TPM2B_ATTEST), ("signature", T.TPMT_SIGNATURE_PLUS)])


@pytest.fixture(scope="module")
def pair():
    from support.swtpm_oracle import SwtpmOracle

    oracle = SwtpmOracle()
    ours = EngineOracle(Engine(max_objects=3))
    try:
        for t in (oracle, ours):
            assert Response(t.execute(STARTUP_CLEAR)).rc == 0
        yield oracle, ours
    finally:
        oracle.close()


def run(tpm, cmd: bytes) -> Response:
    return Response(tpm.execute(cmd))


def ok(tpm, cmd: bytes) -> Response:
    resp = run(tpm, cmd)
    assert resp.rc == 0, rc_name(resp.rc)
    return resp


def digest_of(alg: int, data: bytes = b"signed with EC-Schnorr") -> bytes:
    return hashlib.new(HASHLIB[alg], data).digest()


class ExternalKey:
    """One caller-held ECC key, loaded (private part too) into both TPMs with LoadExternal."""

    def __init__(self, pair, curve_id: int, key_scheme: int = TPM_ALG.NULL, key_hash: int | None = None) -> None:
        curve, size = CURVES[curve_id]
        private = ec.generate_private_key(curve)
        numbers = private.public_key().public_numbers()
        details = None if key_hash is None else T.TPMS_SCHEME_HASH(hashAlg=key_hash)
        area = T.TPMT_PUBLIC(
            type=TPM_ALG.ECC,
            nameAlg=TPM_ALG.SHA256,
            objectAttributes=SIGN | USER_WITH_AUTH,
            authPolicy=b"",
            parameters=T.TPMS_ECC_PARMS(
                symmetric=NO_SYM,
                scheme=T.TPMT_ECC_SCHEME(scheme=key_scheme, details=details),
                curveID=curve_id,
                kdf=T.TPMT_KDF_SCHEME(scheme=TPM_ALG.NULL, details=None),
            ),
            unique=T.TPMS_ECC_POINT(x=numbers.x.to_bytes(size, "big"), y=numbers.y.to_bytes(size, "big")),
        )
        sensitive = T.TPMT_SENSITIVE(
            sensitiveType=TPM_ALG.ECC,
            authValue=b"",
            seedValue=b"",
            sensitive=private.private_numbers().private_value.to_bytes(size, "big"),
        )
        body = T.TPM2B_SENSITIVE.pack(sensitive) + T.TPM2B_PUBLIC.pack(area) + u32(TPM_RH.NULL)
        self.pair = pair
        self.handles = [int.from_bytes(ok(t, command(TPM_CC.LoadExternal, body)).raw[10:14], "big") for t in pair]

    def __enter__(self) -> ExternalKey:
        return self

    def __exit__(self, *exc) -> None:
        for t, handle in zip(self.pair, self.handles, strict=True):
            ok(t, command(TPM_CC.FlushContext, u32(handle)))

    def sign(self, which: int, digest: bytes, alg: int, hash_alg: int | None = None):
        cmd = sign_cmd(self.handles[which], digest, alg, hash_alg)
        return SIGN_OUT.unpack(ok(self.pair[which], cmd).params()).signature

    def verify_rc(self, which: int, digest: bytes, signature) -> int:
        return run(self.pair[which], verify_cmd(self.handles[which], digest, signature)).rc

    def same_rc(self, make_cmd) -> str:
        """Both TPMs' response code for the command ``make_cmd(handle)``; they must agree."""
        libtpms, ours = (run(t, make_cmd(handle)).rc for t, handle in zip(self.pair, self.handles, strict=True))
        assert rc_name(ours) == rc_name(libtpms)
        return rc_name(ours)


def tampered(signature, field: str):
    ecc = signature.signature
    value = bytearray(getattr(ecc, field))
    value[-1] ^= 1
    return T.TPMT_SIGNATURE_PLUS(sigAlg=signature.sigAlg, signature=ecc.__class__(**{**vars(ecc), field: bytes(value)}))


@pytest.mark.parametrize(
    ("curve_id", "alg"),
    [
        (TPM_ECC_CURVE.NIST_P256, TPM_ALG.SHA256),
        (TPM_ECC_CURVE.NIST_P256, TPM_ALG.SHA384),  # the hash is cut to the order's 32 octets
        (TPM_ECC_CURVE.NIST_P384, TPM_ALG.SHA384),
        (TPM_ECC_CURVE.NIST_P384, TPM_ALG.SHA1),
        (TPM_ECC_CURVE.NIST_P521, TPM_ALG.SHA512),
    ],
)
def test_signatures_cross_verify_with_libtpms(pair, curve_id, alg):
    digest = digest_of(alg)
    size = CURVES[curve_id][1]
    with ExternalKey(pair, curve_id) as key:
        for signer in (0, 1):
            sig = key.sign(signer, digest, TPM_ALG.ECSCHNORR, alg)
            assert sig.sigAlg == TPM_ALG.ECSCHNORR and sig.signature.hash == alg
            assert len(sig.signature.signatureR) == len(sig.signature.signatureS) == size
            for verifier in (0, 1):
                assert key.verify_rc(verifier, digest, sig) == 0, (signer, verifier)
        ours = key.sign(1, digest, TPM_ALG.ECSCHNORR, alg)
        assert ours != key.sign(1, digest, TPM_ALG.ECSCHNORR, alg)  # a fresh k each time
        for bad, what in (
            (tampered(ours, "signatureS"), digest),
            (tampered(ours, "signatureR"), digest),
            (ours, digest_of(alg, b"another message")),
        ):
            code = key.same_rc(lambda handle, bad=bad, what=what: verify_cmd(handle, what, bad))
            assert code == BAD_SIGNATURE, code
        # The same (r, s) read as an ECDSA signature does not verify either.
        as_ecdsa = T.TPMT_SIGNATURE_PLUS(sigAlg=TPM_ALG.ECDSA, signature=ours.signature)
        assert key.same_rc(lambda handle: verify_cmd(handle, digest, as_ecdsa)) == BAD_SIGNATURE


def test_signature_values_out_of_range_are_refused_as_libtpms_does(pair):
    digest = digest_of(TPM_ALG.SHA256)
    n = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
    with ExternalKey(pair, TPM_ECC_CURVE.NIST_P256) as key:
        good = key.sign(1, digest, TPM_ALG.ECSCHNORR, TPM_ALG.SHA256).signature
        for r, s in ((b"", good.signatureS), (good.signatureR, n.to_bytes(32, "big")), (bytes(32), bytes(32))):
            sig = T.TPMT_SIGNATURE_PLUS(
                sigAlg=TPM_ALG.ECSCHNORR,
                signature=T.TPMS_SIGNATURE_ECC(hash=TPM_ALG.SHA256, signatureR=r, signatureS=s),
            )
            assert key.same_rc(lambda handle, sig=sig: verify_cmd(handle, digest, sig)) == BAD_SIGNATURE


def test_key_scheme_against_caller_scheme_as_libtpms(pair):
    digest = digest_of(TPM_ALG.SHA256)
    with ExternalKey(pair, TPM_ECC_CURVE.NIST_P256, TPM_ALG.ECSCHNORR, TPM_ALG.SHA256) as key:
        # No scheme from the caller: the key's own.
        for which in (0, 1):
            sig = key.sign(which, digest, TPM_ALG.NULL)
            assert (sig.sigAlg, sig.signature.hash) == (TPM_ALG.ECSCHNORR, TPM_ALG.SHA256)
            assert key.verify_rc(1 - which, digest, sig) == 0
        assert key.same_rc(lambda handle: sign_cmd(handle, digest, TPM_ALG.ECSCHNORR, TPM_ALG.SHA256)) == "SUCCESS"
        refused = (
            (TPM_ALG.ECDSA, TPM_ALG.SHA256),
            (TPM_ALG.ECSCHNORR, TPM_ALG.SHA384),
            (TPM_ALG.RSASSA, TPM_ALG.SHA256),
        )
        for alg, hash_alg in refused:
            code = key.same_rc(lambda handle, alg=alg, hash_alg=hash_alg: sign_cmd(handle, digest, alg, hash_alg))
            assert code.startswith("SCHEME"), (alg, hash_alg, code)
    # An ECDSA key refuses EC-Schnorr from the caller, and verifies EC-Schnorr signatures (no
    # key-scheme check on ECC verification, in libtpms as here).
    with ExternalKey(pair, TPM_ECC_CURVE.NIST_P256, TPM_ALG.ECDSA, TPM_ALG.SHA256) as ecdsa_key:
        code = ecdsa_key.same_rc(lambda handle: sign_cmd(handle, digest, TPM_ALG.ECSCHNORR, TPM_ALG.SHA256))
        assert code.startswith("SCHEME"), code
    with ExternalKey(pair, TPM_ECC_CURVE.NIST_P256) as key:
        sig = key.sign(0, digest, TPM_ALG.ECSCHNORR, TPM_ALG.SHA256)
        assert key.same_rc(lambda handle: verify_cmd(handle, digest, sig)) == "SUCCESS"


def test_tpm_cap_algs_reports_ecschnorr_as_libtpms(pair):
    cmd = command(TPM_CC.GetCapability, u32(TPM_CAP.ALGS) + u32(TPM_ALG.ECSCHNORR) + u32(1))
    libtpms, ours = (ok(t, cmd).raw for t in pair)
    assert ours == libtpms
    data = T.TPMS_CAPABILITY_DATA.unpack(Response(ours).params()[1:]).data
    assert [prop.alg for prop in data] == [TPM_ALG.ECSCHNORR]


def test_quote_signs_with_ecschnorr_and_verifies_on_both(pair):
    pcrs = T.TPML_PCR_SELECTION.pack([T.TPMS_PCR_SELECTION(hash=TPM_ALG.SHA256, pcrSelect=b"\x01\x00\x00")])
    with ExternalKey(pair, TPM_ECC_CURVE.NIST_P384) as key:
        for which in (0, 1):
            body = tpm2b(b"nonce") + T.TPMT_SIG_SCHEME_PLUS.pack(scheme(TPM_ALG.ECSCHNORR, TPM_ALG.SHA384)) + pcrs
            out = QUOTE_OUT.unmarshal(
                Reader(ok(pair[which], command(TPM_CC.Quote, body, u32(key.handles[which]), pw)).params())
            )
            assert out.signature.sigAlg == TPM_ALG.ECSCHNORR
            digest = hashlib.sha384(out.quoted).digest()
            for verifier in (0, 1):
                assert key.verify_rc(verifier, digest, out.signature) == 0, (which, verifier)


def test_restricted_ecschnorr_key_signs_only_ticketed_digests_as_libtpms(pair):
    """A restricted EC-Schnorr key (same template in both TPMs) follows the usual rules: an
    unticketed digest is refused with libtpms' code, a TPM2_Hash ticket lets it sign."""
    template = ecc_template(SIGNING | RESTRICTED, sym=NO_SYM, scheme=TPM_ALG.ECSCHNORR, hash_alg=TPM_ALG.SHA256)
    handles = [handle_of(ok(t, create_primary_cmd(template))) for t in pair]
    try:
        data = b"hashed by the TPM first"
        digest = hashlib.sha256(data).digest()
        codes = [rc_name(run(t, sign_cmd(h, digest, TPM_ALG.NULL)).rc) for t, h in zip(pair, handles, strict=True)]
        assert codes[0] == codes[1] and codes[1].startswith("TICKET"), codes
        for which in (0, 1):
            hashed = tpm_hash(pair[which], data)
            assert hashed.outHash == digest
            sig = SIGN_OUT.unpack(
                ok(pair[which], sign_cmd(handles[which], digest, TPM_ALG.NULL, ticket=hashed.validation)).params()
            ).signature
            assert sig.sigAlg == TPM_ALG.ECSCHNORR
            assert run(pair[which], verify_cmd(handles[which], digest, sig)).rc == 0
    finally:
        for t, h in zip(pair, handles, strict=True):
            ok(t, command(TPM_CC.FlushContext, u32(h)))


# --- through Debian's tpm2-tools against ``vtpm-cuse socket`` ---------------------------------------


@pytest.mark.parametrize(("alg", "hash_name"), [("ecc256", "sha256"), ("ecc384:ecschnorr-sha384", "sha384")])
def test_tpm2_sign_ecschnorr_and_verifysignature(tpm2, tmp_path, alg, hash_name):  # noqa: F811 (the fixture)
    """tpm2_sign -s ecschnorr (a key without a scheme, and one whose scheme is EC-Schnorr),
    tpm2_verifysignature of it, and the refusal of the signature for another message."""
    primary, pub, priv, key = (str(tmp_path / n) for n in ("primary.ctx", "key.pub", "key.priv", "key.ctx"))
    step(tpm2, "createprimary", "-C", "o", "-G", "ecc256", "-c", primary)
    step(tpm2, "create", "-C", primary, "-G", alg, "-u", pub, "-r", priv)
    step(tpm2, "load", "-C", primary, "-u", pub, "-r", priv, "-c", key)
    message, other, sig = tmp_path / "msg", tmp_path / "other", str(tmp_path / "sig")
    message.write_bytes(b"signed through tpm2-tools")
    other.write_bytes(b"not what was signed")
    step(tpm2, "sign", "-c", key, "-g", hash_name, "-s", "ecschnorr", "-o", sig, str(message))
    signature = T.TPMT_SIGNATURE.unpack(Path(sig).read_bytes())
    assert (signature.sigAlg, signature.signature.hash) == (TPM_ALG.ECSCHNORR, getattr(TPM_ALG, hash_name.upper()))
    step(tpm2, "verifysignature", "-c", key, "-g", hash_name, "-m", str(message), "-s", sig)
    refused = tpm2("verifysignature", "-c", key, "-g", hash_name, "-m", str(other), "-s", sig, check=False)
    tpm2("flushcontext", "-t")
    assert refused.returncode != 0


def step(tpm2, *args: str):  # noqa: F811 (the fixture)
    """One tool; then flush what it left in the object slots (there is no resource manager)."""
    result = tpm2(*args)
    tpm2("flushcontext", "-t")
    return result
