"""The engine through its real interface, Engine.execute(bytes) -> bytes."""

from __future__ import annotations

import hashlib

import pytest

from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.algorithms import HASHES
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_PT, TPM_RH, TPM_ST, TPMA_CC
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_P, RC_S, TPM_RC
from vtpm_cuse.tpm.marshal import UINT32, Struct
from vtpm_cuse.tpm.state import StateBlobError

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
STARTUP_STATE = bytes.fromhex("80010000000c000001440001")
SHUTDOWN_STATE = bytes.fromhex("80010000000c000001450001")
SHUTDOWN_CLEAR = bytes.fromhex("80010000000c000001450000")
SUCCESS = bytes.fromhex("80010000000a00000000")

# QEMU's qtest replays these bytes (tests/qtest/tpm-util.c) and expects this PCR 10.
QEMU_PCR_EXTEND = bytes.fromhex(
    "800200000041000001820000000a0000000940000009000000000000000001000b74657374" + "00" * 28
)
QEMU_PCR_EXTEND_RESP = bytes.fromhex("80020000001300000000000000000000010000")
QEMU_PCR_READ = bytes.fromhex("80010000001400 00017e 00000001 000b 03 000400".replace(" ", ""))
QEMU_PCR10 = bytes.fromhex("f68598e5868de68b97299960f2717d176789a42f9aaea8c7b7aa79a86256c1de")


def run(engine: Engine, cmd: bytes, locality: int = 0) -> Response:
    return Response(engine.execute(cmd, locality))


@pytest.fixture
def tpm() -> Engine:
    engine = Engine()
    assert engine.execute(STARTUP_CLEAR) == SUCCESS
    return engine


def pcr_read(engine: Engine, alg: int, pcrs: list[int]) -> list[bytes]:
    select = T.selection_bytes(pcrs)
    resp = run(engine, command(TPM_CC.PCR_Read, u32(1) + u16(alg) + bytes([len(select)]) + select))
    assert resp.rc == 0
    out = Struct(
        "PCR_Read_Out", [("counter", UINT32), ("sel", T.TPML_PCR_SELECTION), ("values", T.TPML_DIGEST)]
    ).unpack(resp.params())
    return out.values


# --- replayed byte strings ------------------------------------------------------------------


def test_startup_replay():
    assert Engine().execute(STARTUP_CLEAR) == bytes.fromhex("80 01 00 00 00 0a 00 00 00 00".replace(" ", ""))


def test_qemu_pcr_extend_then_read(tpm):
    assert tpm.execute(QEMU_PCR_EXTEND) == QEMU_PCR_EXTEND_RESP
    resp = tpm.execute(QEMU_PCR_READ)
    # QEMU compares everything but pcrUpdateCounter (byte 13).
    expected = (
        bytes.fromhex("80010000003e00000000000000")
        + bytes(1)
        + bytes.fromhex("00000001000b03000400000000010020")
        + QEMU_PCR10
    )
    assert resp[:13] == expected[:13] and resp[14:] == expected[14:]


def test_command_before_startup_is_initialize():
    assert Response(Engine().execute(QEMU_PCR_READ)).rc == TPM_RC.INITIALIZE


def test_startup_twice_is_initialize(tpm):
    assert run(tpm, STARTUP_CLEAR).rc == TPM_RC.INITIALIZE


# --- header checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cmd, rc",
    [
        ("8001 0000000b 0000017b", TPM_RC.COMMAND_SIZE),  # size field disagrees with length
        ("8001 0000000a 0000ffff", TPM_RC.COMMAND_CODE),
        ("8001 00000008 0000", TPM_RC.INSUFFICIENT),  # consistent size, no room for the code
        ("8001 00000008", TPM_RC.COMMAND_SIZE),
        ("8002 0000000e 00000181 00000004", TPM_RC.AUTHSIZE),  # authorizationSize too small
        ("8001 0000000e 0000017b 00100000", TPM_RC.SIZE),  # trailing bytes after the parameters
    ],
)
def test_header_errors(tpm, cmd, rc):
    assert run(tpm, bytes.fromhex(cmd.replace(" ", ""))).rc == rc


def test_bad_tag_answers_in_tpm12_format(tpm):
    """Part 3 clause 5: a bad tag is TPM_RC_BAD_TAG with TPM_ST_RSP_COMMAND so a TPM 1.2
    driver understands it.  (libtpms answers TPM_RC_VALUE; we follow the specification.)"""
    resp = run(tpm, bytes.fromhex("00c10000000a000000f1"))
    assert (resp.tag, resp.rc) == (TPM_ST.RSP_COMMAND, TPM_RC.BAD_TAG)


def test_auth_missing_without_sessions(tpm):
    cmd = command(TPM_CC.PCR_Reset, handles=u32(16))
    assert run(tpm, cmd).rc == TPM_RC.AUTH_MISSING


def test_parameter_errors_carry_the_parameter_number(tpm):
    # GetCapability(capability=0x1234): TPM_RC_VALUE on parameter 1
    resp = run(tpm, command(TPM_CC.GetCapability, u32(0x1234) + u32(0) + u32(1)))
    assert resp.rc == TPM_RC.VALUE | RC_P | (1 << 8)
    # Hash with an unknown algorithm: TPM_RC_HASH on parameter 2
    resp = run(tpm, command(TPM_CC.Hash, tpm2b(b"x") + u16(0x99) + u32(TPM_RH.NULL)))
    assert resp.rc == TPM_RC.HASH | RC_P | (2 << 8)


def test_handle_errors_carry_the_handle_number(tpm):
    resp = run(tpm, command(TPM_CC.PCR_Extend, u32(0), handles=u32(24), auth=b""))
    assert resp.rc == TPM_RC.VALUE | (1 << 8)


def test_wrong_password_is_bad_auth_on_session_1(tpm):
    resp = run(
        tpm,
        command(TPM_CC.ClockSet, (tpm.clock() + 10_000).to_bytes(8, "big"), handles=u32(TPM_RH.OWNER), auth=b"wrong"),
    )
    assert resp.rc == TPM_RC.BAD_AUTH | RC_S | (1 << 8)


# --- commands ------------------------------------------------------------------------------


def test_get_random_caps_at_one_digest(tpm):
    resp = run(tpm, command(TPM_CC.GetRandom, u16(100)))
    assert resp.rc == 0 and T.TPM2B_DIGEST.unpack(resp.params()) and len(resp.params()) == 2 + 64
    a, b = (T.TPM2B_DIGEST.unpack(run(tpm, command(TPM_CC.GetRandom, u16(32))).params()) for _ in range(2))
    assert len(a) == 32 and a != b


def test_stir_random(tpm):
    assert run(tpm, command(TPM_CC.StirRandom, tpm2b(b"entropy"))).rc == 0
    assert len(T.TPM2B_DIGEST.unpack(run(tpm, command(TPM_CC.GetRandom, u16(16))).params())) == 16


def test_self_tests(tpm):
    assert run(tpm, command(TPM_CC.SelfTest, b"\x01")).rc == 0
    resp = run(tpm, command(TPM_CC.IncrementalSelfTest, u32(1) + u16(TPM_ALG.SHA256)))
    assert resp.rc == 0 and T.TPML_ALG.unpack(resp.params()) == []
    assert run(tpm, command(TPM_CC.IncrementalSelfTest, u32(1) + u16(0x0099))).rc == TPM_RC.VALUE | RC_P | 0x100
    resp = run(tpm, command(TPM_CC.GetTestResult))
    assert resp.rc == 0 and resp.params().endswith(u32(TPM_RC.SUCCESS))


def test_failure_mode_allows_only_test_result_and_capability(tpm):
    tpm.failure_mode, tpm.failure_reason = True, "injected"
    assert run(tpm, command(TPM_CC.GetRandom, u16(8))).rc == TPM_RC.FAILURE
    assert run(tpm, command(TPM_CC.GetTestResult)).params().endswith(u32(TPM_RC.FAILURE))
    assert run(tpm, command(TPM_CC.GetCapability, u32(TPM_CAP.ALGS) + u32(0) + u32(1))).rc == 0


@pytest.mark.parametrize("alg", [TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384, TPM_ALG.SHA512])
def test_pcr_extend_event_reset(tpm, alg):
    h = HASHES[alg]
    digest = h.digest(b"measurement")
    assert run(tpm, command(TPM_CC.PCR_Extend, u32(1) + u16(alg) + digest, handles=u32(16), auth=b"")).rc == 0
    expected = h.digest(bytes(h.digest_size) + digest)
    assert pcr_read(tpm, alg, [16]) == [expected]
    resp = run(tpm, command(TPM_CC.PCR_Event, tpm2b(b"event"), handles=u32(16), auth=b""))
    assert resp.rc == 0
    events = T.TPML_DIGEST_VALUES.unpack(resp.params())
    assert {e.hashAlg: e.digest for e in events}[alg] == h.digest(b"event")
    expected = h.digest(expected + h.digest(b"event"))
    assert pcr_read(tpm, alg, [16]) == [expected]
    assert run(tpm, command(TPM_CC.PCR_Reset, handles=u32(16), auth=b"")).rc == 0
    assert pcr_read(tpm, alg, [16]) == [bytes(h.digest_size)]


def test_pcr_locality_rules(tpm):
    digest = u32(1) + u16(TPM_ALG.SHA256) + bytes(32)
    # PCR 0-15 cannot be reset at all; PCR 17 can only be extended from localities 2-4.
    assert run(tpm, command(TPM_CC.PCR_Reset, handles=u32(0), auth=b"")).rc == TPM_RC.LOCALITY
    assert run(tpm, command(TPM_CC.PCR_Extend, digest, handles=u32(17), auth=b"")).rc == TPM_RC.LOCALITY
    assert run(tpm, command(TPM_CC.PCR_Extend, digest, handles=u32(17), auth=b""), locality=2).rc == 0
    # PCR 20 resets from locality 2, not 1.
    assert run(tpm, command(TPM_CC.PCR_Reset, handles=u32(20), auth=b""), locality=1).rc == TPM_RC.LOCALITY
    assert run(tpm, command(TPM_CC.PCR_Reset, handles=u32(20), auth=b""), locality=2).rc == 0


def test_drtm_pcrs_start_at_all_ones(tpm):
    assert pcr_read(tpm, TPM_ALG.SHA256, [17, 0]) == [bytes(32), b"\xff" * 32]


def test_pcr_read_returns_at_most_eight(tpm):
    values = pcr_read(tpm, TPM_ALG.SHA1, list(range(24)))
    assert len(values) == 8


def test_hash_and_ticket(tpm):
    data = b"a" * 1024
    resp = run(tpm, command(TPM_CC.Hash, tpm2b(data) + u16(TPM_ALG.SHA256) + u32(TPM_RH.OWNER)))
    out = Struct("Hash_Out", [("d", T.TPM2B_DIGEST), ("t", T.TPMT_TK_HASHCHECK)]).unpack(resp.params())
    assert out.d == hashlib.sha256(data).digest()
    assert out.t.hierarchy == TPM_RH.OWNER and len(out.t.digest) == 64  # HMAC-SHA-512, as libtpms
    # Data that starts like a TPM-generated structure gets a NULL ticket.
    resp = run(tpm, command(TPM_CC.Hash, tpm2b(b"\xffTCGx") + u16(TPM_ALG.SHA256) + u32(TPM_RH.OWNER)))
    assert resp.params().endswith(u16(TPM_ST.HASHCHECK) + u32(TPM_RH.NULL) + u16(0))


def _start_sequence(tpm, alg: int, auth: bytes = b"pw") -> int:
    resp = run(tpm, command(TPM_CC.HashSequenceStart, tpm2b(auth) + u16(alg)))
    assert resp.rc == 0
    return int.from_bytes(resp.raw[10:14], "big")


def test_hash_sequence(tpm):
    handle = _start_sequence(tpm, TPM_ALG.SHA384)
    data = bytes(range(256)) * 8
    for i in range(0, len(data), 1024):
        assert run(tpm, command(TPM_CC.SequenceUpdate, tpm2b(data[i : i + 1024]), u32(handle), b"pw")).rc == 0
    # The sequence's auth is checked.
    assert run(tpm, command(TPM_CC.SequenceUpdate, tpm2b(b""), u32(handle), b"no")).rc & 0xBF == TPM_RC.BAD_AUTH
    resp = run(tpm, command(TPM_CC.SequenceComplete, tpm2b(b"end") + u32(TPM_RH.NULL), u32(handle), b"pw"))
    assert resp.rc == 0
    assert T.TPM2B_DIGEST.unpack(resp.params()[:50]) == hashlib.sha384(data + b"end").digest()
    # Completing flushed the sequence.
    assert run(tpm, command(TPM_CC.SequenceUpdate, tpm2b(b""), u32(handle), b"pw")).rc == TPM_RC.REFERENCE_H0


def test_event_sequence_extends_every_bank(tpm):
    handle = _start_sequence(tpm, TPM_ALG.NULL, b"")
    handles = u32(16) + u32(handle)
    session = (u32(0x40000009) + u16(0) + b"\x01" + u16(0)) * 2
    rest = handles + u32(len(session)) + session + tpm2b(b"boot event")
    cmd = u16(TPM_ST.SESSIONS) + u32(10 + len(rest)) + u32(TPM_CC.EventSequenceComplete) + rest
    resp = run(tpm, cmd)
    assert resp.rc == 0
    digests = {d.hashAlg: d.digest for d in T.TPML_DIGEST_VALUES.unpack(resp.params())}
    assert digests[TPM_ALG.SHA1] == hashlib.sha1(b"boot event").digest()
    assert pcr_read(tpm, TPM_ALG.SHA512, [16]) == [
        hashlib.sha512(bytes(64) + hashlib.sha512(b"boot event").digest()).digest()
    ]


def test_objects_run_out():
    """With libtpms' three transient slots (the default is larger: test_tpm_persistent.py)."""
    tpm = Engine(max_objects=3)
    assert tpm.execute(STARTUP_CLEAR) == SUCCESS
    for _ in range(3):
        _start_sequence(tpm, TPM_ALG.SHA256)
    assert run(tpm, command(TPM_CC.HashSequenceStart, tpm2b(b"") + u16(TPM_ALG.SHA256))).rc == TPM_RC.OBJECT_MEMORY


def test_clock(tpm):
    resp = run(tpm, command(TPM_CC.ReadClock))
    info = T.TPMS_TIME_INFO.unpack(resp.params())
    assert info.clockInfo.resetCount == 1 and info.clockInfo.safe == 0  # first start was not orderly
    target = info.clockInfo.clock + 3_600_000
    assert run(tpm, command(TPM_CC.ClockSet, target.to_bytes(8, "big"), u32(TPM_RH.OWNER), b"")).rc == 0
    assert T.TPMS_TIME_INFO.unpack(run(tpm, command(TPM_CC.ReadClock)).params()).clockInfo.clock >= target
    backwards = run(tpm, command(TPM_CC.ClockSet, (0).to_bytes(8, "big"), u32(TPM_RH.OWNER), b""))
    assert backwards.rc == TPM_RC.VALUE | RC_P | 0x100
    assert run(tpm, command(TPM_CC.ClockRateAdjust, b"\x03", u32(TPM_RH.PLATFORM), b"")).rc == 0
    assert run(tpm, command(TPM_CC.ClockRateAdjust, b"\xfd", u32(TPM_RH.PLATFORM), b"")).rc == 0  # -3
    assert (
        run(tpm, command(TPM_CC.ClockRateAdjust, b"\x04", u32(TPM_RH.PLATFORM), b"")).rc == TPM_RC.VALUE | RC_P | 0x100
    )


def test_clock_rate_adjust_changes_rate():
    now = [0]
    engine = Engine(monotonic_ms=lambda: now[0])
    engine.execute(STARTUP_CLEAR)
    engine.adjust_clock_rate(3)  # coarse faster: 1 %
    start = engine.clock()
    now[0] += 100_000
    assert engine.clock() - start == 101_000


def test_test_parms(tpm):
    rsa = u16(TPM_ALG.RSA) + u16(TPM_ALG.AES) + u16(128) + u16(TPM_ALG.CFB) + u16(TPM_ALG.NULL) + u16(2048) + u32(0)
    assert run(tpm, command(TPM_CC.TestParms, rsa)).rc == 0
    bad_bits = u16(TPM_ALG.RSA) + u16(TPM_ALG.NULL) + u16(TPM_ALG.NULL) + u16(1000) + u32(0)
    assert run(tpm, command(TPM_CC.TestParms, bad_bits)).rc == TPM_RC.VALUE | RC_P | 0x100
    bad_exp = u16(TPM_ALG.RSA) + u16(TPM_ALG.NULL) + u16(TPM_ALG.NULL) + u16(2048) + u32(9)
    assert run(tpm, command(TPM_CC.TestParms, bad_exp)).rc == TPM_RC.VALUE | RC_P | 0x100
    ecc = (
        u16(TPM_ALG.ECC)
        + u16(TPM_ALG.NULL)
        + u16(TPM_ALG.ECDSA)
        + u16(TPM_ALG.SHA256)
        + u16(0x0003)
        + u16(TPM_ALG.NULL)
    )
    assert run(tpm, command(TPM_CC.TestParms, ecc)).rc == 0
    sm2 = u16(TPM_ALG.ECC) + u16(TPM_ALG.NULL) + u16(TPM_ALG.NULL) + u16(0x0020) + u16(TPM_ALG.NULL)
    assert run(tpm, command(TPM_CC.TestParms, sm2)).rc == TPM_RC.CURVE | RC_P | 0x100


def test_pcr_allocate_applies_at_next_reset(tpm):
    sel = u32(1) + u16(TPM_ALG.SHA1) + b"\x03" + bytes(3)
    resp = run(tpm, command(TPM_CC.PCR_Allocate, sel, u32(TPM_RH.PLATFORM), b""))
    assert resp.rc == 0 and resp.params()[:1] == b"\x01"
    assert len(pcr_read(tpm, TPM_ALG.SHA1, [0])) == 1  # still allocated until the next TPM Reset
    tpm.execute(SHUTDOWN_CLEAR)
    restarted = Engine.from_blobs(tpm.permanent_blob())
    assert restarted.execute(STARTUP_CLEAR) == SUCCESS
    assert pcr_read(restarted, TPM_ALG.SHA1, [0]) == []
    # Dropping PCR 0 from every bank is refused.
    none = u32(4) + b"".join(u16(a) + b"\x03" + bytes(3) for a in (4, 11, 12, 13))
    assert run(restarted, command(TPM_CC.PCR_Allocate, none, u32(TPM_RH.PLATFORM), b"")).rc == TPM_RC.PCR


# --- capabilities ----------------------------------------------------------------------------


def get_capability(tpm, cap: int, prop: int, count: int):
    resp = run(tpm, command(TPM_CC.GetCapability, u32(cap) + u32(prop) + u32(count)))
    assert resp.rc == 0, hex(resp.rc)
    more = resp.params()[0]
    return more, T.TPMS_CAPABILITY_DATA.unpack(resp.params()[1:]).data


def test_capability_paging(tpm):
    more, first = get_capability(tpm, TPM_CAP.COMMANDS, TPM_CC.Startup, 3)
    assert more == 1 and [a & 0xFFFF for a in first] == [TPM_CC.Startup, TPM_CC.Shutdown, TPM_CC.StirRandom]
    more, rest = get_capability(tpm, TPM_CAP.COMMANDS, (first[-1] & 0xFFFF) + 1, 100)
    assert more == 0 and len(first) + len(rest) == len(tpm.table) - sum(1 for c in tpm.table if c.code < TPM_CC.Startup)


def test_capability_reports_what_is_declared(tpm):
    _, cmds = get_capability(tpm, TPM_CAP.COMMANDS, 0, 256)
    # commandIndex, and the V bit for a vendor command (TPM2_Vendor_TCG_Test).
    assert sorted(a & 0xFFFF | a & TPMA_CC.V for a in cmds) == [c.code for c in tpm.table]
    _, props = get_capability(tpm, TPM_CAP.TPM_PROPERTIES, TPM_PT.TOTAL_COMMANDS, 1)
    assert props[0].value == len(tpm.table)
    _, pcrs = get_capability(tpm, TPM_CAP.PCRS, 0, 1)
    assert [(s.hash, s.pcrSelect) for s in pcrs] == [(a, b"\xff\xff\xff") for a in (4, 11, 12, 13)]


# --- state -------------------------------------------------------------------------------------


def test_resume_restores_state_saved_pcrs(tpm):
    digest = u32(1) + u16(TPM_ALG.SHA256) + bytes(32)
    assert run(tpm, command(TPM_CC.PCR_Extend, digest, handles=u32(5), auth=b"")).rc == 0
    before = pcr_read(tpm, TPM_ALG.SHA256, [5])
    assert tpm.execute(SHUTDOWN_STATE) == SUCCESS
    resumed = Engine.from_blobs(tpm.permanent_blob())
    assert resumed.execute(STARTUP_STATE) == SUCCESS
    assert pcr_read(resumed, TPM_ALG.SHA256, [5]) == before
    clock = T.TPMS_TIME_INFO.unpack(run(resumed, command(TPM_CC.ReadClock)).params()).clockInfo
    assert (clock.resetCount, clock.restartCount, clock.safe) == (1, 1, 1)
    # A TPM Restart (Startup(CLEAR) after Shutdown(STATE)) resets PCRs but counts a restart.
    assert resumed.execute(SHUTDOWN_STATE) == SUCCESS
    restarted = Engine.from_blobs(resumed.permanent_blob())
    assert restarted.execute(STARTUP_CLEAR) == SUCCESS
    assert pcr_read(restarted, TPM_ALG.SHA256, [5]) == [bytes(32)]


def test_startup_state_without_shutdown_state(tpm):
    tpm.execute(SHUTDOWN_CLEAR)
    fresh = Engine.from_blobs(tpm.permanent_blob())
    assert run(fresh, STARTUP_STATE).rc == TPM_RC.VALUE | RC_P | 0x100


def test_volatile_snapshot_continues_without_startup(tpm):
    handle = _start_sequence(tpm, TPM_ALG.SHA256)
    run(tpm, command(TPM_CC.SequenceUpdate, tpm2b(b"part one"), u32(handle), b"pw"))
    restored = Engine.from_blobs(tpm.permanent_blob(), tpm.volatile_blob())
    resp = run(restored, command(TPM_CC.SequenceComplete, tpm2b(b" two") + u32(TPM_RH.NULL), u32(handle), b"pw"))
    assert T.TPM2B_DIGEST.unpack(resp.params()[:34]) == hashlib.sha256(b"part one two").digest()


def test_sequence_too_long_to_snapshot_is_not_resumed(tpm, monkeypatch):
    """A sequence that no longer keeps its whole input cannot be resumed from a snapshot:
    it is left out (the handle is not loaded) rather than restored with a wrong digest."""
    from vtpm_cuse.tpm import state

    monkeypatch.setattr(state, "SEQUENCE_SNAPSHOT_LIMIT", 16)
    short = _start_sequence(tpm, TPM_ALG.SHA256)
    long = _start_sequence(tpm, TPM_ALG.SHA256)
    run(tpm, command(TPM_CC.SequenceUpdate, tpm2b(b"0123456789"), u32(short), b"pw"))
    for _ in range(3):
        run(tpm, command(TPM_CC.SequenceUpdate, tpm2b(b"0123456789"), u32(long), b"pw"))
    # The live engine still hashes the long sequence correctly.
    resp = run(tpm, command(TPM_CC.SequenceComplete, tpm2b(b"") + u32(TPM_RH.NULL), u32(long), b"pw"))
    assert T.TPM2B_DIGEST.unpack(resp.params()[:34]) == hashlib.sha256(b"0123456789" * 3).digest()
    long = _start_sequence(tpm, TPM_ALG.SHA256)
    for _ in range(3):
        run(tpm, command(TPM_CC.SequenceUpdate, tpm2b(b"0123456789"), u32(long), b"pw"))
    restored = Engine.from_blobs(tpm.permanent_blob(), tpm.volatile_blob())
    resp = run(restored, command(TPM_CC.SequenceComplete, tpm2b(b"") + u32(TPM_RH.NULL), u32(short), b"pw"))
    assert T.TPM2B_DIGEST.unpack(resp.params()[:34]) == hashlib.sha256(b"0123456789").digest()
    resp = run(restored, command(TPM_CC.SequenceComplete, tpm2b(b"") + u32(TPM_RH.NULL), u32(long), b"pw"))
    assert resp.rc == TPM_RC.REFERENCE_H0


def test_damaged_blob_is_rejected(tpm):
    blob = bytearray(tpm.permanent_blob())
    blob[-5] ^= 1
    with pytest.raises(StateBlobError):
        Engine.from_blobs(bytes(blob))
    with pytest.raises(StateBlobError):
        Engine.from_blobs(tpm.volatile_blob())  # a volatile blob is not a permanent one


def test_engines_are_independent():
    a, b = Engine(), Engine()
    a.execute(STARTUP_CLEAR)
    assert Response(b.execute(QEMU_PCR_READ)).rc == TPM_RC.INITIALIZE
    b.execute(STARTUP_CLEAR)
    a.execute(QEMU_PCR_EXTEND)
    assert pcr_read(b, TPM_ALG.SHA256, [10]) == [bytes(32)]
    assert a.permanent.eps != b.permanent.eps


def test_permanent_dirty_tracking(tpm):
    tpm.take_permanent_dirty()
    run(tpm, command(TPM_CC.GetRandom, u16(4)))
    assert not tpm.take_permanent_dirty()
    run(tpm, command(TPM_CC.ClockSet, (tpm.clock() + 5000).to_bytes(8, "big"), u32(TPM_RH.OWNER), b""))
    assert tpm.take_permanent_dirty()


# --- H-CRTM / DRTM -------------------------------------------------------------------------------


def test_drtm_after_startup_measures_into_pcr17(tpm):
    tpm.hash_start()
    tpm.hash_data(b"12")
    tpm.hash_data(b"34")
    assert tpm.hash_end() and tpm.tpm_established
    expected = hashlib.sha256(bytes(32) + hashlib.sha256(b"1234").digest()).digest()
    assert pcr_read(tpm, TPM_ALG.SHA256, [17, 18]) == [expected, bytes(32)]


def test_hcrtm_before_startup_measures_into_pcr0():
    engine = Engine()
    engine.hash_start()
    engine.hash_data(b"firmware")
    engine.hash_end()
    assert engine.execute(STARTUP_CLEAR) == SUCCESS
    expected = hashlib.sha1(bytes(19) + b"\x04" + hashlib.sha1(b"firmware").digest()).digest()
    assert pcr_read(engine, TPM_ALG.SHA1, [0]) == [expected]


def test_established_flag_reset_needs_locality_3_or_4(tpm):
    tpm.hash_start()
    tpm.hash_end()
    assert tpm.reset_established(0) == TPM_RC.LOCALITY and tpm.tpm_established
    assert tpm.reset_established(3) == 0 and not tpm.tpm_established


def test_hash_data_without_start_is_ignored(tpm):
    assert not tpm.hash_data(b"x") and not tpm.hash_end()


def test_shutdown_state_refused_after_pcr_allocate_until_the_next_startup(tpm):
    allocate = command(
        TPM_CC.PCR_Allocate, u32(1) + u16(TPM_ALG.SHA256) + b"\x03\xff\xff\xff", handles=u32(TPM_RH.PLATFORM), auth=b""
    )
    shutdown_state = command(TPM_CC.Shutdown, u16(1))
    assert run(tpm, allocate).rc == 0
    assert run(tpm, shutdown_state).raw == bytes.fromhex("80010000000a000001ca")  # TPM_RC_TYPE + RC_P1
    assert run(tpm, command(TPM_CC.Shutdown, u16(0))).rc == 0
    restarted = Engine.from_blobs(tpm.permanent_blob())
    assert run(restarted, command(TPM_CC.Startup, u16(0))).rc == 0
    assert run(restarted, shutdown_state).rc == 0
