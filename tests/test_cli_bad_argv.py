"""The bad command lines of the options fuzz target (tests/fuzz/target_options.py),
run through the real programs: one line on stderr, a non-zero exit, nothing on stdout.

The fuzz target checks in process that every parser raises only its usage error;
this checks that each program turns that error into what a user sees.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fuzz.target_options import BAD_ARGVS
from tests.support.daemon import REPO, env_with_repo

MODULES = {
    "vtpm-cuse": "vtpm_cuse.cli.entry",
    "vtpm-ioctl": "vtpm_cuse.cli.ioctl_tool",
    "vtpm-setup": "vtpm_cuse.setup.cli",
}


@pytest.mark.parametrize("argv", BAD_ARGVS, ids=[" ".join(a) for a in BAD_ARGVS])
def test_bad_command_line_is_one_line_and_nonzero_exit(argv: tuple[str, ...]) -> None:
    program, *args = argv
    done = subprocess.run(
        [sys.executable, "-m", MODULES[program], *args],
        cwd=REPO,
        env=env_with_repo(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"{program}: stderr is not one line: {done.stderr!r}"
    assert "Traceback" not in done.stderr
    assert done.stdout == "", f"{program} printed to stdout: {done.stdout!r}"
