"""Command audit and audit sessions (Part 1 "Audit"; Part 3 18.5, 18.6, 21) through Engine.execute.

Every audit digest is recomputed here from the commands as sent and the responses as
received -- digest := H(digest || cpHash || rpHash), from zeros -- and compared with what
GetCommandAuditDigest / GetSessionAuditDigest attest; signed ones are verified outside.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from test_tpm_attestation import (
    SIGNED_OUT,
    command,
    ok,
    primary,
    rc,
    run,
    scheme,
    selection,
    verify,
)
from test_tpm_signing import ecc_signer

from support import session_client as sc
from support.engine_oracle import EngineOracle
from support.tpm_client import tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_PT, TPM_RH, TPM_RS_PW, TPM_ST
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_H, RC_P, RC_S, TPM_RC, rc_name
from vtpm_cuse.tpm.state import _HEADER as HEADER
from vtpm_cuse.tpm.state import BlobKind

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
STARTUP_STATE = bytes.fromhex("80010000000c000001440001")
SHUTDOWN_STATE = bytes.fromhex("80010000000c000001450001")
SHUTDOWN_CLEAR = bytes.fromhex("80010000000c000001450000")
CONTINUE, EXCLUSIVE, RESET, AUDIT = 0x01, 0x02, 0x04, 0x80
HASHES = {TPM_ALG.SHA1: "sha1", TPM_ALG.SHA256: "sha256", TPM_ALG.SHA384: "sha384", TPM_ALG.SHA512: "sha512"}
OWNER_NAME = u32(TPM_RH.OWNER)
PCR16 = (16, u32(16))


def h(rc_: int, n: int) -> int:
    return rc_ | RC_H | n << 8


def p(rc_: int, n: int) -> int:
    return rc_ | RC_P | n << 8


def s(rc_: int, n: int) -> int:
    return rc_ | RC_S | n << 8


# --- the digest, computed outside ----------------------------------------------------------------


class AuditLog:
    """What an auditor keeps: the commands and responses, and the digest they chain to."""

    def __init__(self, alg: int) -> None:
        self.alg, self.digest = alg, b""

    def add(self, code: int, names: list[bytes], params: bytes, response_params: bytes) -> None:
        name = HASHES[self.alg]
        cp = hashlib.new(name, u32(code) + b"".join(names) + params).digest()
        rp = hashlib.new(name, u32(0) + u32(code) + response_params).digest()
        start = self.digest or bytes(hashlib.new(name).digest_size)
        self.digest = hashlib.new(name, start + cp + rp).digest()


def response_params(raw: bytes) -> bytes:
    """The response parameter area of a response (parameterSize dropped when there are sessions)."""
    body = raw[10:]
    return body[4 : 4 + int.from_bytes(body[:4], "big")] if raw[:2] == u16(TPM_ST.SESSIONS) else body


def set_audit(tpm, alg: int = TPM_ALG.NULL, set_list=(), clear_list=(), log: AuditLog | None = None) -> str:
    params = u16(alg) + u32(len(set_list)) + b"".join(map(u32, set_list))
    params += u32(len(clear_list)) + b"".join(map(u32, clear_list))
    resp = run(tpm, command(TPM_CC.SetCommandCodeAuditStatus, [TPM_RH.OWNER], params, [b""]))
    if log is not None and resp.rc == 0:
        log.add(TPM_CC.SetCommandCodeAuditStatus, [OWNER_NAME], params, response_params(resp.raw))
    return rc_name(resp.rc)


def pcr_read(tpm, log: AuditLog | None = None, pcrs=(0, 16)) -> bytes:
    params = selection(list(pcrs))
    raw = ok(tpm, command(TPM_CC.PCR_Read, [], params)).raw
    if log is not None:
        log.add(TPM_CC.PCR_Read, [], params, response_params(raw))
    return raw


def command_audit(tpm, sign: int = TPM_RH.NULL, sch: bytes = scheme()):
    cmd = command(TPM_CC.GetCommandAuditDigest, [TPM_RH.ENDORSEMENT, sign], tpm2b(b"audit") + sch, [b"", b""])
    out = SIGNED_OUT.unpack(ok(tpm, cmd).params())
    return out.attest, T.TPMS_ATTEST.unpack(out.attest), out.signature


def session_audit(tpm, handle: int, sign: int = TPM_RH.NULL, sch: bytes = scheme()):
    cmd = command(TPM_CC.GetSessionAuditDigest, [TPM_RH.ENDORSEMENT, sign, handle], tpm2b(b"") + sch, [b"", b""])
    out = SIGNED_OUT.unpack(ok(tpm, cmd).params())
    return out.attest, T.TPMS_ATTEST.unpack(out.attest), out.signature


def audit_counter(tpm) -> int:
    body = u32(TPM_CAP.TPM_PROPERTIES) + u32(TPM_PT.AUDIT_COUNTER_0) + u32(2)
    data = T.TPMS_CAPABILITY_DATA.unpack(ok(tpm, command(TPM_CC.GetCapability, [], body)).params()[1:])
    high, low = (prop.value for prop in data.data)
    return high << 32 | low


def audited(tpm) -> list[int]:
    body = u32(TPM_CAP.AUDIT_COMMANDS) + u32(0) + u32(64)
    return T.TPMS_CAPABILITY_DATA.unpack(ok(tpm, command(TPM_CC.GetCapability, [], body)).params()[1:]).data


def command_digest(alg: int, codes: list[int]) -> bytes:
    return hashlib.new(HASHES[alg], b"".join(u32(c) for c in sorted(codes))).digest()


@pytest.fixture
def tpm():
    engine = EngineOracle(Engine())
    assert run(engine, STARTUP_CLEAR).rc == 0
    return engine


# --- command audit -------------------------------------------------------------------------------


def test_a_new_tpm_audits_only_set_command_code_audit_status(tpm):
    assert audited(tpm) == [TPM_CC.SetCommandCodeAuditStatus]
    assert audit_counter(tpm) == 0
    _, att, sig = command_audit(tpm)
    assert sig.sigAlg == TPM_ALG.NULL and att.type == TPM_ST.ATTEST_COMMAND_AUDIT
    info = att.attested
    assert (info.auditCounter, info.digestAlg, info.auditDigest) == (0, TPM_ALG.SHA512, b"")
    assert info.commandDigest == command_digest(TPM_ALG.SHA512, [TPM_CC.SetCommandCodeAuditStatus])


def test_the_command_audit_digest_chains_every_audited_command(tpm):
    log = AuditLog(TPM_ALG.SHA512)
    assert set_audit(tpm, set_list=[TPM_CC.PCR_Read, 0x7777], log=log) == "SUCCESS"  # unknown codes: ignored
    pcr_read(tpm, log)
    ok(tpm, command(TPM_CC.GetRandom, [], u16(8)))  # not audited
    pcr_read(tpm, log, pcrs=(1, 2, 3))
    assert audited(tpm) == [TPM_CC.SetCommandCodeAuditStatus, TPM_CC.PCR_Read]
    _, att, _ = command_audit(tpm)
    info = att.attested
    assert (info.auditCounter, info.digestAlg, info.auditDigest) == (1, TPM_ALG.SHA512, log.digest)
    assert info.commandDigest == command_digest(TPM_ALG.SHA512, [TPM_CC.SetCommandCodeAuditStatus, TPM_CC.PCR_Read])
    assert audit_counter(tpm) == 1
    # A failed command is not audited.
    assert rc(tpm, command(TPM_CC.PCR_Read, [], u32(1) + u16(TPM_ALG.SHA256) + b"\x07" + bytes(7))) != "SUCCESS"
    assert command_audit(tpm)[1].attested.auditDigest == log.digest


def test_a_signed_command_audit_digest_closes_the_sequence(tpm):
    signer = primary(tpm, ecc_signer(0x0003, TPM_ALG.ECDSA, TPM_ALG.SHA256), TPM_RH.ENDORSEMENT)
    log = AuditLog(TPM_ALG.SHA512)
    set_audit(tpm, set_list=[TPM_CC.PCR_Read], log=log)
    pcr_read(tpm, log)
    raw, att, sig = command_audit(tpm, signer.handle)
    verify(signer, raw, sig)
    assert att.qualifiedSigner == signer.qn and att.attested.auditDigest == log.digest
    # Now empty; the next audited command starts sequence 2 from zeros.
    assert command_audit(tpm)[1].attested.auditDigest == b""
    log = AuditLog(TPM_ALG.SHA512)
    pcr_read(tpm, log)
    info = command_audit(tpm)[1].attested
    assert (info.auditCounter, info.auditDigest) == (2, log.digest)


def test_changing_the_audit_algorithm(tpm):
    set_audit(tpm, set_list=[TPM_CC.PCR_Read])
    assert set_audit(tpm, TPM_ALG.SHA256, set_list=[TPM_CC.GetRandom]) == rc_name(p(TPM_RC.VALUE, 1))
    assert set_audit(tpm, TPM_ALG.SHA256, clear_list=[TPM_CC.PCR_Read]) == rc_name(p(TPM_RC.VALUE, 1))
    # The change empties the digest and is not recorded in the new one.
    assert set_audit(tpm, TPM_ALG.SHA256) == "SUCCESS"
    info = command_audit(tpm)[1].attested
    assert (info.auditCounter, info.digestAlg, info.auditDigest) == (1, TPM_ALG.SHA256, b"")
    log = AuditLog(TPM_ALG.SHA256)
    pcr_read(tpm, log)
    assert set_audit(tpm, TPM_ALG.SHA256, set_list=[TPM_CC.GetRandom], log=log) == "SUCCESS"  # the same: lists apply
    info = command_audit(tpm)[1].attested
    assert (info.auditCounter, info.digestAlg, info.auditDigest) == (2, TPM_ALG.SHA256, log.digest)
    assert set_audit(tpm, 0x0099) == rc_name(p(TPM_RC.HASH, 1))


def test_clear_list_cannot_remove_set_command_code_audit_status(tpm):
    set_audit(tpm, set_list=[TPM_CC.PCR_Read, TPM_CC.GetRandom])
    set_audit(tpm, clear_list=[TPM_CC.SetCommandCodeAuditStatus, TPM_CC.GetRandom])
    assert audited(tpm) == [TPM_CC.SetCommandCodeAuditStatus, TPM_CC.PCR_Read]
    # Set and clear in one command: the clear wins.
    set_audit(tpm, set_list=[TPM_CC.Quote], clear_list=[TPM_CC.Quote, TPM_CC.PCR_Read])
    assert audited(tpm) == [TPM_CC.SetCommandCodeAuditStatus]


def test_audit_authorizations(tpm):
    params = u16(TPM_ALG.NULL) + u32(0) + u32(0)
    cmd = command(TPM_CC.SetCommandCodeAuditStatus, [TPM_RH.ENDORSEMENT], params, [b""])
    assert rc(tpm, cmd) == rc_name(h(TPM_RC.VALUE, 1))
    cmd = command(TPM_CC.GetCommandAuditDigest, [TPM_RH.OWNER, TPM_RH.NULL], tpm2b(b"") + scheme(), [b"", b""])
    assert rc(tpm, cmd) == rc_name(h(TPM_RC.VALUE, 1))
    cmd = command(TPM_CC.SetCommandCodeAuditStatus, [TPM_RH.PLATFORM], params, [b""])
    assert rc(tpm, cmd) == "SUCCESS"


def test_the_command_audit_digest_survives_restart_but_not_reset(tpm):
    log = AuditLog(TPM_ALG.SHA512)
    set_audit(tpm, set_list=[TPM_CC.PCR_Read], log=log)
    pcr_read(tpm, log)
    ok(tpm, SHUTDOWN_STATE)
    restarted = EngineOracle(Engine.from_blobs(tpm.permanent_blob()))
    ok(restarted, STARTUP_CLEAR)  # TPM Restart
    info = command_audit(restarted)[1].attested
    assert (info.auditCounter, info.auditDigest) == (1, log.digest)
    ok(restarted, SHUTDOWN_CLEAR)
    reset = EngineOracle(Engine.from_blobs(restarted.permanent_blob()))
    ok(reset, STARTUP_CLEAR)  # TPM Reset
    info = command_audit(reset)[1].attested
    assert (info.auditCounter, info.auditDigest) == (1, b"")
    assert audited(reset) == [TPM_CC.SetCommandCodeAuditStatus, TPM_CC.PCR_Read]
    pcr_read(reset)
    assert audit_counter(reset) == 2


def test_permanent_state_from_before_command_audit_loads(tpm):
    """A blob written before the counter and digest existed has neither field: defaults apply."""
    fields = json.loads(tpm.permanent_blob()[HEADER.size :])
    for key in ("audit_counter", "audit_digest"):
        del fields[key]
    fields["audit_hash_alg"] = TPM_ALG.NULL  # what state written before then holds
    payload = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
    old = HEADER.pack(b"VTPM", 1, BlobKind.PERMANENT, hashlib.sha256(payload).digest()) + payload
    engine = EngineOracle(Engine.from_blobs(old))
    ok(engine, STARTUP_CLEAR)
    info = command_audit(engine)[1].attested
    assert (info.auditCounter, info.digestAlg, info.auditDigest) == (0, TPM_ALG.SHA512, b"")


# --- audit sessions ------------------------------------------------------------------------------


def audited_pcr_read(tpm, session, attributes: int, log: AuditLog | None = None, pcrs=(0, 16)) -> sc.Result:
    params = selection(list(pcrs))
    result = sc.run(tpm.execute, TPM_CC.PCR_Read, [], params, [sc.Use(session, attributes)], check=False)
    if log is not None and result.rc == 0:
        log.add(TPM_CC.PCR_Read, [], params, result.params)
    return result


def response_attributes(result: sc.Result) -> int:
    rest = result.raw[10:]
    rest = rest[4 + int.from_bytes(rest[:4], "big") :]
    return rest[2 + int.from_bytes(rest[:2], "big")]


def test_an_audit_session_chains_its_commands_and_is_exclusive(tpm):
    session = sc.start_session(tpm.execute)
    log = AuditLog(TPM_ALG.SHA256)
    first = audited_pcr_read(tpm, session, CONTINUE | AUDIT, log)
    assert first.rc == 0 and response_attributes(first) == CONTINUE | AUDIT | EXCLUSIVE
    second = audited_pcr_read(tpm, session, CONTINUE | AUDIT | EXCLUSIVE, log, pcrs=(5,))
    assert second.rc == 0 and response_attributes(second) == CONTINUE | AUDIT | EXCLUSIVE
    _, att, sig = session_audit(tpm, session.handle)
    assert sig.sigAlg == TPM_ALG.NULL and att.type == TPM_ST.ATTEST_SESSION_AUDIT
    assert (att.attested.exclusiveSession, att.attested.sessionDigest) == (1, log.digest)
    # GetSessionAuditDigest was a command without the session: no longer exclusive.
    assert audited_pcr_read(tpm, session, CONTINUE | AUDIT | EXCLUSIVE).rc == TPM_RC.EXCLUSIVE
    third = audited_pcr_read(tpm, session, CONTINUE | AUDIT, log)
    assert third.rc == 0 and response_attributes(third) == CONTINUE | AUDIT
    assert session_audit(tpm, session.handle)[1].attested == T.TPMS_SESSION_AUDIT_INFO(
        exclusiveSession=0, sessionDigest=log.digest
    )
    # auditReset starts again from zeros and makes the session exclusive again.
    log = AuditLog(TPM_ALG.SHA256)
    reset = audited_pcr_read(tpm, session, CONTINUE | AUDIT | RESET, log)
    assert response_attributes(reset) == CONTINUE | AUDIT | RESET | EXCLUSIVE
    assert session_audit(tpm, session.handle)[1].attested.sessionDigest == log.digest


def test_an_audit_session_may_authorize_the_command_it_audits(tpm):
    session = sc.start_session(tpm.execute, auth_hash=sc.SHA384)
    log = AuditLog(TPM_ALG.SHA384)
    params = u32(1) + u16(TPM_ALG.SHA256) + bytes(range(32))
    use = sc.Use(session, CONTINUE | AUDIT, u32(16))
    result = sc.run(tpm.execute, TPM_CC.PCR_Extend, [PCR16], params, [use])
    assert result.rc == 0
    log.add(TPM_CC.PCR_Extend, [u32(16)], params, result.params)
    assert session_audit(tpm, session.handle)[1].attested.sessionDigest == log.digest


def test_a_signed_session_audit_digest_verifies(tpm):
    signer = primary(tpm, ecc_signer(0x0003, TPM_ALG.ECDSA, TPM_ALG.SHA256), TPM_RH.ENDORSEMENT)
    session = sc.start_session(tpm.execute)
    log = AuditLog(TPM_ALG.SHA256)
    audited_pcr_read(tpm, session, CONTINUE | AUDIT, log)
    raw, att, sig = session_audit(tpm, session.handle, signer.handle)
    verify(signer, raw, sig)
    assert (att.qualifiedSigner, att.attested.sessionDigest) == (signer.qn, log.digest)


def test_audit_session_errors(tpm):
    session = sc.start_session(tpm.execute)
    other = sc.start_session(tpm.execute)
    policy = sc.start_session(tpm.execute, kind=sc.SE_POLICY)

    def digest_cmd(handle: int) -> bytes:
        handles = [TPM_RH.ENDORSEMENT, TPM_RH.NULL, handle]
        return command(TPM_CC.GetSessionAuditDigest, handles, tpm2b(b"") + scheme(), [b"", b""])

    assert rc(tpm, digest_cmd(session.handle)) == rc_name(h(TPM_RC.TYPE, 3))  # never audited anything
    assert rc(tpm, digest_cmd(policy.handle)) == rc_name(h(TPM_RC.VALUE, 3))
    assert rc(tpm, digest_cmd(session.handle + 5)) == rc_name(TPM_RC.REFERENCE_H0 + 2)
    assert audited_pcr_read(tpm, policy, CONTINUE | AUDIT).rc == s(TPM_RC.ATTRIBUTES, 1)
    for attrs in (CONTINUE | EXCLUSIVE, CONTINUE | RESET):
        assert audited_pcr_read(tpm, session, attrs).rc == s(TPM_RC.ATTRIBUTES, 1)
    uses = [sc.Use(session, CONTINUE | AUDIT), sc.Use(other, CONTINUE | AUDIT)]
    assert sc.run(tpm.execute, TPM_CC.PCR_Read, [], selection([0]), uses, check=False).rc == s(TPM_RC.ATTRIBUTES, 2)
    password_audit = u32(TPM_RS_PW) + u16(0) + bytes([CONTINUE | AUDIT]) + u16(0)
    rest = u32(16) + u32(len(password_audit)) + password_audit + u32(0)
    cmd = u16(TPM_ST.SESSIONS) + u32(10 + len(rest)) + u32(TPM_CC.PCR_Extend) + rest
    assert rc(tpm, cmd) == rc_name(s(TPM_RC.ATTRIBUTES, 1))


def test_a_saved_session_keeps_its_audit_digest(tpm):
    session = sc.start_session(tpm.execute)
    log = AuditLog(TPM_ALG.SHA256)
    audited_pcr_read(tpm, session, CONTINUE | AUDIT, log)
    saved = ok(tpm, command(TPM_CC.ContextSave, [session.handle], b"")).raw[10:]
    ok(tpm, command(TPM_CC.ContextLoad, [], saved))
    audited_pcr_read(tpm, session, CONTINUE | AUDIT, log, pcrs=(7,))
    assert session_audit(tpm, session.handle)[1].attested.sessionDigest == log.digest


def test_the_audit_covers_the_parameters_as_encrypted(tpm):
    """cpHash and rpHash are over the parameter areas as sent, so an auditor needs no session key."""
    session = sc.start_session(tpm.execute, sym=sc.AES128)
    result = sc.run(tpm.execute, TPM_CC.GetRandom, [], u16(16), [sc.Use(session, CONTINUE | AUDIT | sc.ENCRYPT)])
    assert result.rc == 0
    sent = response_params(result.raw)
    assert sent != result.params  # encrypted on the wire, decrypted by the caller
    log = AuditLog(TPM_ALG.SHA256)
    log.add(TPM_CC.GetRandom, [], u16(16), sent)
    assert session_audit(tpm, session.handle)[1].attested.sessionDigest == log.digest
