"""kill -9 of the daemon at random moments never loses an acknowledged NV change
and never applies half of one (NV_Write, NV_Increment, EvictControl,
HierarchyChangeAuth).  A few kills here; scripts/crash_consistency.py runs
hundreds and prints the figures."""

from __future__ import annotations

from pathlib import Path

from support.crash_harness import CrashLoop


def test_kill_9_loses_no_acknowledged_change(tmp_path: Path) -> None:
    figures = CrashLoop(tmp_path / "state", seed=1).run(kills=8)
    assert figures.problems == []
    assert figures.kills == figures.runs == 8
    assert figures.acknowledged > 0 and figures.checked == 4 * 8 and figures.lost == 0
