"""The daemon and ESAPI fixtures of the tpm2-pytss test modules (tpm2-tss's own marshalling
against a real ``vtpm-cuse socket``), shared instead of repeated in each module."""

from __future__ import annotations

import pytest
from tpm2_pytss import ESAPI, TCTILdr  # test dependency (pyproject [test]); a missing install must fail
from tpm2_pytss.constants import TPM2_SU

from .daemon import Daemon


def module_esys_fixtures(*extra: str):
    """``daemon, esys = module_esys_fixtures()`` at module level: one ``vtpm-cuse socket``
    (``--flags not-need-init`` plus ``extra``) on a fresh state directory for the module,
    and an ESAPI context on its data port that has sent Startup(CLEAR)."""

    @pytest.fixture(scope="module")
    def daemon(tmp_path_factory: pytest.TempPathFactory):
        d = Daemon(tmp_path_factory.mktemp("state"), extra=["--flags", "not-need-init", *extra]).start()
        try:
            yield d
        finally:
            d.stop()

    @pytest.fixture(scope="module")
    def esys(daemon: Daemon):
        tcti = TCTILdr("swtpm", f"host=127.0.0.1,port={daemon.data_port}")
        ctx = ESAPI(tcti)
        try:
            ctx.startup(TPM2_SU.CLEAR)
            yield ctx
        finally:
            ctx.close()
            tcti.close()

    return daemon, esys
