"""The Enhanced Authorization commands through tpm2-pytss's ESAPI against ``vtpm-cuse socket``.

tpm2-tss marshals the commands and checks the response HMACs with its own code.  Each
command runs once in a policy session; the digest is compared with the one Part 3 gives
(tests/support/policy_commands.py), and where the assertion can authorize something here the
session then does: TPM2_ClockSet or TPM2_CreatePrimary with the owner's authPolicy.
tpm2-pytss has no PolicyCapability / PolicyParameters (1.83): see tests/test_tpm_policy.py.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CC, TPM2_EO, TPM2_SE, TPMA_NV
from tpm2_pytss.TSS2_Exception import TSS2_Exception
from tpm2_pytss.types import (
    TPM2B_NV_PUBLIC,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMS_NV_PUBLIC,
    TPMS_SENSITIVE_CREATE,
    TPMT_SIGNATURE,
    TPMT_SYM_DEF,
)

from support import policy_commands as pc
from support.pytss_esys import module_esys_fixtures

ZERO = bytes(32)
OWNER_NAME = bytes.fromhex("40000001")
INDEX = 0x01500300


daemon, esys = module_esys_fixtures()


@pytest.fixture
def session(esys):
    """A policy session, flushed after the test unless a command used it up."""
    handle = esys.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
    )
    yield handle
    try:
        esys.flush_context(handle)
    except Exception:  # noqa: BLE001 - already flushed by the command it authorized
        pass


def digest_of(esys, session) -> bytes:
    return bytes(esys.policy_get_digest(session))


def authorize_clock_set(esys, session, policy: bytes, ahead_ms: int = 60_000) -> None:
    """With the owner's authPolicy ``policy``, ClockSet authorized by ``session`` succeeds."""
    esys.set_primary_policy(ESYS_TR.OWNER, policy, TPM2_ALG.SHA256)
    esys.clock_set(esys.read_clock().clockInfo.clock + ahead_ms, ESYS_TR.OWNER, session1=session)


@pytest.fixture(scope="module")
def signer(esys):
    """A P-256 key the test holds, public part loaded in the owner hierarchy."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    handle = esys.load_external(TPM2B_PUBLIC.from_pem(pem, objectAttributes="sign|userwithauth"), None, ESYS_TR.OWNER)
    yield key, handle, bytes(esys.tr_get_name(handle))
    esys.flush_context(handle)


def ecdsa(key, data: bytes) -> TPMT_SIGNATURE:
    r, s = decode_dss_signature(key.sign(hashlib.sha256(data).digest(), ec.ECDSA(Prehashed(hashes.SHA256()))))
    return TPMT_SIGNATURE.unmarshal(pc.ecdsa_signature(TPM2_ALG.SHA256, r.to_bytes(32, "big"), s.to_bytes(32, "big")))[
        0
    ]


def test_policy_signed_and_policy_ticket(esys, session, signer):
    key, handle, name = signer
    nonce = bytes(esys.trsess_get_nonce_tpm(session))
    expiration = -300
    sig = ecdsa(key, nonce + expiration.to_bytes(4, "big", signed=True))
    timeout, ticket = esys.policy_signed(handle, session, sig, nonce_tpm=nonce, expiration=expiration)
    expected = pc.update(TPM2_ALG.SHA256, ZERO, TPM2_CC.PolicySigned, name, b"")
    assert digest_of(esys, session) == expected
    authorize_clock_set(esys, session, expected)
    other = esys.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
    )
    try:
        esys.policy_ticket(other, timeout, name, ticket)
        assert digest_of(esys, other) == expected
        esys.clock_set(esys.read_clock().clockInfo.clock + 1000, ESYS_TR.OWNER, session1=other)
    finally:
        esys.flush_context(other)


def test_policy_secret(esys, session):
    timeout, ticket = esys.policy_secret(ESYS_TR.OWNER, session, expiration=0)
    assert timeout.marshal() == bytes(2) and ticket.digest.marshal() == bytes(2)  # no ticket asked for
    expected = pc.update(TPM2_ALG.SHA256, ZERO, TPM2_CC.PolicySecret, OWNER_NAME, b"")
    assert digest_of(esys, session) == expected
    authorize_clock_set(esys, session, expected)


def test_policy_authorize(esys, session, signer):
    key, handle, name = signer
    esys.policy_command_code(session, TPM2_CC.ClockSet)
    approved = digest_of(esys, session)
    check = esys.verify_signature(handle, hashlib.sha256(approved).digest(), ecdsa(key, approved))
    esys.policy_authorize(session, approved, name, check)
    expected = pc.update(TPM2_ALG.SHA256, ZERO, TPM2_CC.PolicyAuthorize, name, b"")
    assert digest_of(esys, session) == expected
    authorize_clock_set(esys, session, expected)


@pytest.fixture(scope="module")
def nv_index(esys):
    """An owner-readable NV index holding a TPMT_HA of the ClockSet-only policy."""
    public = TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(
            nvIndex=INDEX,
            nameAlg=TPM2_ALG.SHA256,
            attributes=TPMA_NV.parse("ownerread|ownerwrite|authread|authwrite"),
            dataSize=34,
        )
    )
    handle = esys.nv_define_space(b"", public)
    approved = pc.extend(TPM2_ALG.SHA256, ZERO, TPM2_CC.PolicyCommandCode, pc.cc(TPM2_CC.ClockSet))
    esys.nv_write(handle, TPM2_ALG.SHA256.to_bytes(2, "big") + approved, 0, ESYS_TR.OWNER)
    yield handle
    esys.nv_undefine_space(handle, ESYS_TR.OWNER)


def test_policy_authorize_nv(esys, session, nv_index):
    esys.policy_command_code(session, TPM2_CC.ClockSet)
    esys.policy_authorize_nv(nv_index, session, ESYS_TR.OWNER)
    _, name = esys.nv_read_public(nv_index)
    expected = pc.extend(TPM2_ALG.SHA256, ZERO, TPM2_CC.PolicyAuthorizeNV, bytes(name))
    assert digest_of(esys, session) == expected
    authorize_clock_set(esys, session, expected)


def test_policy_nv(esys, session, nv_index):
    operand = TPM2_ALG.SHA256.to_bytes(2, "big")
    esys.policy_nv(ESYS_TR.OWNER, nv_index, session, operand, TPM2_EO.EQ, 0)
    _, name = esys.nv_read_public(nv_index)
    args = pc.args_digest(TPM2_ALG.SHA256, operand, 0, TPM2_EO.EQ)
    expected = pc.extend(TPM2_ALG.SHA256, ZERO, TPM2_CC.PolicyNV, args, bytes(name))
    assert digest_of(esys, session) == expected
    authorize_clock_set(esys, session, expected)


def test_policy_counter_timer(esys, session):
    operand = (1 << 60).to_bytes(8, "big")  # Clock is below it
    esys.policy_counter_timer(session, operand, TPM2_EO.UNSIGNED_LT, 8)
    args = pc.args_digest(TPM2_ALG.SHA256, operand, 8, TPM2_EO.UNSIGNED_LT)
    expected = pc.extend(TPM2_ALG.SHA256, ZERO, TPM2_CC.PolicyCounterTimer, args)
    assert digest_of(esys, session) == expected
    authorize_clock_set(esys, session, expected)


def test_policy_cp_hash(esys, session):
    new_time = esys.read_clock().clockInfo.clock + 120_000
    cp = hashlib.sha256(pc.cc(TPM2_CC.ClockSet) + OWNER_NAME + new_time.to_bytes(8, "big")).digest()
    esys.policy_cp_hash(session, cp)
    expected = pc.extend(TPM2_ALG.SHA256, ZERO, TPM2_CC.PolicyCpHash, cp)
    assert digest_of(esys, session) == expected
    esys.set_primary_policy(ESYS_TR.OWNER, expected, TPM2_ALG.SHA256)
    esys.clock_set(new_time, ESYS_TR.OWNER, session1=session)


def test_policy_name_hash(esys, session):
    name_hash = hashlib.sha256(OWNER_NAME).digest()
    esys.policy_name_hash(session, name_hash)
    expected = pc.extend(TPM2_ALG.SHA256, ZERO, TPM2_CC.PolicyNameHash, name_hash)
    assert digest_of(esys, session) == expected
    authorize_clock_set(esys, session, expected)


def test_policy_template(esys, session):
    template = TPM2B_PUBLIC.parse(
        "ecc256:aes128cfb",
        objectAttributes="restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda",
    )
    template_hash = hashlib.sha256(template.publicArea.marshal()).digest()
    esys.policy_template(session, template_hash)
    expected = pc.extend(TPM2_ALG.SHA256, ZERO, TPM2_CC.PolicyTemplate, template_hash)
    assert digest_of(esys, session) == expected
    esys.set_primary_policy(ESYS_TR.OWNER, expected, TPM2_ALG.SHA256)
    sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE())
    handle, _, _, _, _ = esys.create_primary(sensitive, template, ESYS_TR.OWNER, session1=session)
    esys.flush_context(handle)


def test_policy_duplication_select(esys, session):
    obj, parent = TPM2_ALG.SHA256.to_bytes(2, "big") + bytes(32), TPM2_ALG.SHA256.to_bytes(2, "big") + bytes(range(32))
    esys.policy_duplication_select(session, obj, parent, True)
    expected = pc.extend(TPM2_ALG.SHA256, ZERO, TPM2_CC.PolicyDuplicationSelect, obj, parent, b"\x01")
    assert digest_of(esys, session) == expected


def test_policy_physical_presence_is_enforced(esys, session):
    """The daemon runs without --physical-presence: a policy that needs it authorizes nothing."""
    esys.policy_physical_presence(session)
    expected = pc.extend(TPM2_ALG.SHA256, ZERO, TPM2_CC.PolicyPhysicalPresence)
    assert digest_of(esys, session) == expected
    esys.set_primary_policy(ESYS_TR.OWNER, expected, TPM2_ALG.SHA256)
    with pytest.raises(TSS2_Exception) as err:
        esys.clock_set(esys.read_clock().clockInfo.clock + 1000, ESYS_TR.OWNER, session1=session)
    assert int(err.value.rc) & 0xFFFF == 0x990  # TPM_RC_PP at session 1


def test_policy_nv_written(esys, session):
    esys.policy_nv_written(session, True)
    expected = pc.extend(TPM2_ALG.SHA256, ZERO, TPM2_CC.PolicyNvWritten, b"\x01")
    assert digest_of(esys, session) == expected
