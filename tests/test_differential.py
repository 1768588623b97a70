"""Differential testing against Debian's swtpm (libtpms): random command sequences from the
command declarations, replayed on both TPMs (tests/support/differential.py).

A CI-sized run must show no unexplained disagreement; every entry of the table of known
differences is replayed so that it cannot outlive the behaviour it records.
"""

from __future__ import annotations

import pytest

from support.differential import (
    KNOWN_DIFFERENCES,
    Compare,
    Kind,
    Mutation,
    MutationKind,
    Ref,
    SequenceGenerator,
    Step,
    TwoTpms,
    classify,
    judge,
    run_many,
    run_sequence,
    shrink,
)
from support.tpm_client import u16, u32
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH

pytestmark = pytest.mark.swtpm

#: 30 sequences of 20 commands (a few seconds): fixed seeds, so a failure is reproducible with
#: scripts/differential.py --seed N --sequences 1.
CI_SEQUENCES = range(30)
CI_LENGTH = 20


@pytest.fixture(scope="module")
def tpms():
    pair = TwoTpms()
    yield pair
    pair.close()


def test_ci_run_has_no_unexplained_disagreement(tpms):
    report = run_many(tpms, CI_SEQUENCES, CI_LENGTH)
    assert report.sequences == len(CI_SEQUENCES)
    # A sequence stops early only where the two TPMs' states may have diverged: most ran whole.
    assert report.commands >= 0.8 * len(CI_SEQUENCES) * CI_LENGTH
    assert report.agreements + sum(report.by_kind.values()) == report.commands
    assert sum(report.known_hits.values()) == sum(report.by_kind.values())
    problems = "\n\n".join(
        f"seed {seed}:\n" + "\n".join(str(s) for s in steps[:-1]) + "\n" + verdict.describe()
        for seed, steps, verdict in report.unexplained
    )
    assert not report.unexplained, problems


def test_generator_is_deterministic_and_uses_the_world():
    first = SequenceGenerator(7, 40).generate()
    assert first == SequenceGenerator(7, 40).generate()
    assert first != SequenceGenerator(8, 40).generate()
    # Across a few seeds: handles drawn from earlier steps, mutations, and declared-types steps.
    steps = [s for seed in range(20) for s in SequenceGenerator(seed, 20).generate()]
    assert any(isinstance(h, Ref) for s in steps for h in s.handles + s.param_handles)
    assert {s.mutation.kind for s in steps if s.mutation} == set(MutationKind)
    assert any(s.note == "declared types" for s in steps)
    assert any(s.compare is Compare.BYTES for s in steps)


@pytest.mark.parametrize("entry", KNOWN_DIFFERENCES, ids=lambda e: e.name)
def test_known_difference_still_behaves_as_recorded(tpms, entry):
    steps = entry.reproducer()
    last = tpms.run(steps)[-1]
    assert (last.theirs_rc, last.ours_rc) == (entry.theirs, entry.ours), (
        f"{entry.name}: libtpms 0x{last.theirs_rc:x} ours 0x{last.ours_rc:x}, recorded "
        f"0x{entry.theirs:x} / 0x{entry.ours:x}"
    )
    assert last.step.code == entry.command
    verdict = judge(last)
    assert verdict.kind is Kind.CODE_MISMATCH and verdict.known is entry
    assert entry.clause and entry.condition


def test_byte_comparison_sees_a_different_output(tpms):
    """The comparison is not blind: the same PCR read after extending only on one side."""
    read = Step(1, TPM_CC.PCR_Read, (), u32(1) + u16(TPM_ALG.SHA256) + b"\x03\x00\x00\x01", compare=Compare.BYTES)
    outcome = tpms.run([read])[0]
    assert classify(outcome) is Kind.AGREE
    extend = Step(0, TPM_CC.PCR_Extend, (0,), u32(1) + u16(TPM_ALG.SHA256) + bytes(32), (b"",))
    tpms.ours.execute(extend.build(lambda h: h))
    differing = type(outcome)(read, outcome.command, outcome.theirs, tpms.ours.execute(read.build(lambda h: h)))
    assert classify(differing) is Kind.BYTE_MISMATCH and judge(differing).unexplained


def test_shrink_keeps_only_what_the_disagreement_needs(tpms):
    """Commands the disagreement does not need are dropped from the reproducer."""
    unrelated = [Step(i, TPM_CC.GetRandom, (), u16(8), compare=Compare.SIZE) for i in range(3)]
    aes192 = Step(3, TPM_CC.TestParms, (), bytes.fromhex("0025000600c00010"))
    result = run_sequence(tpms, unrelated + [aes192])
    assert result.verdicts[-1].known is not None  # explained: not shrunk
    # With the table ignored the disagreement is unexplained and shrinks to the one command.
    saved = list(KNOWN_DIFFERENCES)
    KNOWN_DIFFERENCES.clear()
    try:
        bad = run_sequence(tpms, unrelated + [aes192]).first_unexplained
        assert bad is not None and bad.outcome.step is aes192
        assert shrink(tpms, unrelated + [aes192], bad) == [aes192]
    finally:
        KNOWN_DIFFERENCES.extend(saved)


def test_handles_resolve_per_tpm_and_mutations_apply(tpms):
    """A loaded external key is addressed by the step that loaded it on each TPM; a mutated
    handle of the wrong type is answered the same by both."""
    gen = SequenceGenerator(0, 0)
    load = gen.load_external_hmac()
    gen.steps.append(load)
    hmac = gen.hmac()
    wrong = Step(
        2,
        TPM_CC.HMAC,
        hmac.handles,
        hmac.params,
        hmac.passwords,
        mutation=Mutation(MutationKind.WRONG_HANDLE, 0, TPM_RH.OWNER),
    )
    outcomes = tpms.run([load, hmac, wrong])
    assert [o.theirs_rc for o in outcomes[:2]] == [0, 0] and [classify(o) for o in outcomes] == [Kind.AGREE] * 3
    assert outcomes[2].theirs_rc != 0
    assert hmac.handles == (Ref(load.id),)
