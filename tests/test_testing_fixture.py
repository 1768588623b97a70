"""vtpm_cuse.testing and its pytest plugin (from the installed ``pytest11`` entry point),
used exactly as the README shows."""

from __future__ import annotations

import os
import subprocess

import pytest
from tpm2_pytss import ESAPI, TCTILdr

from vtpm_cuse.testing import RunningVtpm, VtpmStartError, running_vtpm


# --- README example, verbatim ------------------------------------------------------------
def test_random_bytes(vtpm):
    with ESAPI(TCTILdr(*vtpm.tcti.split(":", 1))) as esapi:
        assert len(esapi.get_random(16)) == 16


def test_tpm2_tools(vtpm):
    env = {**os.environ, "TPM2TOOLS_TCTI": vtpm.tcti}
    out = subprocess.run(["tpm2_getcap", "properties-fixed"], env=env, capture_output=True, check=True)
    assert b"TPM2_PT_MANUFACTURER" in out.stdout


# ------------------------------------------------------------------------------------------


def test_each_test_gets_a_fresh_tpm(vtpm, vtpm_module):
    assert vtpm.data_port != vtpm_module.data_port
    assert vtpm.ctrl_port == vtpm.data_port + 1
    assert vtpm.state_dir != vtpm_module.state_dir


def test_context_manager_cleans_up():
    with running_vtpm() as tpm:
        state = tpm.state_dir
        assert isinstance(tpm, RunningVtpm)
        os.kill(tpm.pid, 0)
        with ESAPI(TCTILdr(*tpm.tcti.split(":", 1))) as esapi:
            esapi.get_random(4)
    assert not state.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(tpm.pid, 0)


def test_state_survives_in_a_given_directory(tmp_path):
    env = lambda t: {**os.environ, "TPM2TOOLS_TCTI": t.tcti}  # noqa: E731
    with running_vtpm(tmp_path) as tpm:
        subprocess.run(["tpm2_nvdefine", "0x1500016", "-C", "o", "-s", "8"], env=env(tpm), check=True)
    with running_vtpm(tmp_path) as tpm:
        out = subprocess.run(["tpm2_nvreadpublic", "0x1500016"], env=env(tpm), capture_output=True, check=True)
        assert b"size: 8" in out.stdout


def test_a_daemon_that_cannot_start_is_an_error(tmp_path):
    with pytest.raises(VtpmStartError, match="exited with"):
        with running_vtpm(tmp_path, extra_args=["--object-slots", "0"]):
            pass
