"""TPM2_CertifyX509 against Debian's swtpm (libtpms 0.9), the same bytes to both TPMs.

Both TPMs get the same keys through TPM2_LoadExternal (an RSA and an ECC signing key whose
private parts the test made), so the serial number -- a digest over the request and both
keys' Names -- and with it the whole addedToCertificate and tbsDigest are the same octets
in both, and an RSASSA signature too. Every bad input gets the same code, handle or
parameter number included, except where libtpms 0.9.2 departs from Part 3 (:data:`DIVERGENT`).
Left out: signHandle TPM_RH_NULL (libtpms 0.9 crashes on it) and RSASSA-PSS with SHA-1, for
which libtpms writes ``rsaPSS, NULL`` (not RSASSA-PSS-params; ``cryptography`` refuses such a
certificate) and this TPM the all-defaults empty SEQUENCE.
"""

from __future__ import annotations

import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from test_tpm_certify_x509 import (
    OUT,
    contents,
    extension,
    key_usage,
    name,
    partial,
    scheme,
    tlv,
    tpma_object,
    validity,
)
from test_tpm_certify_x509 import certify_x509_cmd as cmd
from test_tpm_symmetric import load_external_cmd

from support.engine_oracle import EngineOracle
from support.object_templates import NO_SYM, SIGN, USER_WITH_AUTH, ecc_template, keyedhash_template, rsa_template
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import rc_name

pytestmark = pytest.mark.swtpm

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
SIGNER = USER_WITH_AUTH | SIGN
RSA_KEY, ECC_KEY, DATA_OBJECT = 0x80000000, 0x80000001, 0x80000002


def rsa_external():
    private = rsa.generate_private_key(65537, 2048)
    n = private.public_key().public_numbers().n.to_bytes(256, "big")
    area = rsa_template(SIGNER, bits=2048, sym=NO_SYM)
    area = T.TPMT_PUBLIC(
        type=area.type,
        nameAlg=area.nameAlg,
        objectAttributes=SIGNER,
        authPolicy=b"",
        parameters=area.parameters,
        unique=n,
    )
    return load_external_cmd(area, TPM_ALG.RSA, private.private_numbers().p.to_bytes(128, "big"), b"")


def ecc_external():
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    area = ecc_template(SIGNER, sym=NO_SYM)
    area = T.TPMT_PUBLIC(
        type=area.type,
        nameAlg=area.nameAlg,
        objectAttributes=SIGNER,
        authPolicy=b"",
        parameters=area.parameters,
        unique=T.TPMS_ECC_POINT(x=numbers.x.to_bytes(32, "big"), y=numbers.y.to_bytes(32, "big")),
    )
    return load_external_cmd(area, TPM_ALG.ECC, private.private_numbers().private_value.to_bytes(32, "big"), b"")


def data_object_public_only():
    """A keyed-hash data object (no X.509 key, cannot sign), public part only."""
    area = keyedhash_template(USER_WITH_AUTH)
    area = T.TPMT_PUBLIC(
        type=area.type,
        nameAlg=area.nameAlg,
        objectAttributes=area.objectAttributes,
        authPolicy=b"",
        parameters=area.parameters,
        unique=bytes(32),
    )
    return command(TPM_CC.LoadExternal, u16(0) + tpm2b(T.TPMT_PUBLIC.pack(area)) + u32(TPM_RH.NULL))


@pytest.fixture(scope="module")
def pair():
    from support.swtpm_oracle import SwtpmOracle

    oracle = SwtpmOracle()
    ours = EngineOracle(Engine(max_objects=3))  # as many transient slots as libtpms
    loads = [rsa_external(), ecc_external(), data_object_public_only()]
    try:
        for t in (oracle, ours):
            assert Response(t.execute(STARTUP_CLEAR)).rc == 0
            for load, handle in zip(loads, (RSA_KEY, ECC_KEY, DATA_OBJECT), strict=True):
                resp = Response(t.execute(load))
                assert resp.rc == 0, rc_name(resp.rc)
                assert int.from_bytes(resp.raw[10:14], "big") == handle
        yield oracle, ours
    finally:
        oracle.close()


def both(pair, request: bytes) -> list:
    outs = []
    for t in pair:
        resp = Response(t.execute(request))
        assert resp.rc == 0, rc_name(resp.rc)
        outs.append(OUT.unpack(resp.params()))
    return outs


RSASSA = scheme(TPM_ALG.RSASSA, TPM_ALG.SHA256)


def test_rsassa_response_is_the_same_octets(pair):
    """addedToCertificate, tbsDigest and the (deterministic) RSASSA signature, byte for byte."""
    theirs, ours = both(pair, cmd(ECC_KEY, RSA_KEY, partial(), RSASSA))
    assert theirs.addedToCertificate == ours.addedToCertificate
    assert theirs.tbsDigest == ours.tbsDigest
    assert theirs.signature == ours.signature


@pytest.mark.parametrize(
    ("obj", "signer", "sch"),
    [
        (RSA_KEY, RSA_KEY, scheme(TPM_ALG.RSASSA, TPM_ALG.SHA1)),
        (ECC_KEY, RSA_KEY, scheme(TPM_ALG.RSAPSS, TPM_ALG.SHA256)),
        (ECC_KEY, RSA_KEY, scheme(TPM_ALG.RSAPSS, TPM_ALG.SHA512)),
        (RSA_KEY, ECC_KEY, scheme(TPM_ALG.ECDSA, TPM_ALG.SHA256)),
        (ECC_KEY, ECC_KEY, scheme(TPM_ALG.ECDSA, TPM_ALG.SHA384)),
    ],
    ids=["rsassa-sha1", "pss-sha256", "pss-sha512", "ecdsa-sha256", "ecdsa-sha384"],
)
def test_added_to_certificate_and_tbs_digest_are_the_same(pair, obj, signer, sch):
    theirs, ours = both(pair, cmd(obj, signer, partial(subject="same"), sch))
    assert theirs.addedToCertificate == ours.addedToCertificate
    assert theirs.tbsDigest == ours.tbsDigest
    assert theirs.signature.sigAlg == ours.signature.sigAlg


def test_caller_signature_algorithm_gives_the_same_octets(pair):
    mismatched = tlv(0x30, bytes.fromhex("06082a8648ce3d040302"))  # ecdsa-with-SHA256, signed with RSA
    theirs, ours = both(pair, cmd(ECC_KEY, RSA_KEY, partial(signature=mismatched), RSASSA))
    assert theirs.addedToCertificate == ours.addedToCertificate and theirs.tbsDigest == ours.tbsDigest


def error_commands() -> dict[str, bytes]:
    good = partial()
    ku = extension(key_usage(digital_signature=True))
    no_ext = tlv(0x30, name("a") + validity() + name("b"))
    return {
        "reserved": cmd(ECC_KEY, RSA_KEY, good, RSASSA, reserved=b"r"),
        "cannot sign": cmd(ECC_KEY, DATA_OBJECT, good, RSASSA),
        "wrong scheme": cmd(ECC_KEY, RSA_KEY, good, scheme(TPM_ALG.ECDSA, TPM_ALG.SHA256)),
        "no scheme": cmd(ECC_KEY, RSA_KEY, good),
        "keyed-hash object": cmd(DATA_OBJECT, RSA_KEY, good, RSASSA),
        "empty": cmd(ECC_KEY, RSA_KEY, b"", RSASSA),
        "SET": cmd(ECC_KEY, RSA_KEY, tlv(0x31, contents(good)), RSASSA),
        "trailing": cmd(ECC_KEY, RSA_KEY, good + b"\0", RSASSA),
        "truncated": cmd(ECC_KEY, RSA_KEY, good[:-1], RSASSA),
        "two sequences": cmd(ECC_KEY, RSA_KEY, tlv(0x30, name("a") + name("b") + tlv(0xA3, tlv(0x30, ku))), RSASSA),
        "five sequences": cmd(ECC_KEY, RSA_KEY, tlv(0x30, name("z") + contents(partial(signature=name("s")))), RSASSA),
        "no extensions": cmd(ECC_KEY, RSA_KEY, no_ext, RSASSA),
        "two extensions": cmd(ECC_KEY, RSA_KEY, tlv(0x30, contents(good) + tlv(0xA3, tlv(0x30, ku))), RSASSA),
        "stray integer": cmd(ECC_KEY, RSA_KEY, tlv(0x30, b"\x02\x01\x05" + contents(good)), RSASSA),
        "broken element": cmd(ECC_KEY, RSA_KEY, tlv(0x30, contents(good) + b"\x30\x05\x00"), RSASSA),
        "no keyUsage": cmd(
            ECC_KEY, RSA_KEY, partial(exts=[extension(x509.BasicConstraints(ca=False, path_length=None))]), RSASSA
        ),
        "extensions in a SET": cmd(ECC_KEY, RSA_KEY, tlv(0x30, contents(no_ext) + tlv(0xA3, tlv(0x31, ku))), RSASSA),
        "keyEncipherment": cmd(ECC_KEY, RSA_KEY, partial(exts=[extension(key_usage(key_encipherment=True))]), RSASSA),
        "nonRepudiation": cmd(ECC_KEY, RSA_KEY, partial(exts=[extension(key_usage(content_commitment=True))]), RSASSA),
        "keyAgreement": cmd(ECC_KEY, RSA_KEY, partial(exts=[extension(key_usage(key_agreement=True))]), RSASSA),
        "TPMA_OBJECT differs": cmd(ECC_KEY, RSA_KEY, partial(exts=[ku, extension(tpma_object(SIGNER | 2))]), RSASSA),
        "TPMA_OBJECT matches": cmd(ECC_KEY, RSA_KEY, partial(exts=[ku, extension(tpma_object(SIGNER))]), RSASSA),
    }


#: Where libtpms 0.9.2 departs from Part 3's TPM_RC_ATTRIBUTES "the attributes of objectHandle
#: are not compatible with the KeyUsage or TPMA_OBJECT values in the extensions" (and from the
#: reference code it was made from): a keyUsage contradiction is TPM_RC_VALUE at
#: partialCertificate, a TPMA_OBJECT one names signHandle.  This TPM answers as Part 3 says.
DIVERGENT = {
    "keyEncipherment": ("VALUE + RC_P3", "ATTRIBUTES + RC_H1"),
    "nonRepudiation": ("VALUE + RC_P3", "ATTRIBUTES + RC_H1"),
    "keyAgreement": ("VALUE + RC_P3", "ATTRIBUTES + RC_H1"),
    "TPMA_OBJECT differs": ("ATTRIBUTES + RC_H2", "ATTRIBUTES + RC_H1"),
}


def test_every_error_has_the_same_code(pair):
    got = {what: tuple(rc_name(Response(t.execute(c)).rc) for t in pair) for what, c in error_commands().items()}
    same = {what: codes for what, codes in got.items() if what not in DIVERGENT}
    assert {what: theirs for what, (theirs, _) in same.items()} == {what: ours for what, (_, ours) in same.items()}
    assert {what: got[what] for what in DIVERGENT} == DIVERGENT
    assert same["TPMA_OBJECT matches"] == ("SUCCESS", "SUCCESS")


def mutations(base: bytes, count: int, seed: int) -> list[bytes]:
    """``count`` copies of ``base`` with one to three octets changed, dropped or inserted."""
    rnd = random.Random(seed)
    out = []
    for _ in range(count):
        data = bytearray(base)
        for _ in range(rnd.randint(1, 3)):
            op, at = rnd.random(), rnd.randrange(len(data))
            if op < 0.5:
                data[at] = rnd.randrange(256)
            elif op < 0.75:
                del data[at]
            else:
                data.insert(at, rnd.randrange(256))
        out.append(bytes(data))
    return out


def test_mutated_partial_certificates_get_the_same_answer(pair):
    """Damaged DER anywhere (lengths, tags, OIDs, bit strings): the same code from both TPMs,
    and for what still parses the same response octets (an RSASSA signature is deterministic)."""
    ku = extension(key_usage(digital_signature=True), critical=True)
    base = partial(exts=[ku, extension(tpma_object(SIGNER))])
    allowed = {("ATTRIBUTES + RC_H2", "ATTRIBUTES + RC_H1")}  # DIVERGENT's TPMA_OBJECT case
    seen = set()
    for data in mutations(base, 150, seed=20261201):
        theirs, ours = (Response(t.execute(cmd(ECC_KEY, RSA_KEY, data, RSASSA))) for t in pair)
        names = (rc_name(theirs.rc), rc_name(ours.rc))
        seen.add(names[1])
        assert names[0] == names[1] or names in allowed, data.hex()
        if theirs.rc == 0:
            assert theirs.raw == ours.raw, data.hex()
    assert {"SUCCESS", "SIZE + RC_P3", "VALUE + RC_P3"} <= seen
