"""AES-GCM sealing of state and migration layers."""

from __future__ import annotations

import copy
import os
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtpm_cuse.state.blobformat import BlobFlag, Tag, Tlv
from vtpm_cuse.state.crypto import (
    MIGRATION_LAYER,
    NONCE_SIZE,
    STATE_LAYER,
    StateKey,
    seal,
    unseal,
)
from vtpm_cuse.state.errors import PtmResult, StateError
from vtpm_cuse.state.kinds import StateKind

KEY128 = StateKey(bytes(range(16)))
KEY256 = StateKey(bytes(range(32)))
PLAIN = b"TPM permanent state " * 50


def error_code(fn, *args, **kwargs) -> int:
    with pytest.raises(StateError) as info:
        fn(*args, **kwargs)
    return info.value.result_code


def retag(tlvs, mapping):
    return tuple(Tlv(mapping.get(t.tag, t.tag), t.data) for t in tlvs)


def replace(tlvs, tag, data):
    return tuple(Tlv(t.tag, data if t.tag == tag else t.data) for t in tlvs)


@pytest.mark.parametrize("key", [KEY128, KEY256], ids=["aes128", "aes256"])
@pytest.mark.parametrize("layer", [STATE_LAYER, MIGRATION_LAYER], ids=["state", "migration"])
def test_round_trip_and_flags(key, layer):
    flags, tlvs = seal(key, layer, StateKind.PERMANENT, PLAIN)
    expected_flags = layer.encrypted_flag | (layer.key256_flag if key.size == 32 else 0)
    assert flags == expected_flags
    assert [t.tag for t in tlvs] == [layer.data_tag, layer.ivec_tag, Tag.VTPM_AEAD_SCHEME]
    ciphertext = tlvs[0].data
    assert len(ciphertext) == len(PLAIN) + 16 and PLAIN[:20] not in ciphertext
    assert len(tlvs[1].data) == NONCE_SIZE
    assert tlvs[2].data == b"\x01"
    assert unseal(key, layer, StateKind.PERMANENT, flags, tlvs) == PLAIN


def test_state_layer_uses_swtpm_flag_bits():
    flags, _ = seal(KEY256, STATE_LAYER, 1, b"")
    assert flags == BlobFlag.ENCRYPTED | BlobFlag.ENCRYPTED_256BIT_KEY == 0x09
    flags, _ = seal(KEY256, MIGRATION_LAYER, 1, b"")
    assert flags == BlobFlag.MIGRATION_ENCRYPTED | BlobFlag.MIGRATION_256BIT_KEY == 0x12
    flags, _ = seal(KEY128, STATE_LAYER, 1, b"")
    assert flags == BlobFlag.ENCRYPTED


def test_fresh_nonce_every_time():
    _, a = seal(KEY128, STATE_LAYER, 1, PLAIN)
    _, b = seal(KEY128, STATE_LAYER, 1, PLAIN)
    assert a[1].data != b[1].data and a[0].data != b[0].data


def test_wrong_key_is_decrypt_error():
    flags, tlvs = seal(KEY128, STATE_LAYER, 1, PLAIN)
    other = StateKey(b"\xff" * 16)
    assert error_code(unseal, other, STATE_LAYER, 1, flags, tlvs) == PtmResult.TPM_DECRYPT_ERROR == 0x21


@pytest.mark.parametrize("position", [0, 1, 100, -17, -1])
def test_tampered_ciphertext_or_tag_is_decrypt_error(position):
    flags, tlvs = seal(KEY256, STATE_LAYER, 1, PLAIN)
    ct = bytearray(tlvs[0].data)
    ct[position] ^= 0x01
    tampered = replace(tlvs, Tag.ENCRYPTED_DATA, bytes(ct))
    assert error_code(unseal, KEY256, STATE_LAYER, 1, flags, tampered) == PtmResult.TPM_DECRYPT_ERROR


@pytest.mark.parametrize("nonce", [b"\x00" * 12, b"\x00" * 11, b"\x00" * 16, b""])
def test_tampered_nonce_is_decrypt_error(nonce):
    flags, tlvs = seal(KEY128, STATE_LAYER, 1, PLAIN)
    tampered = replace(tlvs, Tag.IVEC_ENCRYPTED_DATA, nonce)
    assert error_code(unseal, KEY128, STATE_LAYER, 1, flags, tampered) == PtmResult.TPM_DECRYPT_ERROR


def test_truncated_ciphertext_is_decrypt_error():
    flags, tlvs = seal(KEY128, STATE_LAYER, 1, b"")
    for n in (0, 15):
        short = replace(tlvs, Tag.ENCRYPTED_DATA, tlvs[0].data[:n])
        assert error_code(unseal, KEY128, STATE_LAYER, 1, flags, short) == PtmResult.TPM_DECRYPT_ERROR


def test_ciphertext_is_bound_to_the_state_kind():
    flags, tlvs = seal(KEY128, STATE_LAYER, StateKind.VOLATILE, PLAIN)
    assert error_code(unseal, KEY128, STATE_LAYER, StateKind.PERMANENT, flags, tlvs) == 0x21


def test_ciphertext_is_bound_to_the_layer():
    """Moving a state-key ciphertext into the migration TLVs (same key) fails."""
    flags, tlvs = seal(KEY128, STATE_LAYER, 1, PLAIN)
    moved = retag(
        tlvs,
        {Tag.ENCRYPTED_DATA: Tag.ENCRYPTED_MIGRATION_DATA, Tag.IVEC_ENCRYPTED_DATA: Tag.IVEC_ENCRYPTED_MIGRATION_DATA},
    )
    assert error_code(unseal, KEY128, MIGRATION_LAYER, 1, BlobFlag.MIGRATION_ENCRYPTED, moved) == 0x21


def test_key_length_must_match_header_flag():
    flags, tlvs = seal(KEY256, STATE_LAYER, 1, PLAIN)
    assert error_code(unseal, KEY128, STATE_LAYER, 1, flags, tlvs) == PtmResult.TPM_BAD_KEY_PROPERTY == 0x28
    flags, tlvs = seal(KEY128, STATE_LAYER, 1, PLAIN)
    assert error_code(unseal, KEY256, STATE_LAYER, 1, flags, tlvs) == 0x28


def test_swtpm_cbc_hmac_data_is_refused_not_misread():
    # What swtpm writes: ENCRYPTED_DATA + HMAC + IVEC, no scheme TLV.
    swtpm_tlvs = (
        Tlv(Tag.ENCRYPTED_DATA, os.urandom(48)),
        Tlv(Tag.HMAC, os.urandom(32)),
        Tlv(Tag.IVEC_ENCRYPTED_DATA, os.urandom(16)),
    )
    with pytest.raises(StateError, match="swtpm's AES-CBC") as info:
        unseal(KEY128, STATE_LAYER, 1, BlobFlag.ENCRYPTED, swtpm_tlvs)
    assert info.value.result_code == PtmResult.TPM_BAD_MODE == 0x2C


def test_unknown_scheme_is_bad_mode():
    flags, tlvs = seal(KEY128, STATE_LAYER, 1, PLAIN)
    assert (
        error_code(unseal, KEY128, STATE_LAYER, 1, flags, replace(tlvs, Tag.VTPM_AEAD_SCHEME, b"\x02"))
        == PtmResult.TPM_BAD_MODE
    )
    no_scheme = tuple(t for t in tlvs if t.tag != Tag.VTPM_AEAD_SCHEME)
    assert error_code(unseal, KEY128, STATE_LAYER, 1, flags, no_scheme) == PtmResult.TPM_BAD_MODE


def test_missing_ciphertext_tlv_is_fail():
    flags, tlvs = seal(KEY128, STATE_LAYER, 1, PLAIN)
    assert error_code(unseal, KEY128, STATE_LAYER, 1, flags, tlvs[1:]) == PtmResult.TPM_FAIL


def test_state_key_hides_its_material():
    material = bytes.fromhex("00112233445566778899aabbccddeeff")
    key = StateKey(material)
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert "0011" not in text and "aabb" not in text
    assert repr(key) == "<StateKey AES-128-GCM>"
    assert key.bits == 128 and key.size == 16
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        copy.deepcopy(key)


def test_state_key_equality_and_sizes():
    assert StateKey(b"a" * 32) == StateKey(b"a" * 32)
    assert StateKey(b"a" * 32) != StateKey(b"b" * 32)
    assert StateKey(b"a" * 16) != StateKey(b"a" * 32)
    for bad in (b"", b"x" * 15, b"x" * 24, b"x" * 33):
        with pytest.raises(StateError) as info:
            StateKey(bad)
        assert info.value.result_code == PtmResult.TPM_BAD_KEY_PROPERTY


@settings(max_examples=50)
@given(plain=st.binary(max_size=2048), kind=st.sampled_from(list(StateKind)), big=st.booleans())
def test_round_trip_property(plain, kind, big):
    key = KEY256 if big else KEY128
    flags, tlvs = seal(key, MIGRATION_LAYER, kind, plain)
    assert unseal(key, MIGRATION_LAYER, kind, flags, tlvs) == plain
