"""Testing (Part 3, clause 10): SelfTest, IncrementalSelfTest, GetTestResult.

The self-test runs known-answer tests of the engine's cryptographic
primitives; a failure puts the TPM in failure mode, where only GetTestResult
and GetCapability answer.
"""

from __future__ import annotations

from ..algorithms import ALGORITHMS
from ..command import command
from ..constants import MAX_DIGEST_BUFFER, TPM_CC
from ..errors import TPM_RC, TpmError
from ..marshal import UINT32
from ..selftest import run_self_tests
from ..types import TPM2B_MAX_BUFFER, TPMI_YES_NO, TPML_ALG


def _test(ctx, algorithms) -> None:
    failed = run_self_tests(algorithms)
    tested = set(ctx.engine.volatile.self_tested)
    tested.update(a for a in algorithms if a not in failed)
    ctx.engine.volatile.self_tested = sorted(tested)
    if failed:
        ctx.engine.failure_mode = True
        ctx.engine.failure_reason = f"self-test failed for {sorted(failed)}"
        raise TpmError(TPM_RC.FAILURE, ctx.engine.failure_reason)


@command(TPM_CC.SelfTest, params=[("fullTest", TPMI_YES_NO)])
def self_test(ctx, fullTest: int):
    pending = set(ALGORITHMS) if fullTest else set(ALGORITHMS) - set(ctx.engine.volatile.self_tested)
    _test(ctx, pending)


@command(TPM_CC.IncrementalSelfTest, params=[("toTest", TPML_ALG)], response=[("toDoList", TPML_ALG)])
def incremental_self_test(ctx, toTest: list[int]):
    unknown = [alg for alg in toTest if alg not in ALGORITHMS]
    if unknown:
        raise TpmError(TPM_RC.VALUE, f"algorithm 0x{unknown[0]:04x} not implemented", at="toTest")
    _test(ctx, set(toTest) - set(ctx.engine.volatile.self_tested))
    # Every requested test has completed, so nothing is left to do.
    return ctx.response(toDoList=[])


@command(TPM_CC.GetTestResult, response=[("outData", TPM2B_MAX_BUFFER), ("testResult", UINT32)], in_failure_mode=True)
def get_test_result(ctx):
    engine = ctx.engine
    if engine.failure_mode:
        return ctx.response(outData=engine.failure_reason.encode()[:MAX_DIGEST_BUFFER], testResult=TPM_RC.FAILURE)
    return ctx.response(outData=b"", testResult=TPM_RC.SUCCESS)
