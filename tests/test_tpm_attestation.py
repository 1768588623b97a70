"""Attestation (Part 3 clause 18, and NV_Certify 31.16) through Engine.execute.

Every signed attestation is verified outside the TPM (cryptography, hmac) over the hash of
the TPM2B_ATTEST octets exactly as returned, and the TPMS_ATTEST is parsed back and checked
field by field against values computed here: Qualified Names from the public areas, the PCR
digest from PCR_Read, the clock from ReadClock, the firmware version from GetCapability.
"""

from __future__ import annotations

import hashlib

import pytest
from test_tpm_signing import (
    HASHES,
    HMAC_ATTRS,
    HMAC_KEY,
    Key,
    check_outside,
    ecc_signer,
    handle_of,
    ok,
    p,
    rsa_signer,
)

from support.engine_oracle import EngineOracle
from support.object_templates import (
    DECRYPT,
    FIXED_PARENT,
    FIXED_TPM,
    RESTRICTED,
    SDO,
    SIGNING,
    USER_WITH_AUTH,
    create_primary_cmd,
    creation_params,
    ecc_template,
    keyedhash_template,
)
from support.tpm_client import Response, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_PT, TPM_RH, TPM_RS_PW, TPM_ST, TPMA_NV
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_H, RC_S, TPM_RC, rc_name
from vtpm_cuse.tpm.marshal import Reader, Struct

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
SIGNED_OUT = Struct("Attest_Out", [("attest", T.TPM2B_ATTEST), ("signature", T.TPMT_SIGNATURE_PLUS)])
CREATE_OUT = Struct(
    "Create_Out",
    [
        ("outPrivate", T.TPM2B_PRIVATE),
        ("outPublic", T.TPM2B_PUBLIC),
        ("creationData", T.TPM2B_CREATION_DATA),
        ("creationHash", T.TPM2B_DIGEST),
        ("creationTicket", T.TPMT_TK_CREATION),
    ],
)
PRIMARY_OUT = Struct("CreatePrimary_Out", [("outPublic", T.TPM2B_PUBLIC)])
INDEX = 0x01500020
OWNER_RW = TPMA_NV.OWNERREAD | TPMA_NV.OWNERWRITE
PCRS = [0, 1, 7, 16]


def h(rc: int, n: int) -> int:
    return rc | RC_H | n << 8


# --- command bytes --------------------------------------------------------------------------------


def command(code: int, handles: list[int], body: bytes, auths: list[bytes] | None = None) -> bytes:
    """A command with one password session per entry of ``auths`` (TPM_ST_NO_SESSIONS without)."""
    handle_area = b"".join(u32(x) for x in handles)
    if auths is None:
        rest, tag = handle_area + body, TPM_ST.NO_SESSIONS
    else:
        sessions = b"".join(u32(TPM_RS_PW) + u16(0) + b"\x01" + tpm2b(a) for a in auths)
        rest, tag = handle_area + u32(len(sessions)) + sessions + body, TPM_ST.SESSIONS
    return u16(tag) + u32(10 + len(rest)) + u32(code) + rest


def scheme(alg: int = TPM_ALG.NULL, hash_alg: int | None = None) -> bytes:
    return u16(alg) + (b"" if alg == TPM_ALG.NULL else u16(hash_alg))


NO_SCHEME = scheme()


def selection(pcrs: list[int], alg: int = TPM_ALG.SHA256) -> bytes:
    bits = sum(1 << n for n in pcrs).to_bytes(3, "little")
    return u32(1) + u16(alg) + b"\x03" + bits


def quote_cmd(sign: int, extra: bytes = b"nonce", sch: bytes = NO_SCHEME, pcrs: bytes = selection(PCRS)) -> bytes:
    return command(TPM_CC.Quote, [sign], tpm2b(extra) + sch + pcrs, [b""])


def certify_cmd(obj: int, sign: int, extra: bytes = b"certify", sch: bytes = NO_SCHEME) -> bytes:
    return command(TPM_CC.Certify, [obj, sign], tpm2b(extra) + sch, [b"", b""])


def certify_creation_cmd(sign: int, obj: int, creation_hash: bytes, ticket, extra=b"cc", sch=NO_SCHEME) -> bytes:
    body = tpm2b(extra) + tpm2b(creation_hash) + sch + T.TPMT_TK_CREATION.pack(ticket)
    return command(TPM_CC.CertifyCreation, [sign, obj], body, [b""])


def get_time_cmd(sign: int, extra: bytes = b"time", sch: bytes = NO_SCHEME) -> bytes:
    return command(TPM_CC.GetTime, [TPM_RH.ENDORSEMENT, sign], tpm2b(extra) + sch, [b"", b""])


def nv_certify_cmd(sign: int, size: int, offset: int, index: int = INDEX, extra=b"nv", sch=NO_SCHEME) -> bytes:
    body = tpm2b(extra) + sch + u16(size) + u16(offset)
    return command(TPM_CC.NV_Certify, [sign, TPM_RH.OWNER, index], body, [b"", b""])


def run(tpm, cmd: bytes) -> Response:
    return Response(tpm.execute(cmd))


def rc(tpm, cmd: bytes) -> str:
    return rc_name(run(tpm, cmd).rc)


def signed(tpm, cmd: bytes):
    """(TPM2B_ATTEST octets, parsed TPMS_ATTEST, signature)."""
    out = SIGNED_OUT.unpack(ok(tpm, cmd).params())
    return out.attest, T.TPMS_ATTEST.unpack(out.attest), out.signature


# --- names computed outside ------------------------------------------------------------------------


def name_of(public) -> bytes:
    return u16(public.nameAlg) + hashlib.new(HASHES[public.nameAlg], T.TPMT_PUBLIC.pack(public)).digest()


def qualified(parent_qn: bytes, public) -> bytes:
    return u16(public.nameAlg) + hashlib.new(HASHES[public.nameAlg], parent_qn + name_of(public)).digest()


class Made(Key):
    """A loaded key with its Qualified Name and creation outputs."""

    def __init__(self, handle: int, public, qn: bytes, out=None) -> None:
        super().__init__(handle, public)
        self.qn, self.out = qn, out


def primary(tpm, template, hierarchy: int = TPM_RH.OWNER) -> Made:
    resp = ok(tpm, create_primary_cmd(template, hierarchy=hierarchy))
    public = PRIMARY_OUT.unmarshal(Reader(resp.params(handles=1))).outPublic
    return Made(handle_of(resp), public, qualified(u32(hierarchy), public))


def child(tpm, parent: Made, template, data: bytes = b"", outside: bytes = b"") -> Made:
    params = creation_params(template, data=data, outside=outside)
    out = CREATE_OUT.unpack(ok(tpm, command(TPM_CC.Create, [parent.handle], params, [b""])).params())
    load = T.TPM2B_PRIVATE.pack(out.outPrivate) + T.TPM2B_PUBLIC.pack(out.outPublic)
    handle = handle_of(ok(tpm, command(TPM_CC.Load, [parent.handle], load, [b""])))
    return Made(handle, out.outPublic, qualified(parent.qn, out.outPublic), out)


@pytest.fixture(scope="module")
def tpm():
    engine = EngineOracle(Engine())
    assert run(engine, STARTUP_CLEAR).rc == 0
    return engine


@pytest.fixture(scope="module")
def keys(tpm):
    srk = primary(tpm, ecc_template())
    return {
        "srk": srk,
        "rsa": child(tpm, srk, rsa_signer()),
        "aik": child(tpm, srk, rsa_signer(TPM_ALG.RSASSA, TPM_ALG.SHA256, SIGNING | RESTRICTED)),
        "ecc": child(tpm, srk, ecc_signer()),
        "ecc_aik": child(tpm, srk, ecc_signer(0x0003, TPM_ALG.ECDSA, TPM_ALG.SHA384, SIGNING | RESTRICTED)),
        "hmac": child(tpm, srk, keyedhash_template(HMAC_ATTRS, TPM_ALG.HMAC, TPM_ALG.SHA256), data=HMAC_KEY),
        "decrypt": child(tpm, srk, ecc_signer(attrs=FIXED_TPM | FIXED_PARENT | SDO | USER_WITH_AUTH | DECRYPT)),
        "ek_signer": primary(tpm, ecc_signer(0x0003, TPM_ALG.ECDSA, TPM_ALG.SHA256), TPM_RH.ENDORSEMENT),
        "platform_signer": primary(tpm, rsa_signer(TPM_ALG.RSAPSS, TPM_ALG.SHA256), TPM_RH.PLATFORM),
    }


# --- values the attestation must match ---------------------------------------------------------------


def clock_now(tpm):
    resp = ok(tpm, command(TPM_CC.ReadClock, [], b""))
    return T.TPMS_TIME_INFO.unpack(resp.params())


def firmware(tpm) -> int:
    body = u32(TPM_CAP.TPM_PROPERTIES) + u32(TPM_PT.FIRMWARE_VERSION_1) + u32(2)
    data = T.TPMS_CAPABILITY_DATA.unpack(ok(tpm, command(TPM_CC.GetCapability, [], body)).params()[1:])
    values = {prop.property: prop.value for prop in data.data}
    return values[TPM_PT.FIRMWARE_VERSION_1] << 32 | values[TPM_PT.FIRMWARE_VERSION_2]


def pcr_digest(tpm, alg: int, pcrs: list[int], bank: int = TPM_ALG.SHA256) -> bytes:
    """H_alg(PCR values in order), read with PCR_Read one PCR at a time."""
    return hashlib.new(HASHES[alg], b"".join(_pcr_values(tpm, bank, pcrs))).digest()


def verify(key: Made, raw: bytes, sig) -> None:
    alg = sig.signature.hashAlg if sig.sigAlg == TPM_ALG.HMAC else sig.signature.hash
    check_outside(key, sig, hashlib.new(HASHES[alg], raw).digest(), HMAC_KEY)


def check_header(att, kind: int, signer_qn: bytes, extra: bytes) -> None:
    assert att.magic == T.TPM_GENERATED == 0xFF544347
    assert att.type == kind
    assert att.qualifiedSigner == signer_qn
    assert att.extraData == extra


# --- TPM2_Quote -----------------------------------------------------------------------------------

QUOTE_CASES = [
    ("rsa", TPM_ALG.RSASSA, TPM_ALG.SHA256),
    ("rsa", TPM_ALG.RSAPSS, TPM_ALG.SHA384),
    ("rsa", TPM_ALG.RSASSA, TPM_ALG.SHA1),
    ("aik", TPM_ALG.NULL, TPM_ALG.SHA256),
    ("ecc", TPM_ALG.ECDSA, TPM_ALG.SHA256),
    ("ecc", TPM_ALG.ECDSA, TPM_ALG.SHA512),
    ("ecc_aik", TPM_ALG.ECDSA, TPM_ALG.SHA384),
    ("hmac", TPM_ALG.NULL, TPM_ALG.SHA256),
    ("ek_signer", TPM_ALG.NULL, TPM_ALG.SHA256),
    ("platform_signer", TPM_ALG.RSAPSS, TPM_ALG.SHA256),
]


@pytest.mark.parametrize(("key", "sch", "alg"), QUOTE_CASES, ids=[f"{k}-{s.name}-{a.name}" for k, s, a in QUOTE_CASES])
def test_quote_verifies_outside_and_carries_the_pcr_digest(tpm, keys, key, sch, alg):
    signer = keys[key]
    ok(tpm, command(TPM_CC.PCR_Extend, [16], u32(1) + u16(TPM_ALG.SHA256) + bytes(range(32)), [b""]))
    raw, att, sig = signed(tpm, quote_cmd(signer.handle, b"fresh nonce", scheme(sch, alg)))
    verify(signer, raw, sig)
    check_header(att, TPM_ST.ATTEST_QUOTE, signer.qn, b"fresh nonce")
    (sel,) = att.attested.pcrSelect
    assert (sel.hash, sel.pcrSelect) == (TPM_ALG.SHA256, sum(1 << n for n in PCRS).to_bytes(3, "little"))
    assert att.attested.pcrDigest == pcr_digest(tpm, alg, PCRS)


def test_quote_of_two_banks_digests_them_in_selection_order(tpm, keys):
    signer = keys["ecc"]
    two = u32(2) + u16(TPM_ALG.SHA1) + b"\x03\x05\x00\x00" + u16(TPM_ALG.SHA384) + b"\x03\x00\x00\x01"
    raw, att, sig = signed(tpm, quote_cmd(signer.handle, sch=scheme(TPM_ALG.ECDSA, TPM_ALG.SHA256), pcrs=two))
    verify(signer, raw, sig)
    assert [(s.hash, s.pcrSelect) for s in att.attested.pcrSelect] == [
        (TPM_ALG.SHA1, b"\x05\x00\x00"),
        (TPM_ALG.SHA384, b"\x00\x00\x01"),
    ]
    values = _pcr_values(tpm, TPM_ALG.SHA1, [0, 2]) + _pcr_values(tpm, TPM_ALG.SHA384, [16])
    assert att.attested.pcrDigest == hashlib.sha256(b"".join(values)).digest()


def _pcr_values(tpm, bank: int, pcrs: list[int]) -> list[bytes]:
    values = []
    for pcr in pcrs:
        r = Reader(ok(tpm, command(TPM_CC.PCR_Read, [], selection([pcr], bank))).params()[4:])
        T.TPML_PCR_SELECTION.unmarshal(r)
        values += T.TPML_DIGEST.unmarshal(r)
    return values


def test_a_quote_must_be_signed(tpm):
    """signHandle TPM_RH_NULL gives no hash for pcrDigest: TPM_RC_SCHEME, as libtpms answers."""
    at_scheme = rc_name(p(TPM_RC.SCHEME, 2))
    assert rc(tpm, quote_cmd(TPM_RH.NULL)) == at_scheme
    assert rc(tpm, quote_cmd(TPM_RH.NULL, sch=scheme(TPM_ALG.RSASSA, TPM_ALG.SHA256))) == at_scheme


# --- clock and firmware privacy ------------------------------------------------------------------------


def test_endorsement_and_platform_keys_see_the_clock_in_the_clear(tpm, keys):
    now = clock_now(tpm)
    for key in ("ek_signer", "platform_signer"):
        _, att, _ = signed(tpm, quote_cmd(keys[key].handle))
        info = att.clockInfo
        assert (info.resetCount, info.restartCount, info.safe) == (
            now.clockInfo.resetCount,
            now.clockInfo.restartCount,
            now.clockInfo.safe,
        )
        assert now.clockInfo.clock <= info.clock <= clock_now(tpm).clockInfo.clock
        assert att.firmwareVersion == firmware(tpm)


def test_other_signers_see_obfuscated_counters_constant_per_signer(tpm, keys):
    now = clock_now(tpm).clockInfo
    seen = {}
    for key in ("rsa", "ecc", "aik"):
        first = signed(tpm, quote_cmd(keys[key].handle, sch=_scheme_for(key)))[1]
        second = signed(tpm, quote_cmd(keys[key].handle, sch=_scheme_for(key)))[1]
        header = (first.clockInfo.resetCount, first.clockInfo.restartCount, first.firmwareVersion)
        assert header == (second.clockInfo.resetCount, second.clockInfo.restartCount, second.firmwareVersion)
        assert header != (now.resetCount, now.restartCount, firmware(tpm))
        assert first.clockInfo.clock >= now.clock  # the clock itself is never hidden
        seen[key] = header
    assert len(set(seen.values())) == len(seen)
    unsigned = signed(tpm, certify_cmd(keys["rsa"].handle, TPM_RH.NULL))[1]
    assert (unsigned.clockInfo.resetCount, unsigned.firmwareVersion) != (now.resetCount, firmware(tpm))


def _scheme_for(key: str) -> bytes:
    return {"rsa": scheme(TPM_ALG.RSASSA, TPM_ALG.SHA256), "ecc": scheme(TPM_ALG.ECDSA, TPM_ALG.SHA256)}.get(
        key, scheme()
    )


# --- TPM2_Certify ----------------------------------------------------------------------------------


def test_certify_names_the_object_and_its_qualified_name(tpm, keys):
    signer, target = keys["ecc"], keys["rsa"]
    raw, att, sig = signed(tpm, certify_cmd(target.handle, signer.handle, b"q", scheme(TPM_ALG.ECDSA, TPM_ALG.SHA256)))
    verify(signer, raw, sig)
    check_header(att, TPM_ST.ATTEST_CERTIFY, signer.qn, b"q")
    assert att.attested.name == name_of(target.public)
    assert att.attested.qualifiedName == target.qn


def test_a_key_certifies_itself_and_a_primary(tpm, keys):
    aik = keys["aik"]
    raw, att, sig = signed(tpm, certify_cmd(aik.handle, aik.handle))
    verify(aik, raw, sig)
    assert att.attested.name == name_of(aik.public)
    _, att, _ = signed(tpm, certify_cmd(keys["srk"].handle, TPM_RH.NULL))
    assert att.attested.qualifiedName == keys["srk"].qn


def test_certify_errors(tpm, keys):
    decrypt, ecc = keys["decrypt"].handle, keys["ecc"].handle
    assert rc(tpm, certify_cmd(decrypt, decrypt)) == rc_name(h(TPM_RC.KEY, 2))
    assert rc(tpm, certify_cmd(decrypt, ecc)) == rc_name(p(TPM_RC.SCHEME, 2))
    assert rc(tpm, certify_cmd(decrypt, ecc, sch=scheme(TPM_ALG.RSASSA, TPM_ALG.SHA256))) == rc_name(
        p(TPM_RC.SCHEME, 2)
    )
    assert rc(tpm, certify_cmd(decrypt, keys["aik"].handle, sch=scheme(TPM_ALG.RSASSA, TPM_ALG.SHA1))) == rc_name(
        p(TPM_RC.SCHEME, 2)
    )
    # Two authorizations are needed: the object's (ADMIN) and the signer's (USER).
    one = command(TPM_CC.Certify, [decrypt, ecc], tpm2b(b"") + scheme(TPM_ALG.ECDSA, TPM_ALG.SHA256), [b""])
    assert rc(tpm, one) == rc_name(TPM_RC.AUTH_MISSING)
    assert rc(tpm, certify_cmd(0x8000001F, ecc)) == rc_name(TPM_RC.REFERENCE_H0)  # nothing loaded there


# --- TPM2_CertifyCreation ------------------------------------------------------------------------------


def test_certify_creation_vouches_for_the_creation_hash(tpm, keys):
    srk = keys["srk"]
    made = child(tpm, srk, ecc_signer(), outside=b"outside info")
    signer = keys["aik"]
    out = made.out
    raw, att, sig = signed(tpm, certify_creation_cmd(signer.handle, made.handle, out.creationHash, out.creationTicket))
    verify(signer, raw, sig)
    check_header(att, TPM_ST.ATTEST_CREATION, signer.qn, b"cc")
    assert att.attested.objectName == name_of(made.public)
    assert att.attested.creationHash == out.creationHash
    assert out.creationHash == hashlib.sha256(T.TPMS_CREATION_DATA.pack(out.creationData)).digest()


def test_certify_creation_refuses_another_hash_or_object(tpm, keys):
    made = child(tpm, keys["srk"], ecc_signer())
    out, at_ticket = made.out, rc_name(p(TPM_RC.TICKET, 4))
    wrong = bytes(32)
    assert rc(tpm, certify_creation_cmd(TPM_RH.NULL, made.handle, wrong, out.creationTicket)) == at_ticket
    other = keys["ecc"].handle
    assert rc(tpm, certify_creation_cmd(TPM_RH.NULL, other, out.creationHash, out.creationTicket)) == at_ticket
    moved = T.TPMT_TK_CREATION(tag=TPM_ST.CREATION, hierarchy=TPM_RH.ENDORSEMENT, digest=out.creationTicket.digest)
    assert rc(tpm, certify_creation_cmd(TPM_RH.NULL, made.handle, out.creationHash, moved)) == at_ticket
    bad_tag = tpm2b(b"") + tpm2b(out.creationHash) + scheme() + u16(TPM_ST.HASHCHECK) + u32(TPM_RH.OWNER) + tpm2b(b"")
    cmd = command(TPM_CC.CertifyCreation, [TPM_RH.NULL, made.handle], bad_tag, [b""])
    assert rc(tpm, cmd) == rc_name(p(TPM_RC.TAG, 4))
    # The signer is checked first.
    bad_signer = certify_creation_cmd(keys["decrypt"].handle, made.handle, wrong, out.creationTicket)
    assert rc(tpm, bad_signer) == rc_name(h(TPM_RC.KEY, 1))
    _, att, sig = signed(tpm, certify_creation_cmd(TPM_RH.NULL, made.handle, out.creationHash, out.creationTicket))
    assert sig.sigAlg == TPM_ALG.NULL and att.attested.objectName == name_of(made.public)


# --- TPM2_GetTime ----------------------------------------------------------------------------------


def test_get_time_reports_the_clock_in_the_clear_inside(tpm, keys):
    signer = keys["ecc"]
    before = clock_now(tpm)
    raw, att, sig = signed(tpm, get_time_cmd(signer.handle, sch=scheme(TPM_ALG.ECDSA, TPM_ALG.SHA256)))
    after = clock_now(tpm)
    verify(signer, raw, sig)
    check_header(att, TPM_ST.ATTEST_TIME, signer.qn, b"time")
    inner = att.attested
    assert inner.firmwareVersion == firmware(tpm) != att.firmwareVersion
    assert before.time <= inner.time.time <= after.time
    assert before.clockInfo.clock <= inner.time.clockInfo.clock <= after.clockInfo.clock
    assert inner.time.clockInfo.resetCount == before.clockInfo.resetCount
    assert inner.time.clockInfo.restartCount == before.clockInfo.restartCount


def test_get_time_needs_the_endorsement_authorization(tpm, keys):
    body = tpm2b(b"") + scheme()
    cmd = command(TPM_CC.GetTime, [TPM_RH.OWNER, TPM_RH.NULL], body, [b"", b""])
    assert rc(tpm, cmd) == rc_name(h(TPM_RC.VALUE, 1))
    wrong = command(TPM_CC.GetTime, [TPM_RH.ENDORSEMENT, TPM_RH.NULL], body, [b"wrong", b""])
    assert rc(tpm, wrong) == rc_name(TPM_RC.BAD_AUTH | RC_S | 1 << 8)


# --- TPM2_NV_Certify -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nv_index(tpm):
    public = u32(INDEX) + u16(TPM_ALG.SHA256) + u32(OWNER_RW) + tpm2b(b"") + u16(64)
    ok(tpm, command(TPM_CC.NV_DefineSpace, [TPM_RH.OWNER], tpm2b(b"") + tpm2b(public), [b""]))
    data = bytes(range(64))
    ok(tpm, command(TPM_CC.NV_Write, [TPM_RH.OWNER, INDEX], tpm2b(data) + u16(0), [b""]))
    name = ok(tpm, command(TPM_CC.NV_ReadPublic, [INDEX], b"")).params()
    nv_public = T.TPM2B_NV_PUBLIC.unmarshal(r := Reader(name))
    return data, T.TPM2B_NAME.unmarshal(r), nv_public


def test_nv_certify_a_range(tpm, keys, nv_index):
    data, name, _ = nv_index
    signer = keys["rsa"]
    raw, att, sig = signed(tpm, nv_certify_cmd(signer.handle, 16, 8, sch=scheme(TPM_ALG.RSAPSS, TPM_ALG.SHA256)))
    verify(signer, raw, sig)
    check_header(att, TPM_ST.ATTEST_NV, signer.qn, b"nv")
    assert (att.attested.indexName, att.attested.offset, att.attested.nvContents) == (name, 8, data[8:24])


def test_nv_certify_size_and_offset_zero_is_a_digest_of_the_whole_index(tpm, keys, nv_index):
    data, name, _ = nv_index
    signer = keys["ecc_aik"]
    raw, att, sig = signed(tpm, nv_certify_cmd(signer.handle, 0, 0))
    verify(signer, raw, sig)
    check_header(att, TPM_ST.ATTEST_NV_DIGEST, signer.qn, b"nv")
    assert att.attested.indexName == name
    assert att.attested.nvDigest == hashlib.sha384(data).digest()


def test_nv_certify_errors(tpm, keys, nv_index):
    assert rc(tpm, nv_certify_cmd(TPM_RH.NULL, 60, 8)) == rc_name(TPM_RC.NV_RANGE)
    assert rc(tpm, nv_certify_cmd(TPM_RH.NULL, 1, 64)) == rc_name(TPM_RC.NV_RANGE)
    assert rc(tpm, nv_certify_cmd(keys["decrypt"].handle, 1, 0)) == rc_name(h(TPM_RC.KEY, 1))
    assert rc(tpm, nv_certify_cmd(TPM_RH.NULL, 1, 0, index=INDEX + 1)) == rc_name(h(TPM_RC.HANDLE, 3))
    public = u32(INDEX + 2) + u16(TPM_ALG.SHA256) + u32(OWNER_RW) + tpm2b(b"") + u16(8)
    ok(tpm, command(TPM_CC.NV_DefineSpace, [TPM_RH.OWNER], tpm2b(b"") + tpm2b(public), [b""]))
    assert rc(tpm, nv_certify_cmd(TPM_RH.NULL, 8, 0, index=INDEX + 2)) == rc_name(TPM_RC.NV_UNINITIALIZED)
    _, att, _ = signed(tpm, nv_certify_cmd(TPM_RH.NULL, 4, 4))
    assert att.attested.nvContents == nv_index[0][4:8]
