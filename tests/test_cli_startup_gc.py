"""The daemon's collector pause around start-up (vtpm_cuse.cli.startup_gc), each case in a
fresh interpreter so that pytest's own collector is never touched."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support.daemon import REPO, env_with_repo


def _run(body: str) -> None:
    code = "import gc\nfrom vtpm_cuse.cli import startup_gc\n" + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env_with_repo(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_pause_then_resume_freezes_start_up_and_collects_again() -> None:
    _run(
        """
        startup_gc.pause()
        assert not gc.isenabled()
        made = [[] for _ in range(1000)]  # what start-up builds
        startup_gc.resume()
        assert gc.isenabled()
        assert gc.get_freeze_count() >= len(made), gc.get_freeze_count()
        cycle = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # garbage made after start-up is still collected
        """
    )


def test_resume_leaves_a_collector_it_did_not_pause_alone() -> None:
    _run(
        """
        gc.disable()
        startup_gc.pause()  # already off: not ours to switch back on
        startup_gc.resume()
        assert not gc.isenabled() and gc.get_freeze_count() == 0
        gc.enable()
        startup_gc.resume()  # without pause: nothing frozen
        assert gc.isenabled() and gc.get_freeze_count() == 0
        """
    )
