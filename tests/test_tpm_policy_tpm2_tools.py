"""Enhanced Authorization with Debian's tpm2-tools against ``vtpm-cuse socket``: every
policy tool builds a policy in a trial session, the policy is given to an object, an NV
index or the owner hierarchy, and a real policy session satisfying it then authorizes a
command (TPM2_Unseal, TPM2_NV_Write, TPM2_ClockSet, TPM2_CreatePrimary, TPM2_Duplicate);
a session that does not satisfy it is refused.

tpm2-tools 5.4 has no tool for TPM2_PolicyCapability or TPM2_PolicyParameters (1.83).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.tpm2_tools import module_tpm2_fixtures

daemon, tpm2 = module_tpm2_fixtures()

SEALED_ATTRS = "fixedtpm|fixedparent|noda"
SECRET = b"sealed secret"
OWNER_NAME = bytes.fromhex("40000001")

Step = tuple[str, ...]


def flushed(tpm2, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """One tool run, then flush the transient objects it left loaded (there is no resource manager)."""
    try:
        return tpm2(*args, check=check)
    finally:
        tpm2("flushcontext", "-t")


class Policies:
    """Policy building (trial sessions) and satisfying (policy sessions) with tpm2-tools."""

    def __init__(self, tpm2, directory: Path) -> None:
        self.tpm2, self.dir, self.count = tpm2, directory, 0

    def path(self, name: str) -> str:
        self.count += 1
        return str(self.dir / f"{self.count}-{name}")

    def file(self, name: str, data: bytes) -> str:
        path = self.path(name)
        Path(path).write_bytes(data)
        return path

    def _run(self, session: str, steps: list[Step], policy: str | None) -> None:
        for tool, *args in steps:
            self.tpm2(tool, "-S", session, *args, *(("-L", policy) if policy else ()))

    def build(self, *steps: Step) -> str:
        """The policy digest file ``steps`` produce in a trial session."""
        session, policy = self.path("trial.ctx"), self.path("policy.dat")
        self.tpm2("startauthsession", "-S", session)
        try:
            self._run(session, list(steps), policy)
        finally:
            self.tpm2("flushcontext", session)
        return policy

    def satisfy(self, *steps: Step) -> str:
        """A policy session (its file) in which ``steps`` ran; flush it with :meth:`done`."""
        session = self.path("session.ctx")
        self.tpm2("startauthsession", "--policy-session", "-S", session)
        self._run(session, list(steps), None)
        return session

    def done(self, session: str) -> None:
        self.tpm2("flushcontext", session, check=False)


@pytest.fixture(scope="module")
def primary(tpm2, tmp_path_factory: pytest.TempPathFactory) -> str:
    ctx = str(tmp_path_factory.mktemp("primary") / "primary.ctx")
    flushed(tpm2, "createprimary", "-C", "o", "-g", "sha256", "-G", "rsa", "-c", ctx)
    return ctx


@pytest.fixture
def pol(tpm2, tmp_path: Path) -> Policies:
    return Policies(tpm2, tmp_path)


def seal(tpm2, pol: Policies, primary: str, policy: str, *extra: str) -> str:
    """A sealed data object whose only authorization is ``policy``; its context file."""
    pub, priv, ctx = pol.path("seal.pub"), pol.path("seal.priv"), pol.path("seal.ctx")
    secret = pol.file("secret", SECRET)
    flushed(
        tpm2, "create", "-C", primary, "-a", SEALED_ATTRS, "-L", policy, "-i", secret, "-u", pub, "-r", priv, *extra
    )
    flushed(tpm2, "load", "-C", primary, "-u", pub, "-r", priv, "-c", ctx)
    return ctx


def unseal(tpm2, pol: Policies, sealed: str, session: str, password: str = "") -> subprocess.CompletedProcess[bytes]:
    auth = f"session:{session}" + (f"+{password}" if password else "")
    try:
        return flushed(tpm2, "unseal", "-c", sealed, "-p", auth, check=False)
    finally:
        pol.done(session)


def assert_unseals(result: subprocess.CompletedProcess[bytes]) -> None:
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == SECRET


def assert_refused(result: subprocess.CompletedProcess[bytes], code: str) -> None:
    assert result.returncode != 0, "the TPM accepted a policy session that does not satisfy the policy"
    assert code in result.stderr.decode().lower(), result.stderr.decode()


# --- assertions about the session and its caller -------------------------------------------------


def test_policyauthvalue_and_policypassword(tpm2, pol, primary):
    policy = pol.build(("policyauthvalue",))
    assert Path(pol.build(("policypassword",))).read_bytes() == Path(policy).read_bytes()
    sealed = seal(tpm2, pol, primary, policy, "-p", "objpass")
    assert_unseals(unseal(tpm2, pol, sealed, pol.satisfy(("policyauthvalue",)), "objpass"))
    assert_unseals(unseal(tpm2, pol, sealed, pol.satisfy(("policypassword",)), "objpass"))
    assert_refused(unseal(tpm2, pol, sealed, pol.satisfy(("policyauthvalue",)), "wrong"), "0x9a2")


def test_policycommandcode_policyor_policylocality(tpm2, pol, primary):
    unseal_only = pol.build(("policycommandcode", "TPM2_CC_Unseal"))
    locality_zero = pol.build(("policylocality", "zero"))
    branches = f"sha256:{unseal_only},{locality_zero}"
    either = pol.build(("policyor", "-l", branches))
    sealed = seal(tpm2, pol, primary, either)
    for branch in (("policycommandcode", "TPM2_CC_Unseal"), ("policylocality", "zero")):
        assert_unseals(unseal(tpm2, pol, sealed, pol.satisfy(branch, ("policyor", "-l", branches))))
    # A locality the command is not sent from: TPM_RC_LOCALITY at the session.
    sealed = seal(tpm2, pol, primary, pol.build(("policylocality", "three")))
    assert_refused(unseal(tpm2, pol, sealed, pol.satisfy(("policylocality", "three"))), "0x907")


def test_policypcr(tpm2, pol, primary):
    policy = pol.build(("policypcr", "-l", "sha256:16"))
    sealed = seal(tpm2, pol, primary, policy)
    assert_unseals(unseal(tpm2, pol, sealed, pol.satisfy(("policypcr", "-l", "sha256:16"))))


# --- authorizations by another entity ----------------------------------------------------------------


def test_policysecret_and_policyticket(tpm2, pol, primary):
    policy = pol.build(("policysecret", "-c", "o"))
    sealed = seal(tpm2, pol, primary, policy)
    assert_unseals(unseal(tpm2, pol, sealed, pol.satisfy(("policysecret", "-c", "o"))))
    ticket, timeout = pol.path("secret.tkt"), pol.path("secret.timeout")
    session = pol.satisfy(("policysecret", "-c", "o", "-t", "-3600", "--ticket", ticket, "--timeout", timeout))
    pol.done(session)
    name = pol.file("owner.name", OWNER_NAME)
    redeem = ("policyticket", "-n", name, "--ticket", ticket, "--timeout", timeout)
    assert_unseals(unseal(tpm2, pol, sealed, pol.satisfy(redeem)))
    # A ticket for another entity's Name does not verify.
    other = ("policyticket", "-n", pol.file("other.name", bytes.fromhex("4000000c")), "--ticket", ticket)
    session = pol.path("session.ctx")
    tpm2("startauthsession", "--policy-session", "-S", session)
    try:
        result = tpm2(other[0], "-S", session, *other[1:], "--timeout", timeout, check=False)
        assert result.returncode != 0 and "0x5e0" in result.stderr.decode().lower(), result.stderr.decode()
    finally:
        pol.done(session)


@pytest.fixture(scope="module")
def signer(tpm2, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """An RSA key the caller holds; its public part loaded in the owner hierarchy."""
    d = tmp_path_factory.mktemp("signer")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = d / "signer.pub.pem"
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    ctx, name = str(d / "signer.ctx"), str(d / "signer.name")
    tpm2("loadexternal", "-C", "o", "-G", "rsa", "-u", str(pub), "-c", ctx, "-n", name)
    tpm2("flushcontext", "-t")
    return {"key": key, "ctx": ctx, "name": name}


def sign(signer, data: bytes) -> bytes:
    return signer["key"].sign(data, padding.PKCS1v15(), hashes.SHA256())


def test_policysigned_and_its_ticket(tpm2, pol, primary, signer):
    # In a trial session the signature is not checked, but the tool wants one.
    dummy = pol.file("dummy.sig", sign(signer, b"anything"))
    sig_args = ("-g", "sha256", "-f", "rsassa", "-c", signer["ctx"])
    policy = pol.build(("policysigned", *sig_args, "-s", dummy))
    tpm2("flushcontext", "-t")
    sealed = seal(tpm2, pol, primary, policy)
    session = pol.satisfy()
    to_sign = pol.path("to-sign.bin")
    flushed(tpm2, "policysigned", "-S", session, *sig_args, "-x", "-t", "-600", "--raw-data", to_sign)
    signature = pol.file("auth.sig", sign(signer, Path(to_sign).read_bytes()))
    ticket, timeout = pol.path("signed.tkt"), pol.path("signed.timeout")
    tpm2(
        "policysigned", "-S", session, *sig_args, "-x", "-s", signature, "-t", "-600",
        "--ticket", ticket, "--timeout", timeout,
    )  # fmt: skip
    tpm2("flushcontext", "-t")
    assert_unseals(unseal(tpm2, pol, sealed, session))
    # Signed over other data (the session's new nonce): TPM_RC_SIGNATURE.
    session = pol.satisfy()
    try:
        bad = flushed(tpm2, "policysigned", "-S", session, *sig_args, "-x", "-s", signature, check=False)
        assert bad.returncode != 0 and "0x5db" in bad.stderr.decode().lower(), bad.stderr.decode()
    finally:
        pol.done(session)
    redeem = ("policyticket", "-n", signer["name"], "--ticket", ticket, "--timeout", timeout)
    assert_unseals(unseal(tpm2, pol, sealed, pol.satisfy(redeem)))


def test_policyauthorize(tpm2, pol, primary, signer):
    approved = pol.build(("policycommandcode", "TPM2_CC_Unseal"))
    authorized = pol.build(("policyauthorize", "-i", approved, "-n", signer["name"]))
    sealed = seal(tpm2, pol, primary, authorized)
    signature = pol.file("approved.sig", sign(signer, Path(approved).read_bytes()))
    ticket = pol.path("verified.tkt")
    flushed(
        tpm2, "verifysignature", "-c", signer["ctx"], "-g", "sha256", "-m", approved, "-s", signature,
        "-f", "rsassa", "-t", ticket,
    )  # fmt: skip
    steps = (
        ("policycommandcode", "TPM2_CC_Unseal"),
        ("policyauthorize", "-i", approved, "-n", signer["name"], "-t", ticket),
    )
    assert_unseals(unseal(tpm2, pol, sealed, pol.satisfy(*steps)))
    # The approved policy is not what the session ran: TPM_RC_VALUE at approvedPolicy.
    session = pol.satisfy(("policypassword",))
    try:
        bad = tpm2("policyauthorize", "-S", session, "-i", approved, "-n", signer["name"], "-t", ticket, check=False)
        assert bad.returncode != 0 and "0x1c4" in bad.stderr.decode().lower(), bad.stderr.decode()
    finally:
        pol.done(session)


def nv_written(tpm2, index: str, data: bytes, pol: Policies, attrs: str = "ownerread|ownerwrite|authread") -> None:
    tpm2("nvdefine", index, "-C", "o", "-s", str(len(data)), "-a", attrs)
    tpm2("nvwrite", index, "-C", "o", "-i", pol.file("nv.bin", data))


def test_policyauthorizenv(tpm2, pol, primary):
    approved = pol.build(("policycommandcode", "TPM2_CC_Unseal"))
    index = "0x1500200"
    nv_written(tpm2, index, bytes.fromhex("000b") + Path(approved).read_bytes(), pol)
    authorized = pol.build(("policyauthorizenv", "-C", "o", index))
    sealed = seal(tpm2, pol, primary, authorized)
    steps = (("policycommandcode", "TPM2_CC_Unseal"), ("policyauthorizenv", "-C", "o", index))
    assert_unseals(unseal(tpm2, pol, sealed, pol.satisfy(*steps)))
    session = pol.satisfy(("policypassword",))
    try:
        bad = tpm2("policyauthorizenv", "-S", session, "-C", "o", index, check=False)
        assert bad.returncode != 0 and "0x84" in bad.stderr.decode().lower(), bad.stderr.decode()
    finally:
        pol.done(session)


# --- comparisons with TPM data ------------------------------------------------------------------------


def test_policynv(tpm2, pol, primary):
    index = "0x1500201"
    nv_written(tpm2, index, b"\x05", pol)
    operand = pol.file("operand", b"\x05")
    policy = pol.build(("policynv", "-C", "o", "-i", operand, index, "eq"))
    sealed = seal(tpm2, pol, primary, policy)
    assert_unseals(unseal(tpm2, pol, sealed, pol.satisfy(("policynv", "-C", "o", "-i", operand, index, "eq"))))
    tpm2("nvwrite", index, "-C", "o", "-i", pol.file("nv.bin", b"\x06"))
    session = pol.path("session.ctx")
    tpm2("startauthsession", "--policy-session", "-S", session)
    try:
        bad = tpm2("policynv", "-S", session, "-C", "o", "-i", operand, index, "eq", check=False)
        assert bad.returncode != 0 and "0x126" in bad.stderr.decode().lower(), bad.stderr.decode()  # TPM_RC_POLICY
    finally:
        pol.done(session)


def test_policycountertimer(tpm2, pol, primary):
    step = ("policycountertimer", "--ult", "clock=0xffffffffffff")
    sealed = seal(tpm2, pol, primary, pol.build(step))
    assert_unseals(unseal(tpm2, pol, sealed, pol.satisfy(step)))
    session = pol.path("session.ctx")
    tpm2("startauthsession", "--policy-session", "-S", session)
    try:
        bad = tpm2("policycountertimer", "-S", session, "--ugt", "clock=0xffffffffffff", check=False)
        assert bad.returncode != 0 and "0x126" in bad.stderr.decode().lower(), bad.stderr.decode()
    finally:
        pol.done(session)


# --- digests of the command ----------------------------------------------------------------------------


def owner_policy(tpm2, policy: str) -> None:
    tpm2("setprimarypolicy", "-C", "o", "-g", "sha256", "-L", policy)


def test_policycphash_binds_setclock(tpm2, pol):
    target = "9000000000"
    cp_hash = pol.path("cphash.bin")
    tpm2("setclock", "-c", "o", target, "--cphash", cp_hash)
    owner_policy(tpm2, pol.build(("policycphash", "--cphash-input", cp_hash)))
    session = pol.satisfy(("policycphash", "--cphash-input", cp_hash))
    try:
        other = tpm2("setclock", "-c", "o", "-p", f"session:{session}", "9100000000", check=False)
        assert other.returncode != 0 and "0x99d" in other.stderr.decode().lower(), other.stderr.decode()
        tpm2("setclock", "-c", "o", "-p", f"session:{session}", target)
    finally:
        pol.done(session)


def test_policynamehash_binds_the_handles(tpm2, pol):
    # tpm2_policynamehash takes the digest: H(Names of the command's handles).
    names = pol.file("names.hash", hashlib.sha256(OWNER_NAME).digest())
    owner_policy(tpm2, pol.build(("policynamehash", "-n", names)))
    session = pol.satisfy(("policynamehash", "-n", names))
    try:
        tpm2("setclock", "-c", "o", "-p", f"session:{session}", "9200000000")
    finally:
        pol.done(session)
    # The nameHash of the platform hierarchy does not authorize an owner command.
    platform = pol.file("platform.hash", hashlib.sha256(bytes.fromhex("4000000c")).digest())
    owner_policy(tpm2, pol.build(("policynamehash", "-n", platform)))
    session = pol.satisfy(("policynamehash", "-n", platform))
    try:
        bad = tpm2("setclock", "-c", "o", "-p", f"session:{session}", "9300000000", check=False)
        assert bad.returncode != 0 and "0x99d" in bad.stderr.decode().lower(), bad.stderr.decode()
    finally:
        pol.done(session)


def test_policytemplate_binds_createprimary(tpm2, pol):
    template = pol.path("template.bin")
    flushed(tpm2, "createprimary", "-C", "o", "-G", "ecc", "-c", pol.path("p.ctx"), "--template-data", template)
    template_hash = pol.file("template.hash", hashlib.sha256(Path(template).read_bytes()).digest())
    owner_policy(tpm2, pol.build(("policytemplate", "--template-hash", template_hash)))
    session = pol.satisfy(("policytemplate", "--template-hash", template_hash))
    try:
        other = flushed(tpm2, "createprimary", "-C", "o", "-P", f"session:{session}", "-G", "rsa", check=False)
        assert other.returncode != 0 and "0x99d" in other.stderr.decode().lower(), other.stderr.decode()
        flushed(tpm2, "createprimary", "-C", "o", "-P", f"session:{session}", "-G", "ecc", "-c", pol.path("q.ctx"))
    finally:
        pol.done(session)


def test_policyduplicationselect(tpm2, pol, primary):
    parent_pub, parent_priv, parent = pol.path("parent.pub"), pol.path("parent.priv"), pol.path("parent.ctx")
    parent_attrs = "restricted|sensitivedataorigin|decrypt|userwithauth|fixedtpm|fixedparent"
    flushed(tpm2, "create", "-C", primary, "-G", "rsa", "-a", parent_attrs, "-u", parent_pub, "-r", parent_priv)
    flushed(tpm2, "load", "-C", primary, "-u", parent_pub, "-r", parent_priv, "-c", parent)
    parent_name = pol.path("parent.name")
    flushed(tpm2, "readpublic", "-c", parent, "-n", parent_name)
    object_name = pol.file("none.name", b"")
    select = ("policyduplicationselect", "-n", object_name, "-N", parent_name)
    policy = pol.build(select)
    key_pub, key_priv, key = pol.path("key.pub"), pol.path("key.priv"), pol.path("key.ctx")
    key_attrs = "sensitivedataorigin|userwithauth|sign"
    flushed(tpm2, "create", "-C", primary, "-G", "ecc", "-a", key_attrs, "-L", policy, "-u", key_pub, "-r", key_priv)
    flushed(tpm2, "load", "-C", primary, "-u", key_pub, "-r", key_priv, "-c", key)
    key_name = pol.path("key.name")
    flushed(tpm2, "readpublic", "-c", key, "-n", key_name)
    # At use the nameHash covers the object's Name and the new parent's.
    session = pol.satisfy(("policyduplicationselect", "-n", key_name, "-N", parent_name))
    try:
        flushed(
            tpm2, "duplicate", "-c", key, "-C", parent, "-G", "null", "-p", f"session:{session}",
            "-r", pol.path("dup.priv"), "-s", pol.path("dup.seed"),
        )  # fmt: skip
    finally:
        pol.done(session)
    # To another new parent the nameHash differs: TPM_RC_POLICY_FAIL.
    session = pol.satisfy(("policyduplicationselect", "-n", key_name, "-N", parent_name))
    try:
        bad = flushed(
            tpm2, "duplicate", "-c", key, "-C", primary, "-G", "null", "-p", f"session:{session}",
            "-r", pol.path("dup2.priv"), "-s", pol.path("dup2.seed"), check=False,
        )  # fmt: skip
        assert bad.returncode != 0 and "0x99d" in bad.stderr.decode().lower(), bad.stderr.decode()
    finally:
        pol.done(session)


def test_policynvwritten_allows_one_first_write(tpm2, pol):
    index = "0x1500202"
    steps = (("policynvwritten", "c"), ("policycommandcode", "TPM2_CC_NV_Write"))
    policy = pol.build(*steps)
    tpm2("nvdefine", index, "-C", "o", "-s", "4", "-a", "policywrite|authread", "-L", policy)
    data = pol.file("data", b"once")
    session = pol.satisfy(*steps)
    try:
        tpm2("nvwrite", index, "-P", f"session:{session}", "-i", data)
    finally:
        pol.done(session)
    session = pol.satisfy(*steps)
    try:
        again = tpm2("nvwrite", index, "-P", f"session:{session}", "-i", data, check=False)
        assert again.returncode != 0 and "0x99d" in again.stderr.decode().lower(), again.stderr.decode()
    finally:
        pol.done(session)
