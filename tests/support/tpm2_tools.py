"""Running Debian's tpm2-tools against a ``vtpm-cuse socket`` daemon.

tpm2-tss' swtpm TCTI speaks raw TPM commands on the data port and CMD_* on
the control port (data + 1), exactly as with swtpm.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

#: One tpm2-tools invocation: ``run("nvread", "0x1500016", ..., check=True)``.
Tpm2Runner = Callable[..., subprocess.CompletedProcess[bytes]]
TOOL_TIMEOUT = 60


def tpm2_runner(data_port: int) -> Tpm2Runner:
    """A runner of ``tpm2_<tool>``; with ``check`` a non-zero exit fails the test with its stderr."""
    env = dict(os.environ, TPM2TOOLS_TCTI=f"swtpm:host=127.0.0.1,port={data_port}")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(["tpm2_" + args[0], *args[1:]], env=env, capture_output=True, timeout=TOOL_TIMEOUT)
        if check and result.returncode != 0:
            raise AssertionError(f"tpm2_{' '.join(args)} failed ({result.returncode}): {result.stderr.decode()}")
        return result

    return run


def module_tpm2_fixtures(*extra: str, scope: str = "module"):
    """The ``daemon`` and ``tpm2`` fixtures of a tpm2-tools test module:
    ``daemon, tpm2 = module_tpm2_fixtures()`` at module level.

    One ``vtpm-cuse socket`` (``--flags not-need-init`` plus ``extra``) on a fresh state
    directory for the module, and a runner that has sent ``tpm2_startup -c``.
    """
    import pytest

    from .daemon import Daemon

    @pytest.fixture(scope=scope)
    def daemon(tmp_path_factory: pytest.TempPathFactory):
        d = Daemon(tmp_path_factory.mktemp("state"), extra=["--flags", "not-need-init", *extra]).start()
        try:
            yield d
        finally:
            d.stop()

    @pytest.fixture(scope=scope)
    def tpm2(daemon: Daemon) -> Tpm2Runner:
        run = tpm2_runner(daemon.data_port)
        run("startup", "-c")
        return run

    return daemon, tpm2
