"""Random number generator (Part 3, clause 16): GetRandom, StirRandom."""

from __future__ import annotations

from ..command import command
from ..constants import MAX_DIGEST_SIZE, TPM_CC
from ..marshal import UINT16
from ..types import TPM2B_DIGEST, TPM2B_SENSITIVE_DATA


@command(TPM_CC.GetRandom, params=[("bytesRequested", UINT16)], response=[("randomBytes", TPM2B_DIGEST)])
def get_random(ctx, bytesRequested: int):
    # The answer is a TPM2B_DIGEST, so a TPM returns at most one digest's worth.
    return ctx.response(randomBytes=ctx.engine.random(min(bytesRequested, MAX_DIGEST_SIZE)))


@command(TPM_CC.StirRandom, params=[("inData", TPM2B_SENSITIVE_DATA)])
def stir_random(ctx, inData: bytes):
    ctx.engine.stir_random(inData)
