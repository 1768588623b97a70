"""Command audit and audit sessions against Debian's swtpm (libtpms).

Audit digests of a fixed command sequence are deterministic -- they chain cpHash and rpHash,
and PCR_Read / PCR_Extend / SetCommandCodeAuditStatus answer the same bytes on both TPMs --
so the unsigned TPMS_COMMAND_AUDIT_INFO and TPMS_SESSION_AUDIT_INFO are compared whole,
along with every response code and the session attributes each response echoes.
"""

from __future__ import annotations

import pytest
from test_tpm_attestation import command, selection
from test_tpm_audit import (
    AUDIT,
    CONTINUE,
    EXCLUSIVE,
    PCR16,
    RESET,
    STARTUP_CLEAR,
    audited,
    audited_pcr_read,
    command_audit,
    response_attributes,
    session_audit,
    set_audit,
)

from support import session_client as sc
from support.engine_oracle import EngineOracle
from support.object_templates import create_primary_cmd, ecc_template
from support.tpm_client import Response, tpm2b, u16, u32
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import rc_name

pytestmark = pytest.mark.swtpm


@pytest.fixture
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


def extend(tpm, session=None, attributes: int = CONTINUE) -> int:
    params = u32(1) + u16(TPM_ALG.SHA256) + bytes(range(32))
    if session is None:
        return Response(tpm.execute(command(TPM_CC.PCR_Extend, [16], params, [b""]))).rc
    use = sc.Use(session, attributes, u32(16))
    return sc.run(tpm.execute, TPM_CC.PCR_Extend, [PCR16], params, [use], check=False).rc


def both(pair, step) -> list:
    """Run ``step(tpm)`` on both TPMs; the results must agree."""
    theirs, ours = (step(t) for t in pair)
    assert theirs == ours
    return ours


def test_command_audit_digests_match(pair):
    both(pair, lambda t: command_audit(t)[1].attested)
    both(pair, audited)
    steps = [
        lambda t: set_audit(t, TPM_ALG.SHA256),
        lambda t: set_audit(t, TPM_ALG.SHA1, set_list=[TPM_CC.PCR_Read]),
        lambda t: set_audit(t, set_list=[TPM_CC.PCR_Read, TPM_CC.PCR_Extend, 0x7777]),
        lambda t: extend(t),
        lambda t: Response(t.execute(command(TPM_CC.PCR_Read, [], selection([0, 16])))).raw,
        lambda t: Response(t.execute(command(TPM_CC.PCR_Read, [], u32(1) + u16(TPM_ALG.SHA256) + b"\x09"))).rc,
        lambda t: command_audit(t)[1].attested,
        lambda t: set_audit(t, clear_list=[TPM_CC.SetCommandCodeAuditStatus, TPM_CC.PCR_Extend]),
        lambda t: command_audit(t)[1].attested,  # an unsigned digest does not reset it
        audited,
        lambda t: set_audit(t, TPM_ALG.SHA384),
        lambda t: Response(t.execute(command(TPM_CC.PCR_Read, [], selection([3])))).raw,
        lambda t: command_audit(t)[1].attested,
    ]
    for step in steps:
        both(pair, step)


def test_session_audit_digests_match(pair):
    def sequence(t):
        session = sc.start_session(t.execute, auth_hash=sc.SHA256)
        other = sc.start_session(t.execute, auth_hash=sc.SHA1)
        seen = []

        def read(s, attrs, pcrs=(0, 16)):
            result = audited_pcr_read(t, s, attrs, pcrs=pcrs)
            seen.append((rc_name(result.rc), response_attributes(result) if result.rc == 0 else None))

        read(session, CONTINUE | AUDIT)
        read(session, CONTINUE | AUDIT | EXCLUSIVE)
        seen.append(rc_name(extend(t, session, CONTINUE | AUDIT | EXCLUSIVE)))
        seen.append(session_audit(t, session.handle)[1].attested)
        read(session, CONTINUE | AUDIT | EXCLUSIVE)  # GetSessionAuditDigest intervened
        read(session, CONTINUE | AUDIT)
        read(other, CONTINUE | AUDIT | RESET, pcrs=(1,))
        read(session, CONTINUE | AUDIT | EXCLUSIVE)
        read(session, CONTINUE | AUDIT | RESET, pcrs=(2, 3))
        Response(t.execute(command(TPM_CC.PCR_Read, [], u32(1) + u16(TPM_ALG.SHA256) + b"\x09")))  # fails
        read(session, CONTINUE | AUDIT | EXCLUSIVE, pcrs=(4,))
        seen.append(session_audit(t, session.handle)[1].attested)
        seen.append(session_audit(t, other.handle)[1].attested)
        return seen

    both(pair, sequence)


def test_audit_error_codes_match(pair):
    def codes(t):
        policy = sc.start_session(t.execute, kind=sc.SE_POLICY)
        session = sc.start_session(t.execute)
        storage = int.from_bytes(t.execute(create_primary_cmd(ecc_template()))[10:14], "big")  # cannot sign
        digest = [TPM_RH.ENDORSEMENT, TPM_RH.NULL]
        body = tpm2b(b"") + u16(TPM_ALG.NULL)
        cmds = [
            # The signer is checked before the session (TPM_RC_KEY before TPM_RC_TYPE).
            command(TPM_CC.GetSessionAuditDigest, [TPM_RH.ENDORSEMENT, storage, session.handle], body, [b"", b""]),
            command(TPM_CC.GetCommandAuditDigest, [TPM_RH.ENDORSEMENT, storage], body, [b"", b""]),
            command(TPM_CC.GetSessionAuditDigest, [*digest, session.handle], body, [b"", b""]),
            command(TPM_CC.GetSessionAuditDigest, [*digest, policy.handle], body, [b"", b""]),
            command(TPM_CC.GetSessionAuditDigest, [*digest, session.handle + 7], body, [b"", b""]),
            command(TPM_CC.GetCommandAuditDigest, [TPM_RH.OWNER, TPM_RH.NULL], body, [b"", b""]),
            command(TPM_CC.GetCommandAuditDigest, digest, body, [b"wrong", b""]),
            command(TPM_CC.SetCommandCodeAuditStatus, [TPM_RH.ENDORSEMENT], u16(TPM_ALG.NULL) + bytes(8), [b""]),
            command(TPM_CC.SetCommandCodeAuditStatus, [TPM_RH.PLATFORM], u16(0x99) + bytes(8), [b""]),
            command(
                TPM_CC.SetCommandCodeAuditStatus,
                [TPM_RH.OWNER],
                u16(TPM_ALG.SHA1) + u32(1) + u32(0x17B) + u32(0),
                [b""],
            ),
            command(
                TPM_CC.SetCommandCodeAuditStatus,
                [TPM_RH.OWNER],
                u16(TPM_ALG.SHA1) + u32(0) + u32(1) + u32(0x17B),
                [b""],
            ),
        ]
        got = [rc_name(Response(t.execute(cmd)).rc) for cmd in cmds]
        got += [rc_name(audited_pcr_read(t, policy, CONTINUE | AUDIT).rc)]
        got += [rc_name(audited_pcr_read(t, session, attrs).rc) for attrs in (CONTINUE | EXCLUSIVE, CONTINUE | RESET)]
        return got

    both(pair, codes)
