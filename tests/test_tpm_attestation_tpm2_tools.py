"""Attestation through Debian's tpm2-tools against ``vtpm-cuse socket``.

tpm2_quote's output is checked by tpm2_checkquote (OpenSSL verifies the signature, the
nonce and the PCR digest against the PCR values tpm2_quote wrote); the other attestations
(tpm2_certify, tpm2_certifycreation, tpm2_gettime, tpm2_nvcertify) are verified with
``cryptography`` against the PEM key tpm2_readpublic exports, over the attestation octets
the tools saved, and those octets are parsed back as a TPMS_ATTEST.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from support.tpm2_tools import module_tpm2_fixtures
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_ST

daemon, tpm2 = module_tpm2_fixtures()
AK_ATTRS = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"
NV_INDEX = "0x1500030"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("attest")


@pytest.fixture(scope="module")
def ak(tpm2, work):  # noqa: F811 (the fixture)
    """A restricted RSASSA-SHA256 signing key under an owner primary, and its PEM."""
    primary = str(work / "primary.ctx")
    tpm2("createprimary", "-C", "o", "-G", "ecc256", "-c", primary)
    tpm2("flushcontext", "-t")
    pub, priv, ctx, pem = (str(work / f"ak.{n}") for n in ("pub", "priv", "ctx", "pem"))
    tpm2("create", "-C", primary, "-G", "rsa2048:rsassa-sha256:null", "-a", AK_ATTRS, "-u", pub, "-r", priv)
    tpm2("flushcontext", "-t")
    tpm2("load", "-C", primary, "-u", pub, "-r", priv, "-c", ctx)
    tpm2("flushcontext", "-t")
    tpm2("readpublic", "-c", ctx, "-f", "pem", "-o", pem)
    tpm2("flushcontext", "-t")
    return {"primary": primary, "ctx": ctx, "pem": pem}


def step(tpm2, *args: str) -> None:  # noqa: F811 (the fixture)
    """One tool; then flush what it left in the object slots (there is no resource manager)."""
    tpm2(*args)
    tpm2("flushcontext", "-t")


def verified_attest(ak: dict, attest: Path, sig: Path) -> T.TPMS_ATTEST:
    """The TPMS_ATTEST a tool wrote, once the AK's plain RSASSA-SHA256 signature over it checks out."""
    data = attest.read_bytes()
    key = serialization.load_pem_public_key(Path(ak["pem"]).read_bytes())
    key.verify(sig.read_bytes(), data, padding.PKCS1v15(), hashes.SHA256())
    return T.TPMS_ATTEST.unpack(data)


def test_tpm2_quote_and_checkquote(tpm2, ak, work):  # noqa: F811 (the fixture)
    msg, sig, pcrs = (str(work / f"quote.{n}") for n in ("msg", "sig", "pcrs"))
    tpm2("pcrextend", "16:sha256=" + "ab" * 32)
    step(
        tpm2,
        "quote",
        "-c",
        ak["ctx"],
        "-l",
        "sha256:0,1,16",
        "-q",
        "abcdef01",
        "-m",
        msg,
        "-s",
        sig,
        "-o",
        pcrs,
        "-g",
        "sha256",
    )
    tpm2("checkquote", "-u", ak["pem"], "-m", msg, "-s", sig, "-f", pcrs, "-g", "sha256", "-q", "abcdef01")
    refused = tpm2(
        "checkquote", "-u", ak["pem"], "-m", msg, "-s", sig, "-f", pcrs, "-g", "sha256", "-q", "abcdef02", check=False
    )
    assert refused.returncode != 0
    attest = T.TPMS_ATTEST.unpack(Path(msg).read_bytes())
    assert (attest.type, attest.extraData) == (TPM_ST.ATTEST_QUOTE, bytes.fromhex("abcdef01"))


def test_tpm2_certify(tpm2, ak, work):  # noqa: F811 (the fixture)
    attest, sig = work / "certify.attest", work / "certify.sig"
    step(
        tpm2,
        "certify",
        "-c",
        ak["primary"],
        "-C",
        ak["ctx"],
        "-g",
        "sha256",
        "-o",
        str(attest),
        "-s",
        str(sig),
        "-f",
        "plain",
    )
    info = verified_attest(ak, attest, sig)
    assert info.type == TPM_ST.ATTEST_CERTIFY and len(info.attested.name) == 34


def test_tpm2_certifycreation(tpm2, ak, work):  # noqa: F811 (the fixture)
    pub, priv, ctx = (str(work / f"made.{n}") for n in ("pub", "priv", "ctx"))
    chash, ticket = work / "made.hash", str(work / "made.ticket")
    step(tpm2, "create", "-C", ak["primary"], "-G", "ecc256", "-u", pub, "-r", priv, "-d", str(chash), "-t", ticket)
    step(tpm2, "load", "-C", ak["primary"], "-u", pub, "-r", priv, "-c", ctx)
    attest, sig = work / "cc.attest", work / "cc.sig"
    step(
        tpm2,
        "certifycreation",
        "-C",
        ak["ctx"],
        "-c",
        ctx,
        "-d",
        str(chash),
        "-t",
        ticket,
        "-g",
        "sha256",
        "-s",
        "rsassa",
        "-f",
        "plain",
        "-o",
        str(sig),
        "--attestation",
        str(attest),
    )
    info = verified_attest(ak, attest, sig)
    assert info.type == TPM_ST.ATTEST_CREATION and info.attested.creationHash == chash.read_bytes()[2:]


def test_tpm2_gettime(tpm2, ak, work):  # noqa: F811 (the fixture)
    attest, sig = work / "time.attest", work / "time.sig"
    step(
        tpm2,
        "gettime",
        "-c",
        ak["ctx"],
        "-q",
        "11223344",
        "-g",
        "sha256",
        "-s",
        "rsassa",
        "-f",
        "plain",
        "-o",
        str(sig),
        "--attestation",
        str(attest),
    )
    info = verified_attest(ak, attest, sig)
    assert (info.type, info.extraData) == (TPM_ST.ATTEST_TIME, bytes.fromhex("11223344"))
    assert info.attested.time.clockInfo.clock >= 0


def test_tpm2_nvcertify(tpm2, ak, work):  # noqa: F811 (the fixture)
    data = work / "nv.data"
    data.write_bytes(b"certified NV contents: 32 octets")
    tpm2("nvdefine", NV_INDEX, "-C", "o", "-s", "32", "-a", "ownerread|ownerwrite")
    tpm2("nvwrite", NV_INDEX, "-C", "o", "-i", str(data))
    attest, sig = work / "nv.attest", work / "nv.sig"
    step(
        tpm2,
        "nvcertify",
        "-C",
        ak["ctx"],
        "-c",
        "o",
        "-g",
        "sha256",
        "-s",
        "rsassa",
        "-f",
        "plain",
        "-o",
        str(sig),
        "--attestation",
        str(attest),
        "--size",
        "16",
        "--offset",
        "4",
        NV_INDEX,
    )
    info = verified_attest(ak, attest, sig)
    assert info.type == TPM_ST.ATTEST_NV
    assert (info.attested.offset, info.attested.nvContents) == (4, data.read_bytes()[4:20])


# --- audit --------------------------------------------------------------------------------------


def audit_chain(alg: str, *entries: tuple[bytes, bytes]) -> bytes:
    """H(digest || cpHash || rpHash) over (command, response) pairs, from zeros."""
    digest = bytes(hashlib.new(alg).digest_size)
    for cp, rp in entries:
        digest = hashlib.new(alg, digest + hashlib.new(alg, cp).digest() + hashlib.new(alg, rp).digest()).digest()
    return digest


def getrandom(tpm2, work: Path, *session: str) -> bytes:  # noqa: F811 (the fixture)
    """tpm2_getrandom 8; the cpHash and rpHash inputs of the command it sent."""
    out = work / "random"
    tpm2("getrandom", "8", "-o", str(out), *session)
    data = out.read_bytes()
    cc = (0x17B).to_bytes(4, "big")
    return cc + (8).to_bytes(2, "big"), bytes(4) + cc + len(data).to_bytes(2, "big") + data


def test_tpm2_setcommandauditstatus_and_getcommandauditdigest(tpm2, ak, work):  # noqa: F811 (the fixture)
    tpm2("setcommandauditstatus", "-g", "sha256", "TPM2_CC_GetRandom")
    attest, sig = work / "cad.attest", work / "cad.sig"

    def digest() -> T.TPMS_COMMAND_AUDIT_INFO:
        step(
            tpm2,
            "getcommandauditdigest",
            "-c",
            ak["ctx"],
            "-g",
            "sha256",
            "-m",
            str(attest),
            "-s",
            str(sig),
            "-f",
            "plain",
        )
        info = verified_attest(ak, attest, sig)
        assert info.type == TPM_ST.ATTEST_COMMAND_AUDIT
        return info.attested

    first = digest()  # signed: closes the sequence
    assert first.digestAlg == TPM_ALG.SHA256
    entry = getrandom(tpm2, work)
    second = digest()
    assert second.auditCounter == first.auditCounter + 1
    assert second.auditDigest == audit_chain("sha256", entry)
    tpm2("setcommandauditstatus", "-c", "TPM2_CC_GetRandom")
    digest()
    getrandom(tpm2, work)  # no longer audited
    assert digest().auditDigest == b""


def test_tpm2_getsessionauditdigest(tpm2, ak, work):  # noqa: F811 (the fixture)
    session = str(work / "audit.session")
    tpm2("startauthsession", "-S", session, "--audit-session")
    entries = [getrandom(tpm2, work, "-S", session) for _ in range(2)]
    attest, sig = work / "sad.attest", work / "sad.sig"
    step(
        tpm2,
        "getsessionauditdigest",
        "-S",
        session,
        "-c",
        ak["ctx"],
        "-g",
        "sha256",
        "-m",
        str(attest),
        "-s",
        str(sig),
        "-f",
        "plain",
    )
    tpm2("flushcontext", session)
    info = verified_attest(ak, attest, sig)
    assert info.type == TPM_ST.ATTEST_SESSION_AUDIT
    assert info.attested.sessionDigest == audit_chain("sha256", *entries)
