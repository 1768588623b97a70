"""GetCapability answers decoded by an independent decoder: tpm2-pytss's
unmarshalling (the tpm2-tss C library), not our own marshalling code."""

from __future__ import annotations

import pytest
import tpm2_pytss.types as pytss  # test dependency (pyproject [test]); a missing install must fail

from support.tpm_client import command, u32
from vtpm_cuse.tpm.algorithms import ALGORITHMS, ECC_CURVES, HASHES
from vtpm_cuse.tpm.constants import TPM_CAP, TPM_CC, TPM_PT
from vtpm_cuse.tpm.engine import Engine


@pytest.fixture(scope="module")
def tpm():
    engine = Engine()
    engine.execute(bytes.fromhex("80010000000c000001440000"))
    return engine


def decode(tpm, cap: int, prop: int, count: int):
    resp = tpm.execute(command(TPM_CC.GetCapability, u32(cap) + u32(prop) + u32(count)))
    assert resp[6:10] == b"\0\0\0\0"
    more = resp[10]
    data, used = pytss.TPMS_CAPABILITY_DATA.unmarshal(resp[11:])
    assert used == len(resp) - 11
    return more, data


def test_algorithms(tpm):
    _, data = decode(tpm, TPM_CAP.ALGS, 0, 100)
    got = {int(p.alg): int(p.algProperties) for p in data.data.algorithms}
    assert got == {int(k): int(v) for k, v in ALGORITHMS.items()}


def test_commands(tpm):
    _, data = decode(tpm, TPM_CAP.COMMANDS, 0, 256)
    # commandIndex, and the V bit (1 << 29) for a vendor command (TPM2_Vendor_TCG_Test).
    assert sorted(int(a) & 0x2000FFFF for a in data.data.command) == [c.code for c in tpm.table]


def test_pcrs(tpm):
    _, data = decode(tpm, TPM_CAP.PCRS, 0, 1)
    banks = {int(s.hash): bytes(s.pcrSelect)[: s.sizeofSelect] for s in data.data.assignedPCR}
    assert banks == {int(a): b"\xff\xff\xff" for a in HASHES}


def test_properties_fixed_and_variable(tpm):
    more, data = decode(tpm, TPM_CAP.TPM_PROPERTIES, TPM_PT.FAMILY_INDICATOR, 200)
    props = {int(p.property): int(p.value) for p in data.data.tpmProperties}
    assert more == 0
    assert props[TPM_PT.FAMILY_INDICATOR] == int.from_bytes(b"2.0\0", "big")
    assert props[TPM_PT.PCR_COUNT] == 24 and props[TPM_PT.MAX_COMMAND_SIZE] == tpm.max_command_size
    assert TPM_PT.PERMANENT in props and TPM_PT.STARTUP_CLEAR in props


def test_paged_properties(tpm):
    more, data = decode(tpm, TPM_CAP.TPM_PROPERTIES, TPM_PT.FAMILY_INDICATOR, 2)
    assert more == 1 and [int(p.property) for p in data.data.tpmProperties] == [0x100, 0x101]


def test_pcr_properties_curves_handles(tpm):
    _, data = decode(tpm, TPM_CAP.PCR_PROPERTIES, 0, 64)
    assert len(data.data.pcrProperties) == 15
    _, data = decode(tpm, TPM_CAP.ECC_CURVES, 0, 64)
    assert [int(c) for c in data.data.eccCurves] == sorted(int(c) for c in ECC_CURVES)
    _, data = decode(tpm, TPM_CAP.HANDLES, 0, 64)
    assert [int(h) for h in data.data.handles] == list(range(24))
    # TPM_CAP_AUTH_POLICIES is newer than Debian's tpm2-tss 3.2, which cannot decode it;
    # test_tpm_vs_swtpm compares those bytes with libtpms instead.
