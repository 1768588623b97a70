"""The command table tells the truth: GetCapability(TPM_CAP_COMMANDS) lists exactly the
declared commands with TPMA_CC computed from their declarations, every command code of the
Library revision we claim (TPM_PT_REVISION) is implemented or explained in
spec_commands.NOT_IMPLEMENTED, and scripts/command_table.py prints the comparison with
libtpms (asked at run time through Debian's swtpm).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support.engine_oracle import EngineOracle
from support.swtpm_oracle import SwtpmOracle
from support.tpm_client import Response, command, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_CAP, TPM_CC, TPM_PT
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import TPM_RC
from vtpm_cuse.tpm.properties import SPEC_REVISION
from vtpm_cuse.tpm.spec_commands import NOT_IMPLEMENTED, spec_commands
from vtpm_cuse.tpm.types import MAX_CAP_CC

REPO = Path(__file__).resolve().parent.parent
STARTUP_CLEAR = command(TPM_CC.Startup, u16(0))
# TPMA_CC fields (Part 2, TPMA_CC), decoded here independently of the engine's encoder.
INDEX_MASK, NV, EXTENSIVE, FLUSHED, RHANDLE, V = 0xFFFF, 1 << 22, 1 << 23, 1 << 24, 1 << 28, 1 << 29


@pytest.fixture(scope="module")
def tpm():
    engine = EngineOracle(Engine())
    assert Response(engine.execute(STARTUP_CLEAR)).rc == TPM_RC.SUCCESS
    return engine


def capability_pages(tpm, cap: int, count: int) -> list:
    """Every element of ``cap``, page by page (``count`` per request), following moreData."""
    items, start = [], 0
    while True:
        resp = Response(tpm.execute(command(TPM_CC.GetCapability, u32(cap) + u32(start) + u32(count))))
        assert resp.rc == TPM_RC.SUCCESS
        more, data = resp.params()[0], T.TPMS_CAPABILITY_DATA.unpack(resp.params()[1:]).data
        items += data
        if not more:
            return items
        assert data, "moreData without data"
        start = (data[-1] & INDEX_MASK | data[-1] & V) + 1


def code_of(attrs: int) -> int:
    return attrs & INDEX_MASK | attrs & V


@pytest.mark.parametrize("page", [1, 7, MAX_CAP_CC])
def test_cap_commands_lists_exactly_the_table(tpm, page):
    listed = capability_pages(tpm, TPM_CAP.COMMANDS, page)
    assert [code_of(a) for a in listed] == tpm.table.codes()


def test_tpma_cc_is_computed_from_each_declaration(tpm):
    for attrs in capability_pages(tpm, TPM_CAP.COMMANDS, MAX_CAP_CC):
        cmd = tpm.table.get(code_of(attrs))
        assert attrs >> 25 & 7 == len(cmd.handles), cmd.name
        assert bool(attrs & NV) == cmd.nv, cmd.name
        assert bool(attrs & EXTENSIVE) == cmd.extensive, cmd.name
        assert bool(attrs & FLUSHED) == cmd.flushed, cmd.name
        assert bool(attrs & RHANDLE) == bool(cmd.response_handles), cmd.name
        assert bool(attrs & V) == bool(cmd.code & V), cmd.name
        assert attrs & 0xC03F0000 == 0, f"{cmd.name}: reserved TPMA_CC bits set"


def test_command_counts_are_reported(tpm):
    props = {
        p.property: p.value
        for p in T.TPMS_CAPABILITY_DATA.unpack(
            Response(
                tpm.execute(
                    command(TPM_CC.GetCapability, u32(TPM_CAP.TPM_PROPERTIES) + u32(TPM_PT.TOTAL_COMMANDS) + u32(3))
                )
            ).params()[1:]
        ).data
    }
    vendor = sum(1 for c in tpm.table.codes() if c & V)
    assert props == {
        TPM_PT.TOTAL_COMMANDS: len(tpm.table),
        TPM_PT.LIBRARY_COMMANDS: len(tpm.table) - vendor,
        TPM_PT.VENDOR_COMMANDS: vendor,
    }


def test_every_command_of_the_claimed_revision_is_implemented_or_explained(tpm):
    implemented = set(tpm.table.codes())
    spec = spec_commands(SPEC_REVISION)
    unexplained = sorted(spec - implemented - set(NOT_IMPLEMENTED))
    assert not unexplained, [TPM_CC(c).name for c in unexplained]
    both = sorted(implemented & set(NOT_IMPLEMENTED))
    assert not both, f"implemented and listed as not implemented: {[TPM_CC(c).name for c in both]}"
    beyond = sorted(implemented - spec)
    assert not beyond, f"implemented beyond Library {SPEC_REVISION}: {[hex(c) for c in beyond]}"
    assert all(reason.strip() for reason in NOT_IMPLEMENTED.values())


@pytest.mark.parametrize("code", sorted(NOT_IMPLEMENTED), ids=lambda c: TPM_CC(c).name)
def test_commands_left_out_answer_command_code(tpm, code):
    assert Response(tpm.execute(command(code))).rc == TPM_RC.COMMAND_CODE


def test_reported_revision_is_the_claimed_one(tpm):
    resp = Response(
        tpm.execute(command(TPM_CC.GetCapability, u32(TPM_CAP.TPM_PROPERTIES) + u32(TPM_PT.REVISION) + u32(1)))
    )
    (prop,) = T.TPMS_CAPABILITY_DATA.unpack(resp.params()[1:]).data
    assert (prop.property, prop.value) == (TPM_PT.REVISION, SPEC_REVISION)


@pytest.mark.swtpm
def test_script_prints_the_table_with_libtpms_asked_at_run_time():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "command_table.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = {
        line.split(" | ")[1]: line.strip("| ").split(" | ")
        for line in out.splitlines()
        if line.startswith("| ") and "0x" in line
    }
    spec = spec_commands(SPEC_REVISION)
    assert {int(code, 16) for code in rows} >= spec
    oracle = SwtpmOracle()
    try:
        oracle.execute(STARTUP_CLEAR)
        theirs = {code_of(a) for a in capability_pages(oracle, TPM_CAP.COMMANDS, MAX_CAP_CC)}
    finally:
        oracle.close()
    ours = set(Engine().table.codes())
    for code, (_name, _code, our_col, their_col, *_why) in rows.items():
        value = int(code, 16)
        assert our_col == ("yes" if value in ours else "no"), code
        assert their_col == ("yes" if value in theirs else "no"), code
    assert "**not explained**" not in out


#: Where our TPMA_CC.nv differs from libtpms', on purpose: ours says whether this engine writes
#: NV for the command.  libtpms sets it for the PCR commands, SelfTest, IncrementalSelfTest and
#: StirRandom (its PCRs and RNG state may live in NV; ours live in RAM), and leaves it out for
#: ClockRateAdjust, whose new rate this engine keeps in NV.
NV_FLAG_DIFFERS = {
    TPM_CC.ClockRateAdjust,
    TPM_CC.PCR_Event,
    TPM_CC.PCR_Reset,
    TPM_CC.PCR_Extend,
    TPM_CC.EventSequenceComplete,
    TPM_CC.SelfTest,
    TPM_CC.IncrementalSelfTest,
    TPM_CC.StirRandom,
}


@pytest.mark.swtpm
def test_tpma_cc_agrees_with_libtpms_but_for_the_nv_flag_where_we_keep_no_nv(tpm):
    oracle = SwtpmOracle()
    try:
        oracle.execute(STARTUP_CLEAR)
        theirs = {code_of(a): a for a in capability_pages(oracle, TPM_CAP.COMMANDS, MAX_CAP_CC)}
    finally:
        oracle.close()
    ours = {code_of(a): a for a in capability_pages(tpm, TPM_CAP.COMMANDS, MAX_CAP_CC)}
    differ = {code for code in set(ours) & set(theirs) if ours[code] != theirs[code]}
    assert all(ours[c] ^ theirs[c] == NV for c in differ), [TPM_CC(c).name for c in differ]
    assert differ == NV_FLAG_DIFFERS, [TPM_CC(c).name for c in differ ^ NV_FLAG_DIFFERS]
