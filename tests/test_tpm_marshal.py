"""The marshalling layer: every declared structure round-trips, and every
bound check answers with the response code the specification names."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.tpm_strategies import values
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.commands import COMMANDS
from vtpm_cuse.tpm.constants import TPM_ALG
from vtpm_cuse.tpm.errors import TPM_RC, TpmError
from vtpm_cuse.tpm.marshal import TpmType


def declared_types() -> dict[str, TpmType]:
    found = {name: t for name, t in vars(T).items() if isinstance(t, TpmType)}
    for cmd in COMMANDS:
        found[cmd.params.name] = cmd.params
        found[cmd.response.name] = cmd.response
    return found


DECLARED = declared_types()


@pytest.mark.parametrize("name", sorted(DECLARED))
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_round_trip(name, data):
    t = DECLARED[name]
    value = data.draw(values(t))
    assert t.unpack(t.pack(value)) == value


@pytest.mark.parametrize("name", sorted(DECLARED))
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_truncation_is_insufficient(name, data):
    t = DECLARED[name]
    encoded = t.pack(data.draw(values(t)))
    if not encoded:
        return
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(TpmError) as err:
        t.unpack(encoded[:cut])
    # A cut inside a size-prefixed structure can also surface as a size mismatch.
    assert err.value.rc in (TPM_RC.INSUFFICIENT, TPM_RC.SIZE)


def test_trailing_bytes_are_size():
    with pytest.raises(TpmError) as err:
        T.TPM2B_DIGEST.unpack(b"\x00\x01\xaa\xbb")
    assert err.value.rc == TPM_RC.SIZE


@pytest.mark.parametrize(
    "t, data, rc",
    [
        (T.TPM2B_DIGEST, b"\x00\x41" + bytes(65), TPM_RC.SIZE),  # over sizeof(TPMU_HA)
        (T.TPML_PCR_SELECTION, b"\x00\x00\x00\x05", TPM_RC.SIZE),  # more banks than HASH_COUNT
        (T.TPMS_PCR_SELECTION, b"\x00\x0b\x04" + bytes(4), TPM_RC.VALUE),  # sizeofSelect > PCR_SELECT_MAX
        (T.TPMS_PCR_SELECTION, b"\x00\x99\x03" + bytes(3), TPM_RC.HASH),  # unknown hash
        (T.TPMI_ALG_HASH, b"\x00\x10", TPM_RC.HASH),  # NULL without "+"
        (T.TPMT_HA, b"\x00\x10", None),  # NULL allowed in TPMT_HA
        (T.TPMT_PUBLIC_PARMS, b"\x00\x99", TPM_RC.TYPE),
        (T.TPMT_SYM_DEF, b"\x00\x06\x00\x80\x00\x99", TPM_RC.MODE),
        (T.TPMT_SYM_DEF, b"\x00\x06\x00\x81\x00\x43", TPM_RC.VALUE),  # AES key bits 129
        (T.TPMS_AUTH_COMMAND, b"\x40\x00\x00\x09\x00\x00\x18\x00\x00", TPM_RC.RESERVED_BITS),
        (T.TPMS_ECC_PARMS, b"\x00\x10\x00\x10\x00\x99\x00\x10", TPM_RC.CURVE),
        (T.TPM2B_PUBLIC, b"\x00\x00", TPM_RC.SIZE),  # empty public area
        (T.TPMI_YES_NO, b"\x02", TPM_RC.VALUE),
    ],
)
def test_bound_checks(t, data, rc):
    if rc is None:
        assert t.unpack(data) is not None
        return
    with pytest.raises(TpmError) as err:
        t.unpack(data)
    assert err.value.rc == rc


def test_union_selector_without_member():
    union = T.TPMU_PUBLIC_ID
    with pytest.raises(TpmError) as err:
        union.member(TPM_ALG.SHA256)
    assert err.value.rc == TPM_RC.SELECTOR


def test_sized_struct_size_must_match_contents():
    point = T.TPMS_ECC_POINT(x=b"\x01", y=b"\x02")
    body = T.TPMS_ECC_POINT.pack(point)
    # Declared size one larger than the contents: the extra byte is not part of the point.
    with pytest.raises(TpmError) as err:
        T.TPM2B_ECC_POINT.unpack(len(body).to_bytes(2, "big")[:1] + bytes([len(body) + 1]) + body + b"\x00")
    assert err.value.rc == TPM_RC.SIZE


def test_struct_value_is_a_dataclass_with_named_fields():
    sel = T.TPMS_PCR_SELECTION(hash=TPM_ALG.SHA256, pcrSelect=b"\x00\x04\x00")
    assert T.TPMS_PCR_SELECTION.pack(sel) == bytes.fromhex("000b03000400")
    assert T.TPMS_PCR_SELECTION.unpack(bytes.fromhex("000b03000400")).pcrSelect == b"\x00\x04\x00"
