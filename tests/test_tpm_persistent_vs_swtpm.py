"""TPM2_EvictControl and persistent handles: the same command bytes against our engine (with
libtpms' three object slots) and Debian's swtpm.

Primary keys come from each TPM's own seeds, so only what does not depend on a seed is compared
byte for byte: whole EvictControl responses, response codes, and the public area of a persisted
primary apart from its unique field.
"""

from __future__ import annotations

import pytest

from support.engine_oracle import EngineOracle
from support.object_templates import (
    STORAGE,
    create_cmd,
    create_primary_cmd,
    ecc_template,
    rsa_template,
    symcipher_template,
)
from support.swtpm_oracle import SwtpmOracle
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_RH, TPMA_OBJECT
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import rc_name
from vtpm_cuse.tpm.marshal import Reader

pytestmark = pytest.mark.swtpm

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
OWNER_HANDLE, OWNER_HANDLE_2, PLATFORM_HANDLE = 0x81000001, 0x81000002, 0x81800000
LIBTPMS_SLOTS = 3


@pytest.fixture
def pair():
    """A fresh pair per test: persistent objects would otherwise leak between tests."""
    oracle = SwtpmOracle()
    ours = EngineOracle(Engine(max_objects=LIBTPMS_SLOTS))
    for tpm in (oracle, ours):
        assert tpm.execute(STARTUP_CLEAR) == bytes.fromhex("80010000000a00000000")
    yield oracle, ours
    oracle.close()


def both(pair, cmd: bytes) -> tuple[Response, Response]:
    oracle, ours = pair
    return Response(oracle.execute(cmd)), Response(ours.execute(cmd))


def same_rc(pair, cmd: bytes) -> int:
    theirs, mine = both(pair, cmd)
    assert rc_name(mine.rc) == rc_name(theirs.rc), cmd.hex()
    return mine.rc


def primary(pair, area, hierarchy: int = TPM_RH.OWNER) -> int:
    theirs, mine = both(pair, create_primary_cmd(area, hierarchy))
    assert theirs.rc == mine.rc == 0, (rc_name(theirs.rc), rc_name(mine.rc))
    assert theirs.raw[10:14] == mine.raw[10:14]  # both take the lowest free slot
    return int.from_bytes(mine.raw[10:14], "big")


def evict_control_cmd(auth: int, obj: int, persistent: int) -> bytes:
    return command(TPM_CC.EvictControl, u32(persistent), u32(auth) + u32(obj), b"")


def flush(pair, handle: int) -> None:
    assert same_rc(pair, command(TPM_CC.FlushContext, u32(handle))) == 0


def public_without_unique(resp: Response):
    area = T.TPM2B_PUBLIC.unmarshal(Reader(resp.params()))
    return area.type, area.nameAlg, area.objectAttributes, area.authPolicy, area.parameters


def test_evict_control_responses_are_byte_identical(pair):
    obj = primary(pair, rsa_template(attrs=STORAGE, bits=2048))
    theirs, mine = both(pair, evict_control_cmd(TPM_RH.OWNER, obj, OWNER_HANDLE))
    assert mine.raw == theirs.raw and mine.rc == 0
    flush(pair, obj)
    theirs, mine = both(pair, command(TPM_CC.ReadPublic, handles=u32(OWNER_HANDLE)))
    assert theirs.rc == mine.rc == 0
    assert len(mine.raw) == len(theirs.raw)
    assert public_without_unique(mine) == public_without_unique(theirs)
    cap = command(TPM_CC.GetCapability, u32(TPM_CAP.HANDLES) + u32(0x81000000) + u32(8))
    theirs, mine = both(pair, cap)
    assert mine.raw == theirs.raw
    theirs, mine = both(pair, evict_control_cmd(TPM_RH.OWNER, OWNER_HANDLE, OWNER_HANDLE))
    assert mine.raw == theirs.raw and mine.rc == 0
    theirs, mine = both(pair, cap)
    assert mine.raw == theirs.raw


def test_evict_control_error_codes_match_libtpms(pair):
    owner_obj = primary(pair, ecc_template())
    temporary = primary(pair, ecc_template(unique_x=b"t"), TPM_RH.NULL)
    st_clear = primary(pair, rsa_template(attrs=STORAGE | TPMA_OBJECT.stClear, bits=1024))
    assert same_rc(pair, evict_control_cmd(TPM_RH.OWNER, owner_obj, OWNER_HANDLE)) == 0
    cases = [
        evict_control_cmd(TPM_RH.OWNER, temporary, OWNER_HANDLE_2),
        evict_control_cmd(TPM_RH.OWNER, st_clear, OWNER_HANDLE_2),
        evict_control_cmd(TPM_RH.PLATFORM, owner_obj, PLATFORM_HANDLE),
        evict_control_cmd(TPM_RH.OWNER, owner_obj, PLATFORM_HANDLE),
        evict_control_cmd(TPM_RH.OWNER, owner_obj, OWNER_HANDLE),
        evict_control_cmd(TPM_RH.ENDORSEMENT, owner_obj, OWNER_HANDLE_2),
        evict_control_cmd(TPM_RH.OWNER, owner_obj, 0x80000001),
    ]
    for cmd in cases:
        same_rc(pair, cmd)
    flush(pair, temporary)
    flush(pair, st_clear)
    platform_obj = primary(pair, ecc_template(unique_x=b"p"), TPM_RH.PLATFORM)
    cases = [
        evict_control_cmd(TPM_RH.OWNER, platform_obj, OWNER_HANDLE_2),
        evict_control_cmd(TPM_RH.PLATFORM, platform_obj, OWNER_HANDLE_2),
        evict_control_cmd(TPM_RH.OWNER, OWNER_HANDLE, OWNER_HANDLE_2),
        evict_control_cmd(TPM_RH.OWNER, OWNER_HANDLE_2, OWNER_HANDLE_2),
        command(TPM_CC.ReadPublic, handles=u32(OWNER_HANDLE_2)),
        command(TPM_CC.FlushContext, u32(OWNER_HANDLE)),
        command(TPM_CC.ContextSave, handles=u32(OWNER_HANDLE)),
    ]
    for cmd in cases:
        same_rc(pair, cmd)
    assert same_rc(pair, evict_control_cmd(TPM_RH.PLATFORM, platform_obj, PLATFORM_HANDLE)) == 0
    assert same_rc(pair, evict_control_cmd(TPM_RH.OWNER, PLATFORM_HANDLE, PLATFORM_HANDLE)) != 0
    assert same_rc(pair, evict_control_cmd(TPM_RH.PLATFORM, OWNER_HANDLE, OWNER_HANDLE)) == 0
    assert same_rc(pair, evict_control_cmd(TPM_RH.PLATFORM, PLATFORM_HANDLE, PLATFORM_HANDLE)) == 0


def test_a_sequence_and_a_persistent_parent_match_libtpms(pair):
    sequence = command(TPM_CC.HashSequenceStart, tpm2b(b"") + u16(TPM_ALG.SHA256))
    theirs, mine = both(pair, sequence)
    assert theirs.rc == mine.rc == 0
    seq = int.from_bytes(mine.raw[10:14], "big")
    same_rc(pair, evict_control_cmd(TPM_RH.OWNER, seq, OWNER_HANDLE))
    flush(pair, seq)
    srk = primary(pair, rsa_template(attrs=STORAGE, bits=2048))
    assert same_rc(pair, evict_control_cmd(TPM_RH.OWNER, srk, OWNER_HANDLE)) == 0
    flush(pair, srk)
    # A child under the persistent parent: same response code; the layout differs only in key bytes.
    theirs, mine = both(pair, create_cmd(OWNER_HANDLE, symcipher_template()))
    assert theirs.rc == mine.rc == 0
    assert len(theirs.raw) == len(mine.raw)
