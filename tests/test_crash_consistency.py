"""kill -9 of the daemon at random moments never loses an acknowledged change and
never applies half of one: NV_Write, NV_Increment, EvictControl,
HierarchyChangeAuth, ClockSet, the DA counter, Shutdown(STATE) +
CMD_STORE_VOLATILE and CMD_SET_STATEBLOB (tests/support/crash_harness.py has
the model).  A short run here; scripts/crash_consistency.py runs a thousand
kills and prints the figures per command kind."""

from __future__ import annotations

from pathlib import Path

from support.crash_harness import KINDS, CrashLoop

KILLS = 16


def test_kill_9_loses_no_acknowledged_change(tmp_path: Path) -> None:
    figures = CrashLoop(tmp_path / "state", seed=1).run(kills=KILLS, max_delay=0.5)
    assert figures.problems == []
    assert figures.kills == figures.runs == KILLS
    assert figures.lost == 0
    # Every kind was checked after every restart, and the loop exercised every kind.
    assert all(figures.kinds[kind].checked == KILLS for kind in KINDS), figures.table()
    assert all(figures.kinds[kind].acknowledged > 0 for kind in KINDS), figures.table()
