"""swtpm's blob header + TLV container: layout and bounds-checked parsing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vtpm_cuse.state.blobformat import (
    HEADER_SIZE,
    BlobFlag,
    Tag,
    Tlv,
    build_blob,
    decode_tlvs,
    encode_tlvs,
    find_tlv,
    parse_blob,
    require_tlv,
)
from vtpm_cuse.state.errors import PtmResult, StateError


def header(version=2, min_version=1, hdrsize=10, flags=0, totlen=None, body=b""):
    if totlen is None:
        totlen = HEADER_SIZE + len(body)
    return struct.pack(">BBHHI", version, min_version, hdrsize, flags, totlen) + body


def code_of(data: bytes) -> int:
    with pytest.raises(StateError) as info:
        parse_blob(data)
    return info.value.result_code


def test_numbers_match_swtpm():
    assert [
        int(f)
        for f in (
            BlobFlag.ENCRYPTED,
            BlobFlag.MIGRATION_ENCRYPTED,
            BlobFlag.MIGRATION_DATA,
            BlobFlag.ENCRYPTED_256BIT_KEY,
            BlobFlag.MIGRATION_256BIT_KEY,
        )
    ] == [1, 2, 4, 8, 0x10]
    assert [
        int(t)
        for t in (
            Tag.DATA,
            Tag.ENCRYPTED_DATA,
            Tag.HMAC,
            Tag.MIGRATION_DATA,
            Tag.ENCRYPTED_MIGRATION_DATA,
            Tag.IVEC_ENCRYPTED_DATA,
            Tag.IVEC_ENCRYPTED_MIGRATION_DATA,
        )
    ] == list(range(1, 8))


def test_exact_bytes_of_a_plain_state_file():
    blob = build_blob(BlobFlag.NONE, [Tlv(Tag.DATA, b"abc")])
    assert blob == bytes.fromhex("02 01 000a 0000 000000130001 00000003 616263")


def test_round_trip():
    tlvs = (Tlv(Tag.MIGRATION_DATA, encode_tlvs([Tlv(Tag.DATA, b"x" * 5000)])), Tlv(0x1234, b""))
    blob = build_blob(BlobFlag.MIGRATION_DATA | BlobFlag.ENCRYPTED, tlvs)
    parsed = parse_blob(blob)
    assert parsed.flags == BlobFlag.MIGRATION_DATA | BlobFlag.ENCRYPTED
    assert parsed.header.totlen == len(blob)
    assert parsed.tlvs == tlvs
    inner = decode_tlvs(find_tlv(parsed.tlvs, Tag.MIGRATION_DATA))
    assert inner == (Tlv(Tag.DATA, b"x" * 5000),)


def test_unknown_flag_bits_and_newer_versions_are_tolerated():
    # A newer writer that a version-2 reader may still read (min_version <= 2).
    parsed = parse_blob(header(version=3, min_version=2, flags=0x8001))
    assert int(parsed.flags) == 0x8001 and parsed.header.version == 3 and parsed.tlvs == ()


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", PtmResult.TPM_BAD_PARAMETER),
        (b"\x02\x01\x00\x0a\x00\x00\x00\x00\x0a", PtmResult.TPM_BAD_PARAMETER),  # 9 bytes
        (header(totlen=11), PtmResult.TPM_BAD_PARAMETER),  # totlen > size
        (header(totlen=9), PtmResult.TPM_BAD_PARAMETER),  # totlen < size
        (header(body=b"\x00\x01\x00\x00\x00\x00", totlen=10), PtmResult.TPM_BAD_PARAMETER),
        (header(min_version=3), PtmResult.TPM_BAD_VERSION),  # 0x2e
        (header(min_version=0xFF, version=0xFF), PtmResult.TPM_BAD_VERSION),
        (header(hdrsize=12), PtmResult.TPM_BAD_DATASIZE),  # 0x2b
        (header(hdrsize=8), PtmResult.TPM_BAD_DATASIZE),
        (header(version=1), PtmResult.TPM_BAD_VERSION),  # pre-TLV layout
    ],
)
def test_header_errors(data, code):
    assert code_of(data) == code


def test_header_checks_run_in_swtpm_order():
    assert code_of(header(min_version=3, totlen=99)) == PtmResult.TPM_BAD_PARAMETER
    assert code_of(header(min_version=3, hdrsize=12)) == PtmResult.TPM_BAD_VERSION


def test_exact_code_values():
    assert code_of(header(min_version=3)) == 0x2E
    assert code_of(header(hdrsize=11)) == 0x2B
    assert code_of(header(totlen=1)) == 0x03


@pytest.mark.parametrize(
    "body, message",
    [
        (b"\x00\x01\x00\x00", "truncated TLV header"),
        (b"\x00\x01\x00\x00\x00\x05abcd", "claims 5 bytes but only 4 remain"),
        (b"\x00\x01\xff\xff\xff\xff", "claims 4294967295 bytes"),
        (b"\x00\x01\x00\x00\x00\x01a\x00\x01\x00\x00\x00\x01b", "duplicate DATA"),
        (b"\x00\x01\x00\x00\x00\x00\x00", "truncated TLV header at offset 6"),
    ],
)
def test_tlv_errors_are_bad_parameter(body, message):
    with pytest.raises(StateError, match=message) as info:
        parse_blob(header(body=body))
    assert info.value.result_code == PtmResult.TPM_BAD_PARAMETER == 0x03


def test_missing_required_tlv_is_fail():
    with pytest.raises(StateError, match="no DATA") as info:
        require_tlv((Tlv(Tag.HMAC, b""),), Tag.DATA)
    assert info.value.result_code == PtmResult.TPM_FAIL


def test_tlv_repr_hides_data():
    assert "secret" not in repr(Tlv(Tag.DATA, b"secret"))
    assert repr(Tlv(Tag.DATA, b"secret")) == "Tlv(DATA(1), 6 bytes)"


def test_state_error_formatting():
    err = StateError(0x2B, "bad header size")
    assert err.result_code == PtmResult.TPM_BAD_DATASIZE
    assert str(err) == "bad header size (TPM result 0x2b)"
    assert StateError(0x1234, "odd").result_code == 0x1234


tlv_lists = st.lists(
    st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=64)),
    max_size=8,
    unique_by=lambda t: t[0],
).map(lambda items: tuple(Tlv(tag, data) for tag, data in items))


@given(tlvs=tlv_lists, flags=st.integers(0, 0xFFFF))
def test_round_trip_property(tlvs, flags):
    parsed = parse_blob(build_blob(BlobFlag(flags), tlvs))
    assert parsed.tlvs == tlvs
    assert int(parsed.flags) == flags


@given(st.binary(max_size=200))
def test_parser_only_ever_raises_state_error(data):
    try:
        parse_blob(data)
    except StateError as exc:
        assert exc.result_code in (PtmResult.TPM_BAD_PARAMETER, PtmResult.TPM_BAD_VERSION, PtmResult.TPM_BAD_DATASIZE)


@given(tlvs=tlv_lists, cut=st.integers(1, 50))
def test_any_truncation_is_detected(tlvs, cut):
    body = encode_tlvs(tlvs)
    if not body:
        return
    cut = min(cut, len(body))
    truncated = body[:-cut]
    try:
        decoded = decode_tlvs(truncated)
    except StateError as exc:
        assert exc.result_code == PtmResult.TPM_BAD_PARAMETER
    else:
        # Only possible when the cut removed exactly whole trailing TLVs.
        assert encode_tlvs(decoded) == truncated


def test_errors_survive_pickling():
    import pickle

    from vtpm_cuse.state.errors import StorageLockError

    err = pickle.loads(pickle.dumps(StateError(0x21, "bad")))
    assert (type(err), err.result_code, err.message) == (StateError, 0x21, "bad")
    err = pickle.loads(pickle.dumps(StorageLockError("busy", 0x1F)))
    assert (type(err), err.result_code, err.message) == (StorageLockError, 0x1F, "busy")
