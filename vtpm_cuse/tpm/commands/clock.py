"""Clocks and timers (Part 3, clause 29): ReadClock, ClockSet, ClockRateAdjust."""

from __future__ import annotations

from ..command import AuthRole, H, command
from ..constants import TPM_CC
from ..errors import TPM_RC, TpmError
from ..marshal import INT8, UINT64, Interface
from ..types import TPMI_RH_PROVISION, TPMS_CLOCK_INFO, TPMS_TIME_INFO

#: TPM_CLOCK_ADJUST: COARSE_SLOWER (-3) .. COARSE_FASTER (+3).
TPM_CLOCK_ADJUST = Interface("TPM_CLOCK_ADJUST", INT8, ranges=((-3, 3),))
#: ClockSet may not move the clock within this distance of wrapping (Part 3, ClockSet).
CLOCK_SET_MAX = 0xFFFF000000000000


def time_info(engine) -> object:
    perm = engine.permanent
    return TPMS_TIME_INFO(
        time=engine.time(),
        clockInfo=TPMS_CLOCK_INFO(
            clock=engine.clock(),
            resetCount=perm.reset_count,
            restartCount=perm.restart_count,
            safe=int(engine.volatile.clock_safe),
        ),
    )


@command(TPM_CC.ReadClock, response=[("currentTime", TPMS_TIME_INFO)])
def read_clock(ctx):
    return ctx.response(currentTime=time_info(ctx.engine))


@command(TPM_CC.ClockSet, handles=[H("auth", TPMI_RH_PROVISION, AuthRole.USER)], params=[("newTime", UINT64)], nv=True)
def clock_set(ctx, auth: int, newTime: int):
    if newTime > CLOCK_SET_MAX:
        raise TpmError(TPM_RC.VALUE, f"newTime 0x{newTime:x} too large", at="newTime")
    if newTime < ctx.engine.clock():
        raise TpmError(TPM_RC.VALUE, "Clock cannot be set backwards", at="newTime")
    ctx.engine.set_clock(newTime)


@command(
    TPM_CC.ClockRateAdjust,
    handles=[H("auth", TPMI_RH_PROVISION, AuthRole.USER)],
    params=[("rateAdjust", TPM_CLOCK_ADJUST)],
    nv=True,
)
def clock_rate_adjust(ctx, auth: int, rateAdjust: int):
    ctx.engine.adjust_clock_rate(rateAdjust)
