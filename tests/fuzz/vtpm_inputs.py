"""What the targets that drive a whole Vtpm (control, cuse) share: a fresh TPM per input
on one worker thread, and the check that the TPM still answers afterwards."""

from __future__ import annotations

import shutil
import struct
from typing import Final

from tests.fuzz.scratch import scratch_dir
from vtpm_cuse.tpm.errors import TPM_RC
from vtpm_cuse.vtpm import Vtpm, fatal_error_response
from vtpm_cuse.worker import Worker

GET_RANDOM_8: Final = bytes.fromhex("80010000000c0000017b0008")
_HEADER = struct.Struct(">HII")


class FreshVtpms:
    """A new Vtpm on an empty state directory per input, all on one worker thread (a
    Worker's thread outlives its Vtpm by 30 s; one per input would pile up)."""

    def __init__(self, prefix: str) -> None:
        self._worker = Worker("fuzz-vtpm-worker")
        self._root = scratch_dir(prefix)

    def new(self) -> Vtpm:
        state = self._root / "state"
        shutil.rmtree(state, ignore_errors=True)
        vtpm = Vtpm(state)
        vtpm._worker = self._worker
        return vtpm


def check_get_random_answer(response: bytes, vtpm: Vtpm) -> None:
    """The response to GET_RANDOM_8 after an input: well-formed, no TPM_RC_FAILURE from a
    running TPM, the fatal error response from a stopped one."""
    assert len(response) >= _HEADER.size, f"TPM response {response.hex()} is shorter than a header"
    tag, size, code = _HEADER.unpack_from(response)
    assert size == len(response), f"TPM response size field {size} != {len(response)} bytes"
    assert tag in (0x8001, 0x8002), f"TPM response tag {tag:#x}"
    if vtpm.running:
        assert code != TPM_RC.FAILURE, f"the running TPM answers GetRandom with TPM_RC_FAILURE: {response.hex()}"
    else:
        assert response == fatal_error_response(), f"the stopped TPM answers {response.hex()}"
