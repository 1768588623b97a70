"""The engine's state decoder refuses what it did not write (found by tests/fuzz/target_state_blob).

The SHA-256 in a state blob's header is no secret: anyone who may SET_STATEBLOB can
send a blob whose digest is right and whose JSON is anything.  Such a blob must be
refused with StateBlobError (INIT then fails cleanly), never load into an engine that
answers TPM_RC_FAILURE later; these were crashes of PCR_Read and Startup.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from support.engine_oracle import checked_execute
from support.tpm_client import command, u16, u32
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.state import BlobKind, StateBlobError, deserialise, serialise

HEADER = 4 + 2 + 1 + 32  # magic, version, kind, SHA-256 of the payload


@pytest.fixture(scope="module")
def blobs() -> tuple[bytes, bytes]:
    engine = Engine()
    checked_execute(engine, command(TPM_CC.Startup, u16(0)))
    return engine.permanent_blob(), engine.volatile_blob()


def rewrap(kind: BlobKind, state: dict) -> bytes:
    """``state`` as a blob with a correct header, as a hostile SET_STATEBLOB sends it."""
    payload = json.dumps(state).encode()
    return serialise(kind, {})[: HEADER - 32] + hashlib.sha256(payload).digest() + payload


def test_a_well_formed_blob_still_loads(blobs):
    permanent, volatile = blobs
    engine = Engine.from_blobs(rewrap(BlobKind.PERMANENT, json.loads(permanent[HEADER:])), volatile)
    pcr_read = command(TPM_CC.PCR_Read, u32(1) + u16(TPM_ALG.SHA256) + bytes([3, 0xFF, 0xFF, 0xFF]))
    assert checked_execute(engine, pcr_read)[6:10] == bytes(4)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reset_count", "5"),  # a string where an int was written: refused, not coerced
        ("reset_count", True),  # a bool is no int
        ("disable_clear", 1),  # nor an int a bool
        ("reset_count", -1),  # GetCapability could not marshal a negative resetCount
        ("reset_count", 1 << 32),  # nor one beyond its UINT32
        ("clock", 1 << 64),
        ("restart_count", None),  # null where no None was written: Startup added to it
        ("reset_count", float("inf")),  # JSON's Infinity: int() of it overflowed
        ("eps", "00"),  # bytes are {"$b": hex}
        ("eps", {"$b": 7}),
        ("pcr_allocation", {"$d": [[8, [0, 1]]]}),  # a bank of an unknown hash (Startup crashed)
        ("pcr_allocation", {"$d": [[TPM_ALG.SHA256, [24]]]}),  # a PCR beyond the implemented ones
        ("pcr_allocation", {"$d": [7]}),  # an entry that is not a pair
    ],
)
def test_a_permanent_field_of_another_shape_is_refused(blobs, field, value):
    state = json.loads(blobs[0][HEADER:])
    state[field] = value
    with pytest.raises(StateBlobError):
        deserialise(BlobKind.PERMANENT, rewrap(BlobKind.PERMANENT, state))


def test_a_short_pcr_bank_is_refused(blobs):
    """A bank of 3 values made PCR_Read index past its end."""
    state = json.loads(blobs[1][HEADER:])
    state["pcrs"]["$d"][0][1] = state["pcrs"]["$d"][0][1][:3]
    with pytest.raises(StateBlobError, match="PCR bank"):
        deserialise(BlobKind.VOLATILE, rewrap(BlobKind.VOLATILE, state))


def test_deeply_nested_json_is_refused(blobs):
    payload = b"[" * 100_000 + b"]" * 100_000
    blob = serialise(BlobKind.PERMANENT, {})[: HEADER - 32] + hashlib.sha256(payload).digest() + payload
    with pytest.raises(StateBlobError):
        deserialise(BlobKind.PERMANENT, blob)
