"""TPM2_EC_Ephemeral and TPM2_ZGen_2Phase (Part 3, clause 14) through Engine.execute with real
command bytes, and their response codes against Debian's swtpm (libtpms).

The test is party B of a two-phase key exchange (SP800-56A C(2e, 2s), the full unified model):
it owns B's static and ephemeral private keys, so what the TPM returns as party A is checked
against what ``cryptography`` computes on B's side, and the y-coordinates against a small
affine point multiplication written here.  The commit rules come from Part 1 ("Commit") and the
reference TPM: a counter names one of the last 128 commitments, each usable once; the commit
state (nonce, counter, array) survives TPM Restart and Resume and starts afresh at TPM Reset.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from support.engine_oracle import EngineOracle
from support.object_templates import (
    DECRYPT,
    FIXED_PARENT,
    FIXED_TPM,
    NO_SYM,
    SDO,
    SIGN,
    SIGNING,
    STORAGE,
    USER_WITH_AUTH,
    create_primary_cmd,
    ecc_template,
    rsa_template,
)
from support.tpm_client import Response, command, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_ECC_CURVE
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import TPM_RC, rc_name
from vtpm_cuse.tpm.marshal import UINT16, Reader, Struct

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
SUCCESS = bytes.fromhex("80010000000a00000000")
SU_CLEAR, SU_STATE = 0, 1
UNRESTRICTED_DECRYPT = FIXED_TPM | FIXED_PARENT | SDO | USER_WITH_AUTH | DECRYPT
#: Format-one positions, written out from Part 2 (TPM_RC) rather than taken from the engine.
FMT1_PARAMETER, NUMBER_SHIFT = 0x040, 8
#: The reference TPM's commitArray: 16 octets, one bit per count.
COMMIT_SLOTS = 128

FIELD_PRIMES = {
    TPM_ECC_CURVE.NIST_P256: 2**256 - 2**224 + 2**192 + 2**96 - 1,
    TPM_ECC_CURVE.NIST_P384: 2**384 - 2**128 - 2**96 + 2**32 - 1,
    TPM_ECC_CURVE.NIST_P521: 2**521 - 1,
}
CRYPTO_CURVES = {
    TPM_ECC_CURVE.NIST_P256: ec.SECP256R1,
    TPM_ECC_CURVE.NIST_P384: ec.SECP384R1,
    TPM_ECC_CURVE.NIST_P521: ec.SECP521R1,
}
SIZES = {TPM_ECC_CURVE.NIST_P256: 32, TPM_ECC_CURVE.NIST_P384: 48, TPM_ECC_CURVE.NIST_P521: 66}
P256 = TPM_ECC_CURVE.NIST_P256

CREATE_PRIMARY_OUT = Struct("CreatePrimary_Out", [("outPublic", T.TPM2B_PUBLIC)])
EC_EPHEMERAL_OUT = Struct("EC_Ephemeral_Out", [("Q", T.TPM2B_ECC_POINT), ("counter", UINT16)])
ZGEN_2PHASE_OUT = Struct("ZGen_2Phase_Out", [("outZ1", T.TPM2B_ECC_POINT), ("outZ2", T.TPM2B_ECC_POINT)])


def at_handle(rc: int, number: int = 1) -> int:
    return rc | (number << NUMBER_SHIFT)


def at_param(rc: int, number: int) -> int:
    return rc | FMT1_PARAMETER | (number << NUMBER_SHIFT)


# --- an independent affine point multiplication (tests only) -----------------------------------


def _add(p: int, P, Q):
    if P is None:
        return Q
    if Q is None:
        return P
    if P[0] == Q[0] and (P[1] + Q[1]) % p == 0:
        return None
    if P == Q:
        slope = (3 * P[0] * P[0] - 3) * pow(2 * P[1], -1, p) % p
    else:
        slope = (Q[1] - P[1]) * pow(Q[0] - P[0], -1, p) % p
    x = (slope * slope - P[0] - Q[0]) % p
    return x, (slope * (P[0] - x) - P[1]) % p


def reference_multiply(curve_id: int, k: int, point: tuple[int, int]) -> tuple[int, int]:
    p = FIELD_PRIMES[curve_id]
    result, addend = None, point
    while k:
        if k & 1:
            result = _add(p, result, addend)
        addend = _add(p, addend, addend)
        k >>= 1
    return result


# --- builders ----------------------------------------------------------------------------------


def run(tpm, cmd: bytes) -> Response:
    return Response(tpm.execute(cmd))


def ok(tpm, cmd: bytes) -> Response:
    resp = run(tpm, cmd)
    assert resp.rc == 0, rc_name(resp.rc)
    return resp


def expect(tpm, cmd: bytes, rc: int) -> None:
    assert rc_name(run(tpm, cmd).rc) == rc_name(rc)


def started() -> EngineOracle:
    tpm = EngineOracle(Engine())
    assert tpm.execute(STARTUP_CLEAR) == SUCCESS
    return tpm


def primary(tpm, area) -> tuple[int, object]:
    resp = ok(tpm, create_primary_cmd(area))
    return int.from_bytes(resp.raw[10:14], "big"), CREATE_PRIMARY_OUT.unmarshal(Reader(resp.params(1))).outPublic


def exchange_key(curve: int = P256, scheme: int = TPM_ALG.ECDH, attrs: int = UNRESTRICTED_DECRYPT):
    hash_alg = TPM_ALG.SHA256 if scheme != TPM_ALG.NULL else None
    return ecc_template(attrs=attrs, curve=curve, sym=NO_SYM, scheme=scheme, hash_alg=hash_alg)


def ephemeral_cmd(curve: int = P256) -> bytes:
    return command(TPM_CC.EC_Ephemeral, u16(curve))


def ephemeral(tpm, curve: int = P256):
    """(Q, counter) of a new commitment."""
    out = EC_EPHEMERAL_OUT.unpack(ok(tpm, ephemeral_cmd(curve)).params())
    return out.Q, out.counter


def point_bytes(point) -> bytes:
    return T.TPM2B_ECC_POINT.pack(point)


def zgen_cmd(handle: int, qs_b, qe_b, counter: int, scheme: int = TPM_ALG.ECDH) -> bytes:
    params = point_bytes(qs_b) + point_bytes(qe_b) + u16(scheme) + u16(counter)
    return command(TPM_CC.ZGen_2Phase, params, u32(handle), b"")


def zgen(tpm, handle: int, qs_b, qe_b, counter: int):
    out = ZGEN_2PHASE_OUT.unpack(ok(tpm, zgen_cmd(handle, qs_b, qe_b, counter)).params())
    return out.outZ1, out.outZ2


def tpm_point(numbers: ec.EllipticCurvePublicNumbers, curve: int = P256):
    size = SIZES[curve]
    return T.TPMS_ECC_POINT(x=numbers.x.to_bytes(size, "big"), y=numbers.y.to_bytes(size, "big"))


def as_key(point, curve: int = P256) -> ec.EllipticCurvePublicKey:
    x, y = int.from_bytes(point.x, "big"), int.from_bytes(point.y, "big")
    return ec.EllipticCurvePublicNumbers(x, y, CRYPTO_CURVES[curve]()).public_key()


def coordinates(point) -> tuple[int, int]:
    return int.from_bytes(point.x, "big"), int.from_bytes(point.y, "big")


class PartyB:
    """The other side: a static and an ephemeral key pair, private keys held by the test."""

    def __init__(self, curve: int = P256) -> None:
        self.curve = curve
        self.static = ec.generate_private_key(CRYPTO_CURVES[curve]())
        self.ephemeral = ec.generate_private_key(CRYPTO_CURVES[curve]())

    @property
    def qs(self):
        return tpm_point(self.static.public_key().public_numbers(), self.curve)

    @property
    def qe(self):
        return tpm_point(self.ephemeral.public_key().public_numbers(), self.curve)

    def check(self, qs_a, qe_a, z1, z2) -> None:
        """Zs = dsB * QsA and Ze = deB * QeA, as B computes them, equal the TPM's outZ1, outZ2."""
        assert z1.x == self.static.exchange(ec.ECDH(), as_key(qs_a, self.curve))
        assert z2.x == self.ephemeral.exchange(ec.ECDH(), as_key(qe_a, self.curve))
        ds, de = self.static.private_numbers().private_value, self.ephemeral.private_numbers().private_value
        assert coordinates(z1) == reference_multiply(self.curve, ds, coordinates(qs_a))
        assert coordinates(z2) == reference_multiply(self.curve, de, coordinates(qe_a))


@pytest.fixture(scope="module")
def tpm() -> EngineOracle:
    return started()


_KEYS: dict = {}


def key(tpm, name: str) -> tuple[int, object]:
    if name not in _KEYS:
        areas = {
            "ecdh": exchange_key(),
            "null_scheme": exchange_key(scheme=TPM_ALG.NULL),
            "sign_decrypt": exchange_key(scheme=TPM_ALG.NULL, attrs=UNRESTRICTED_DECRYPT | SIGN),
            "signing": ecc_template(attrs=SIGNING, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256),
            "storage": ecc_template(attrs=STORAGE),
            "rsa": rsa_template(attrs=UNRESTRICTED_DECRYPT, bits=1024, sym=NO_SYM),
        }
        for curve in SIZES:
            areas[f"ecdh_{curve}"] = exchange_key(curve)
        _KEYS[name] = primary(tpm, areas[name])
    return _KEYS[name]


# --- the exchange ------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", list(SIZES), ids=lambda c: TPM_ECC_CURVE(c).name)
def test_two_phase_equals_the_exchange_outside(tpm, curve):
    handle, area = key(tpm, f"ecdh_{curve}")
    q, counter = ephemeral(tpm, curve)
    assert len(q.x) == len(q.y) == SIZES[curve]
    as_key(q, curve)  # on the curve
    b = PartyB(curve)
    z1, z2 = zgen(tpm, handle, b.qs, b.qe, counter)
    b.check(area.unique, q, z1, z2)


@pytest.mark.parametrize("name", ["null_scheme", "sign_decrypt"])
def test_a_key_without_scheme_takes_the_callers(tpm, name):
    handle, area = key(tpm, name)
    q, counter = ephemeral(tpm)
    b = PartyB()
    b.check(area.unique, q, *zgen(tpm, handle, b.qs, b.qe, counter))


def test_counters_count_and_points_differ(tpm):
    (q1, c1), (q2, c2) = ephemeral(tpm), ephemeral(tpm)
    assert c2 == (c1 + 1) & 0xFFFF
    assert q1 != q2
    # The counter is shared by the curves: one sequence of commitments.
    _, c3 = ephemeral(tpm, TPM_ECC_CURVE.NIST_P384)
    assert c3 == (c2 + 1) & 0xFFFF


def test_a_counter_is_used_once(tpm):
    handle, area = key(tpm, "ecdh")
    q, counter = ephemeral(tpm)
    b = PartyB()
    b.check(area.unique, q, *zgen(tpm, handle, b.qs, b.qe, counter))
    expect(tpm, zgen_cmd(handle, b.qs, b.qe, counter), at_param(TPM_RC.VALUE, 4))
    # ... also with other points: the commitment is gone, not the combination.
    other = PartyB()
    expect(tpm, zgen_cmd(handle, other.qs, other.qe, counter), at_param(TPM_RC.VALUE, 4))


def test_commitments_are_used_in_any_order(tpm):
    handle, area = key(tpm, "ecdh")
    first, second = ephemeral(tpm), ephemeral(tpm)
    b = PartyB()
    b.check(area.unique, second[0], *zgen(tpm, handle, b.qs, b.qe, second[1]))
    b.check(area.unique, first[0], *zgen(tpm, handle, b.qs, b.qe, first[1]))


def test_a_failed_exchange_leaves_the_commitment(tpm):
    handle, area = key(tpm, "ecdh")
    q, counter = ephemeral(tpm)
    b = PartyB()
    expect(tpm, zgen_cmd(handle, b.qs, T.TPMS_ECC_POINT(x=b"\x01", y=b"\x01"), counter), at_param(TPM_RC.ECC_POINT, 2))
    expect(tpm, zgen_cmd(key(tpm, "signing")[0], b.qs, b.qe, counter), at_handle(TPM_RC.ATTRIBUTES))
    b.check(area.unique, q, *zgen(tpm, handle, b.qs, b.qe, counter))


def test_unknown_counters_are_value(tpm):
    handle, _ = key(tpm, "ecdh")
    b = PartyB()
    _, last = ephemeral(tpm)
    for counter in ((last + 1) & 0xFFFF, (last + 2) & 0xFFFF, (last + 0x8000) & 0xFFFF, (last - 1000) & 0xFFFF):
        expect(tpm, zgen_cmd(handle, b.qs, b.qe, counter), at_param(TPM_RC.VALUE, 4))
    # The last one is fine.
    zgen(tpm, handle, b.qs, b.qe, last)


def test_nothing_committed_since_startup():
    tpm = started()
    handle, _ = primary(tpm, exchange_key())
    b = PartyB()
    for counter in (0, 1, 0xFFFF):
        expect(tpm, zgen_cmd(handle, b.qs, b.qe, counter), at_param(TPM_RC.VALUE, 4))
    # The first commitment of a TPM Reset cycle has count 0.
    assert ephemeral(tpm)[1] == 0


def test_only_the_last_128_commitments_are_usable():
    tpm = started()
    handle, area = primary(tpm, exchange_key())
    made = [ephemeral(tpm) for _ in range(COMMIT_SLOTS + 2)]
    b = PartyB()
    # Counts 0 and 1 share their commitArray bits with 128 and 129: those are the usable ones.
    for _, counter in made[:2]:
        expect(tpm, zgen_cmd(handle, b.qs, b.qe, counter), at_param(TPM_RC.VALUE, 4))
    for q, counter in (made[2], made[-1], made[COMMIT_SLOTS]):
        b.check(area.unique, q, *zgen(tpm, handle, b.qs, b.qe, counter))


def test_the_16_bit_counter_wraps():
    """Only the low 16 bits of commitCounter are exchanged; a counter names the most recent
    count with those bits.  (The counter is set forward directly: 65536 commits take long.)"""
    tpm = started()
    handle, area = primary(tpm, exchange_key())
    ephemeral(tpm)
    perm = tpm.engine.permanent
    perm.commit_counter, perm.commit_array = 3 * 0x10000 - 2, 0
    made = [ephemeral(tpm) for _ in range(4)]
    assert [counter for _, counter in made] == [0xFFFE, 0xFFFF, 0x0000, 0x0001]
    assert perm.commit_counter == 3 * 0x10000 + 2
    b = PartyB()
    for q, counter in reversed(made):
        b.check(area.unique, q, *zgen(tpm, handle, b.qs, b.qe, counter))
        expect(tpm, zgen_cmd(handle, b.qs, b.qe, counter), at_param(TPM_RC.VALUE, 4))


# --- the commit state across restarts ----------------------------------------------------------


def test_the_commit_state_is_stored_before_the_response():
    """Each successful command marks NV for writing (the daemon persists it before it
    answers), though neither is a TPMA_CC.nv command."""
    tpm = started()
    handle, area = primary(tpm, exchange_key())
    tpm.engine.take_permanent_dirty()
    q, counter = ephemeral(tpm)
    assert tpm.engine.take_permanent_dirty()
    b = PartyB()
    expect(tpm, zgen_cmd(handle, b.qs, b.qe, (counter + 1) & 0xFFFF), at_param(TPM_RC.VALUE, 4))
    assert not tpm.engine.take_permanent_dirty()
    # A daemon restarted from what was stored right after EC_Ephemeral (volatile state kept,
    # no Startup): the commitment is there once, and the next count is a new one.
    restored = EngineOracle(Engine.from_blobs(tpm.engine.permanent_blob(), tpm.engine.volatile_blob()))
    q2, counter2 = ephemeral(restored)
    assert counter2 == counter + 1 and q2 != q
    b.check(area.unique, q, *zgen(restored, handle, b.qs, b.qe, counter))
    assert restored.engine.take_permanent_dirty()
    expect(restored, zgen_cmd(handle, b.qs, b.qe, counter), at_param(TPM_RC.VALUE, 4))
    b.check(area.unique, q2, *zgen(restored, handle, b.qs, b.qe, counter2))


@pytest.mark.parametrize("startup", [SU_CLEAR, SU_STATE], ids=["restart", "resume"])
def test_the_commit_state_survives_restart_and_resume(startup):
    tpm = started()
    used, kept = ephemeral(tpm), ephemeral(tpm)
    handle, area = primary(tpm, exchange_key())
    b = PartyB()
    zgen(tpm, handle, b.qs, b.qe, used[1])
    ok(tpm, command(TPM_CC.Shutdown, u16(SU_STATE)))
    tpm = EngineOracle(Engine.from_blobs(tpm.engine.permanent_blob()))
    ok(tpm, command(TPM_CC.Startup, u16(startup)))
    handle, area = primary(tpm, exchange_key())  # the same primary key, from the same seed
    expect(tpm, zgen_cmd(handle, b.qs, b.qe, used[1]), at_param(TPM_RC.VALUE, 4))
    q, counter = ephemeral(tpm)
    assert counter == kept[1] + 1
    assert q not in (used[0], kept[0])
    b.check(area.unique, kept[0], *zgen(tpm, handle, b.qs, b.qe, kept[1]))
    expect(tpm, zgen_cmd(handle, b.qs, b.qe, kept[1]), at_param(TPM_RC.VALUE, 4))
    b.check(area.unique, q, *zgen(tpm, handle, b.qs, b.qe, counter))


@pytest.mark.parametrize("orderly", [False, True], ids=["power-loss", "shutdown-clear"])
def test_a_tpm_reset_starts_a_new_commit_state(orderly):
    """At TPM Reset commitCounter and commitArray return to zero and commitNonce is new: the
    counters repeat, the one-time keys do not, and no earlier commitment can be used."""
    tpm = started()
    before = [ephemeral(tpm) for _ in range(3)]
    if orderly:
        ok(tpm, command(TPM_CC.Shutdown, u16(SU_CLEAR)))
    tpm = EngineOracle(Engine.from_blobs(tpm.engine.permanent_blob()))
    assert tpm.execute(STARTUP_CLEAR) == SUCCESS
    handle, _ = primary(tpm, exchange_key())
    b = PartyB()
    for _, counter in before:
        expect(tpm, zgen_cmd(handle, b.qs, b.qe, counter), at_param(TPM_RC.VALUE, 4))
    after = [ephemeral(tpm) for _ in range(3)]
    assert [c for _, c in after] == [c for _, c in before] == [0, 1, 2]
    assert not {coordinates(q) for q, _ in after} & {coordinates(q) for q, _ in before}


def test_state_without_the_commit_fields_still_loads():
    """Permanent state written before the commit state existed: loaded, and the state is
    made on first use."""
    from vtpm_cuse.tpm import state as S

    blob = started().engine.permanent_blob()
    payload = json.loads(blob[S._HEADER.size :])
    for field in ("commit_nonce", "commit_counter", "commit_array", "commit_reset_count"):
        del payload[field]
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    old = S._HEADER.pack(S.BLOB_MAGIC, S.BLOB_VERSION, S.BlobKind.PERMANENT, hashlib.sha256(raw).digest())
    engine = Engine.from_blobs(old + raw)
    assert engine.permanent.commit_nonce == b""
    tpm = EngineOracle(engine)
    assert tpm.execute(STARTUP_CLEAR) == SUCCESS
    handle, area = primary(tpm, exchange_key())
    q, counter = ephemeral(tpm)
    assert counter == 0 and len(engine.permanent.commit_nonce) >= 16
    b = PartyB()
    b.check(area.unique, q, *zgen(tpm, handle, b.qs, b.qe, counter))


# --- error paths -------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", [TPM_ECC_CURVE.NONE, TPM_ECC_CURVE.BN_P256, TPM_ECC_CURVE.SM2_P256, 0x7777])
def test_ec_ephemeral_unimplemented_curves_are_curve(tpm, curve):
    _, before = ephemeral(tpm)
    expect(tpm, ephemeral_cmd(curve), at_param(TPM_RC.CURVE, 1))
    assert ephemeral(tpm)[1] == (before + 1) & 0xFFFF  # no count was spent


def test_key_checks(tpm):
    b = PartyB()
    _, counter = ephemeral(tpm)
    expect(tpm, zgen_cmd(key(tpm, "rsa")[0], b.qs, b.qe, counter), at_handle(TPM_RC.KEY))
    for name in ("signing", "storage"):
        expect(tpm, zgen_cmd(key(tpm, name)[0], b.qs, b.qe, counter), at_handle(TPM_RC.ATTRIBUTES))
    sequence = ok(tpm, command(TPM_CC.HashSequenceStart, u16(0) + u16(TPM_ALG.SHA256)))
    handle = int.from_bytes(sequence.raw[10:14], "big")
    try:
        expect(tpm, zgen_cmd(handle, b.qs, b.qe, counter), at_handle(TPM_RC.KEY))
    finally:
        ok(tpm, command(TPM_CC.FlushContext, u32(handle)))
    # keyA needs authorization.
    params = point_bytes(b.qs) + point_bytes(b.qe) + u16(TPM_ALG.ECDH) + u16(counter)
    expect(tpm, command(TPM_CC.ZGen_2Phase, params, u32(key(tpm, "ecdh")[0])), TPM_RC.AUTH_MISSING)


@pytest.mark.parametrize("scheme", [TPM_ALG.NULL, TPM_ALG.ECMQV, TPM_ALG.SM2, TPM_ALG.ECDSA, TPM_ALG.ECDAA, 0x7777])
def test_schemes_other_than_ecdh_are_scheme(tpm, scheme):
    """TPMI_ECC_KEY_EXCHANGE has no null value, and ECMQV and SM2 are not implemented (they need
    point addition): the unmarshalling refuses them, before the key is looked at."""
    b = PartyB()
    _, counter = ephemeral(tpm)
    for name in ("ecdh", "null_scheme", "rsa"):
        expect(tpm, zgen_cmd(key(tpm, name)[0], b.qs, b.qe, counter, scheme), at_param(TPM_RC.SCHEME, 3))


def test_point_validation(tpm):
    handle, area = key(tpm, "ecdh")
    q, counter = ephemeral(tpm)
    b = PartyB()
    y = int.from_bytes(area.unique.y, "big")
    p384 = PartyB(TPM_ECC_CURVE.NIST_P384)
    for bad in (
        T.TPMS_ECC_POINT(x=area.unique.x, y=(y ^ 1).to_bytes(32, "big")),
        T.TPMS_ECC_POINT(x=b"", y=b""),
        T.TPMS_ECC_POINT(x=bytes(32), y=bytes(32)),
        T.TPMS_ECC_POINT(x=b"\x01" + area.unique.x, y=area.unique.y),
        p384.qs,
    ):
        expect(tpm, zgen_cmd(handle, bad, b.qe, counter), at_param(TPM_RC.ECC_POINT, 1))
        expect(tpm, zgen_cmd(handle, b.qs, bad, counter), at_param(TPM_RC.ECC_POINT, 2))
    # The points are checked before the counter.
    expect(tpm, zgen_cmd(handle, b.qs, p384.qe, (counter + 1) & 0xFFFF), at_param(TPM_RC.ECC_POINT, 2))
    # Leading zero octets are only a number's padding.
    padded = T.TPMS_ECC_POINT(x=b"\0\0" + b.qs.x, y=b.qs.y)
    b.check(area.unique, q, *zgen(tpm, handle, padded, b.qe, counter))


def test_commit_still_refuses_every_key_and_spends_no_count(tpm):
    _, before = ephemeral(tpm)
    empty = point_bytes(T.TPMS_ECC_POINT(x=b"", y=b""))
    cmd = command(TPM_CC.Commit, empty + u16(0) + u16(0), u32(key(tpm, "ecdh")[0]), b"")
    expect(tpm, cmd, at_handle(TPM_RC.SCHEME))
    assert ephemeral(tpm)[1] == (before + 1) & 0xFFFF


def test_declared_attributes():
    from vtpm_cuse.tpm.commands import COMMANDS

    for code in (TPM_CC.EC_Ephemeral, TPM_CC.ZGen_2Phase):
        declared = COMMANDS.get(code)
        assert declared is not None and not declared.nv


# --- against Debian's swtpm (libtpms) ----------------------------------------------------------

LIBTPMS_SLOTS = 3


@pytest.fixture(scope="module")
def pair():
    from support.swtpm_oracle import SwtpmOracle

    oracle = SwtpmOracle()
    ours = EngineOracle(Engine(max_objects=LIBTPMS_SLOTS))
    for one in (oracle, ours):
        assert one.execute(STARTUP_CLEAR) == SUCCESS
    yield oracle, ours
    oracle.close()


def both(pair, cmd: bytes) -> tuple[Response, Response]:
    oracle, ours = pair
    return Response(oracle.execute(cmd)), Response(ours.execute(cmd))


def same_rc(pair, cmd: bytes) -> int:
    theirs, mine = both(pair, cmd)
    assert rc_name(mine.rc) == rc_name(theirs.rc), cmd.hex()
    return mine.rc


def both_primary(pair, area) -> tuple[int, object, object]:
    """The key on both (same slot): its handle and each TPM's public area."""
    theirs, mine = both(pair, create_primary_cmd(area))
    assert theirs.rc == mine.rc == 0, (rc_name(theirs.rc), rc_name(mine.rc))
    assert theirs.raw[10:14] == mine.raw[10:14]
    public = [CREATE_PRIMARY_OUT.unmarshal(Reader(r.params(1))).outPublic for r in (theirs, mine)]
    return int.from_bytes(mine.raw[10:14], "big"), *public


@pytest.mark.swtpm
def test_same_command_attributes(pair):
    oracle, ours = pair
    for code in (TPM_CC.EC_Ephemeral, TPM_CC.ZGen_2Phase):
        cmd = command(TPM_CC.GetCapability, u32(TPM_CAP.COMMANDS) + u32(code) + u32(1))
        assert ours.execute(cmd).hex() == oracle.execute(cmd).hex()


@pytest.mark.swtpm
def test_same_codes_and_counters(pair):
    """The same command bytes to both: the counters EC_Ephemeral returns, the exchange
    succeeding once per counter (each checked by party B against its own TPM's key), and the
    codes of every bad input both implement alike.  Left out: ECMQV and SM2, which libtpms
    implements (this engine refuses them while unmarshalling), and the BN and SM2 curves."""
    # Counters: both start at zero after manufacture, whatever the curve.
    for curve in (P256, TPM_ECC_CURVE.NIST_P384, P256):
        theirs, mine = both(pair, ephemeral_cmd(curve))
        assert theirs.rc == mine.rc == 0
        assert theirs.raw[-2:] == mine.raw[-2:]
    for curve in (TPM_ECC_CURVE.NONE, 0x7777):
        same_rc(pair, ephemeral_cmd(curve))

    handle, theirs_area, mine_area = both_primary(pair, exchange_key())
    try:
        theirs, mine = both(pair, ephemeral_cmd(P256))
        counter = EC_EPHEMERAL_OUT.unpack(mine.params()).counter
        assert EC_EPHEMERAL_OUT.unpack(theirs.params()).counter == counter
        b = PartyB()
        bad = T.TPMS_ECC_POINT(x=b"\x01", y=b"\x01")
        for cmd in (
            zgen_cmd(handle, bad, b.qe, counter),
            zgen_cmd(handle, b.qs, bad, counter),
            zgen_cmd(handle, b.qs, b.qe, counter, TPM_ALG.NULL),
            zgen_cmd(handle, b.qs, b.qe, counter, TPM_ALG.ECDSA),
            zgen_cmd(handle, b.qs, b.qe, counter, 0x7777),
            zgen_cmd(handle, b.qs, b.qe, (counter + 1) & 0xFFFF),
            zgen_cmd(handle, b.qs, b.qe, (counter + 0x100) & 0xFFFF),
            command(TPM_CC.ZGen_2Phase, u16(0), u32(handle), b""),
        ):
            assert same_rc(pair, cmd) != 0
        # Both succeed once, each with its own key and commitment ...
        cmd = zgen_cmd(handle, b.qs, b.qe, counter)
        results = both(pair, cmd)
        for resp, area, q in zip(results, (theirs_area, mine_area), (theirs, mine), strict=True):
            assert resp.rc == 0, rc_name(resp.rc)
            out = ZGEN_2PHASE_OUT.unpack(resp.params())
            b.check(area.unique, EC_EPHEMERAL_OUT.unpack(q.params()).Q, out.outZ1, out.outZ2)
        # ... and refuse the counter the second time.
        assert same_rc(pair, cmd) == at_param(TPM_RC.VALUE, 4)
    finally:
        assert same_rc(pair, command(TPM_CC.FlushContext, u32(handle))) == 0

    for area in (
        rsa_template(attrs=UNRESTRICTED_DECRYPT, bits=1024, sym=NO_SYM),
        ecc_template(attrs=SIGNING, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256),
        ecc_template(attrs=STORAGE),
    ):
        handle, _, _ = both_primary(pair, area)
        try:
            for scheme in (TPM_ALG.ECDH, TPM_ALG.NULL):
                assert same_rc(pair, zgen_cmd(handle, b.qs, b.qe, 0, scheme)) != 0
        finally:
            assert same_rc(pair, command(TPM_CC.FlushContext, u32(handle))) == 0
