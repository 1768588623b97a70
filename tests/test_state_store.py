"""DirectoryStore: state files, encryption, backup and GET/SET_STATEBLOB blobs."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtpm_cuse.state import DirectoryStore, PtmConfigFlag, StateError, StateKey, StateKind
from vtpm_cuse.state.blobformat import BlobFlag, Tag, Tlv, build_blob, decode_tlvs, parse_blob
from vtpm_cuse.state.errors import PtmResult

FILE_KEY = StateKey(bytes.fromhex("1234567890abcdef1234567890abcdef"))
FILE_KEY_256 = StateKey(bytes(range(32)))
MIG_KEY = StateKey(bytes(range(100, 132)))
MIG_KEY_128 = StateKey(bytes(range(200, 216)))
OTHER_KEY = StateKey(b"\x55" * 16)
SECRET = b"EK seed and SRK: very secret permanent state " * 20


def code(fn, *args, **kwargs) -> int:
    with pytest.raises(StateError) as info:
        fn(*args, **kwargs)
    return info.value.result_code


def snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    """Contents, mtime and mode of every file, to prove nothing changed."""
    out = {}
    for name in sorted(os.listdir(directory)):
        st_ = os.stat(directory / name)
        out[name] = ((directory / name).read_bytes(), st_.st_mtime_ns, st_.st_mode)
    return out


@pytest.fixture
def plain(tmp_path) -> DirectoryStore:
    with DirectoryStore(tmp_path) as store:
        yield store


@pytest.fixture
def encrypted(tmp_path) -> DirectoryStore:
    with DirectoryStore(tmp_path, file_key=FILE_KEY) as store:
        yield store


# -- files -------------------------------------------------------------------------


def test_file_names(plain, tmp_path):
    assert plain.path_for(StateKind.PERMANENT) == tmp_path / "tpm2-00.permall"
    assert plain.path_for(2) == tmp_path / "tpm2-00.volatilestate"
    assert plain.path_for(StateKind.SAVESTATE) == tmp_path / "tpm2-00.savestate"


@pytest.mark.parametrize("kind", list(StateKind))
def test_plain_round_trip_and_layout(plain, kind):
    assert plain.load(kind) is None and not plain.exists(kind)
    plain.store(kind, b"state")
    assert plain.exists(kind) and plain.load(kind) == b"state"
    # header(flags 0) + TLV(DATA) exactly as swtpm writes an unencrypted file
    assert plain.path_for(kind).read_bytes() == bytes.fromhex("02 01 000a 0000 000000150001 00000005") + b"state"


def test_store_replaces_and_delete(plain):
    plain.store(StateKind.VOLATILE, b"one")
    plain.store(StateKind.VOLATILE, b"two")
    assert plain.load(StateKind.VOLATILE) == b"two"
    assert plain.delete(StateKind.VOLATILE) is True
    assert plain.delete(StateKind.VOLATILE) is False
    assert plain.load(StateKind.VOLATILE) is None


def test_empty_state(plain):
    plain.store(StateKind.SAVESTATE, b"")
    assert plain.load(StateKind.SAVESTATE) == b""


def test_only_expected_files(plain, tmp_path):
    for kind in StateKind:
        plain.store(kind, b"x")
    assert sorted(os.listdir(tmp_path)) == [".lock", "tpm2-00.permall", "tpm2-00.savestate", "tpm2-00.volatilestate"]


@pytest.mark.parametrize("mask", [0o000, 0o022])
def test_files_are_0600_by_default(tmp_path, mask):
    previous = os.umask(mask)
    try:
        store = DirectoryStore(tmp_path, file_key=FILE_KEY)
        for kind in StateKind:
            store.store(kind, b"x")
            assert stat.S_IMODE(os.stat(store.path_for(kind)).st_mode) == 0o600
    finally:
        os.umask(previous)


def test_configured_mode(tmp_path):
    store = DirectoryStore(tmp_path, mode=0o640)
    store.store(StateKind.PERMANENT, b"x")
    assert stat.S_IMODE(os.stat(store.path_for(1)).st_mode) == 0o640


def test_unknown_kind_is_bad_parameter(plain):
    assert code(plain.load, 4) == PtmResult.TPM_BAD_PARAMETER
    assert code(plain.get_blob, 0, False) == PtmResult.TPM_BAD_PARAMETER
    assert code(plain.check_blob, 9, b"", False) == PtmResult.TPM_BAD_PARAMETER


def test_store_takes_the_lock(plain):
    assert not plain.locked
    plain.store(StateKind.PERMANENT, b"x")
    assert plain.locked
    plain.unlock()
    assert not plain.locked
    assert plain.load(StateKind.PERMANENT) == b"x"  # reading needs no lock
    assert not plain.locked


def test_unwritable_directory_is_fail(tmp_path):
    store = DirectoryStore(tmp_path / "missing", lock=False)
    assert code(store.store, StateKind.PERMANENT, b"x") == PtmResult.TPM_FAIL


def test_directory_in_place_of_file_is_fail(plain):
    plain.path_for(StateKind.PERMANENT).mkdir()
    assert code(plain.load, StateKind.PERMANENT) == PtmResult.TPM_FAIL


@pytest.mark.parametrize(
    "contents, result",
    [
        (b"", PtmResult.TPM_BAD_PARAMETER),
        (b"garbage that is no header at all", PtmResult.TPM_BAD_PARAMETER),
        (bytes.fromhex("02 03 000a 0000 0000000a"), PtmResult.TPM_BAD_VERSION),
        (bytes.fromhex("02 01 000c 0000 0000000a"), PtmResult.TPM_BAD_DATASIZE),
        (bytes.fromhex("02 01 000a 0000 0000000a"), PtmResult.TPM_FAIL),  # no DATA TLV
    ],
)
def test_damaged_files(plain, contents, result):
    plain.path_for(StateKind.PERMANENT).write_bytes(contents)
    assert code(plain.load, StateKind.PERMANENT) == result


# -- encryption ------------------------------------------------------------------------


@pytest.mark.parametrize("key, flags", [(FILE_KEY, 0x01), (FILE_KEY_256, 0x09)])
def test_encrypted_round_trip(tmp_path, key, flags):
    store = DirectoryStore(tmp_path, file_key=key)
    store.store(StateKind.PERMANENT, SECRET)
    raw = store.path_for(StateKind.PERMANENT).read_bytes()
    parsed = parse_blob(raw)
    assert int(parsed.flags) == flags
    assert {t.tag for t in parsed.tlvs} == {Tag.ENCRYPTED_DATA, Tag.IVEC_ENCRYPTED_DATA, Tag.VTPM_AEAD_SCHEME}
    assert SECRET[:16] not in raw
    assert store.load(StateKind.PERMANENT) == SECRET
    assert DirectoryStore(tmp_path, file_key=key, lock=False).load(1) == SECRET


def test_wrong_key_is_0x21_and_touches_nothing(encrypted, tmp_path):
    encrypted.store(StateKind.PERMANENT, SECRET)
    encrypted.store(StateKind.VOLATILE, b"volatile")
    encrypted.unlock()
    before = snapshot(tmp_path)

    wrong = DirectoryStore(tmp_path, file_key=OTHER_KEY)
    for kind in (StateKind.PERMANENT, StateKind.VOLATILE):
        assert code(wrong.load, kind) == PtmResult.TPM_DECRYPT_ERROR == 0x21
        assert code(wrong.get_blob, kind, True) == 0x21
        assert code(wrong.get_blob, kind, False) == 0x21
    assert not wrong.locked
    assert snapshot(tmp_path) == before


def test_wrong_key_with_backup_touches_nothing(tmp_path):
    store = DirectoryStore(tmp_path, file_key=FILE_KEY, backup=True)
    store.store(StateKind.PERMANENT, b"v1")
    store.store(StateKind.PERMANENT, b"v2")
    store.unlock()
    before = snapshot(tmp_path)
    wrong = DirectoryStore(tmp_path, file_key=OTHER_KEY, backup=True)
    assert code(wrong.load, StateKind.PERMANENT) == 0x21
    assert snapshot(tmp_path) == before


def test_tampered_file_is_0x21(encrypted):
    encrypted.store(StateKind.PERMANENT, SECRET)
    path = encrypted.path_for(StateKind.PERMANENT)
    raw = bytearray(path.read_bytes())
    raw[40] ^= 0x80  # inside the ciphertext
    path.write_bytes(bytes(raw))
    assert code(encrypted.load, StateKind.PERMANENT) == PtmResult.TPM_DECRYPT_ERROR


def test_swapped_files_are_0x21(encrypted):
    """The kind is authenticated: a volatile file renamed to permall fails."""
    encrypted.store(StateKind.VOLATILE, b"volatile")
    os.replace(encrypted.path_for(StateKind.VOLATILE), encrypted.path_for(StateKind.PERMANENT))
    assert code(encrypted.load, StateKind.PERMANENT) == PtmResult.TPM_DECRYPT_ERROR


def test_encrypted_file_without_key_is_keynotfound(encrypted, tmp_path):
    encrypted.store(StateKind.PERMANENT, SECRET)
    assert code(DirectoryStore(tmp_path).load, StateKind.PERMANENT) == PtmResult.TPM_KEYNOTFOUND == 0x0D


def test_plain_file_with_key_configured_is_refused(plain, tmp_path):
    plain.store(StateKind.PERMANENT, SECRET)
    plain.unlock()
    with pytest.raises(StateError, match="not encrypted") as info:
        DirectoryStore(tmp_path, file_key=FILE_KEY).load(StateKind.PERMANENT)
    assert info.value.result_code == PtmResult.TPM_DECRYPT_ERROR


def test_key_size_mismatch_is_0x28(tmp_path):
    DirectoryStore(tmp_path, file_key=FILE_KEY_256, lock=False).store(1, SECRET)
    store = DirectoryStore(tmp_path, file_key=FILE_KEY, lock=False)
    assert code(store.load, 1) == PtmResult.TPM_BAD_KEY_PROPERTY == 0x28


def test_repr_hides_keys(tmp_path):
    text = repr(DirectoryStore(tmp_path, file_key=FILE_KEY, migration_key=MIG_KEY))
    assert "1234567890" not in text and "AES-128-GCM" in text and "AES-256-GCM" in text


def test_config_flags(tmp_path):
    assert DirectoryStore(tmp_path).config_flags == PtmConfigFlag(0)
    file_only = DirectoryStore(tmp_path, file_key=FILE_KEY)
    assert file_only.config_flags == PtmConfigFlag.PTM_CONFIG_FLAG_FILE_KEY == 1
    migration_only = DirectoryStore(tmp_path, migration_key=MIG_KEY)
    assert migration_only.config_flags == PtmConfigFlag.PTM_CONFIG_FLAG_MIGRATION_KEY == 2
    assert DirectoryStore(tmp_path, file_key=FILE_KEY, migration_key=MIG_KEY).config_flags == 3


# -- backup ------------------------------------------------------------------------------


def test_backup_keeps_previous_permanent_state(tmp_path):
    store = DirectoryStore(tmp_path, backup=True)
    store.store(StateKind.PERMANENT, b"v1")
    assert not (tmp_path / "tpm2-00.permall.bak").exists()
    store.store(StateKind.PERMANENT, b"v2")
    bak = tmp_path / "tpm2-00.permall.bak"
    assert bak.read_bytes() == DirectoryStore(tmp_path, lock=False)._encode_file(1, b"v1")
    assert stat.S_IMODE(bak.stat().st_mode) == 0o600
    store.store(StateKind.VOLATILE, b"vol")
    assert sorted(os.listdir(tmp_path)) == [".lock", "tpm2-00.permall", "tpm2-00.permall.bak", "tpm2-00.volatilestate"]


@pytest.mark.parametrize("key", [None, FILE_KEY])
def test_damaged_permanent_state_is_restored_from_backup(tmp_path, key):
    store = DirectoryStore(tmp_path, backup=True, file_key=key)
    store.store(StateKind.PERMANENT, b"v1")
    store.store(StateKind.PERMANENT, b"v2")
    path = store.path_for(StateKind.PERMANENT)
    path.write_bytes(path.read_bytes()[:-3])  # truncated -> header totlen mismatch
    assert store.load(StateKind.PERMANENT) == b"v1"
    assert store.load(StateKind.PERMANENT) == b"v1"  # the file itself was repaired
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_without_backup_option_damage_is_reported(tmp_path):
    DirectoryStore(tmp_path, backup=True, lock=False).store(1, b"v1")
    DirectoryStore(tmp_path, backup=True, lock=False).store(1, b"v2")
    path = tmp_path / "tpm2-00.permall"
    path.write_bytes(b"broken")
    assert code(DirectoryStore(tmp_path, lock=False).load, 1) == PtmResult.TPM_BAD_PARAMETER
    assert path.read_bytes() == b"broken"  # no restore without the option


def test_damaged_backup_does_not_mask_the_error(tmp_path):
    store = DirectoryStore(tmp_path, backup=True)
    store.store(1, b"v1")
    store.store(1, b"v2")
    (tmp_path / "tpm2-00.permall").write_bytes(b"broken")
    (tmp_path / "tpm2-00.permall.bak").write_bytes(b"also broken")
    assert code(store.load, 1) == PtmResult.TPM_BAD_PARAMETER


# -- GET/SET_STATEBLOB ------------------------------------------------------------------


def unwrap_plain_blob(blob: bytes) -> bytes:
    parsed = parse_blob(blob)
    inner = decode_tlvs(dict((t.tag, t.data) for t in parsed.tlvs)[Tag.MIGRATION_DATA])
    return dict((t.tag, t.data) for t in inner)[Tag.DATA]


def test_blob_without_keys_has_swtpm_layout(plain):
    plain.store(StateKind.PERMANENT, b"abc")
    blob, encrypted = plain.get_blob(StateKind.PERMANENT, decrypt=False)
    assert encrypted is False
    assert (
        blob
        == bytes.fromhex(
            "02 01 000a 0004 00000019"  # header, flags MIGRATION_DATA, totlen 25
            "0004 00000009"  # TLV(MIGRATION_DATA, 9)
            "0001 00000003"
        )
        + b"abc"
    )  #   TLV(DATA, 3) "abc"
    assert plain.check_blob(StateKind.PERMANENT, blob, encrypted) == b"abc"


@pytest.mark.parametrize("kind", list(StateKind))
@pytest.mark.parametrize("decrypt", [False, True])
def test_round_trip_without_keys(plain, tmp_path, kind, decrypt):
    plain.store(kind, SECRET)
    blob, encrypted = plain.get_blob(kind, decrypt)
    assert not encrypted
    target = DirectoryStore(tmp_path, lock=False)  # check_blob touches no file
    assert target.check_blob(kind, blob, encrypted) == SECRET


def test_missing_state_is_retry(plain):
    assert code(plain.get_blob, StateKind.SAVESTATE, True) == PtmResult.TPM_RETRY == 0x800


def test_file_key_blob_stays_encrypted_unless_decrypted(tmp_path):
    store = DirectoryStore(tmp_path, file_key=FILE_KEY_256)
    store.store(StateKind.PERMANENT, SECRET)

    blob, encrypted = store.get_blob(StateKind.PERMANENT, decrypt=False)
    assert encrypted is True
    flags = parse_blob(blob).flags
    assert flags == BlobFlag.MIGRATION_DATA | BlobFlag.ENCRYPTED | BlobFlag.ENCRYPTED_256BIT_KEY
    assert SECRET[:16] not in blob
    assert store.check_blob(StateKind.PERMANENT, blob, encrypted) == SECRET
    # a destination without the state key cannot use it
    assert code(DirectoryStore(tmp_path, lock=False).check_blob, 1, blob, True) == PtmResult.TPM_KEYNOTFOUND
    # ... nor one with another key
    other = DirectoryStore(tmp_path, lock=False, file_key=StateKey(b"\x01" * 32))
    assert code(other.check_blob, 1, blob, True) == PtmResult.TPM_DECRYPT_ERROR

    blob, encrypted = store.get_blob(StateKind.PERMANENT, decrypt=True)
    assert encrypted is False
    assert parse_blob(blob).flags == BlobFlag.MIGRATION_DATA
    assert unwrap_plain_blob(blob) == SECRET
    # decrypted blobs go anywhere, with or without a state key
    assert DirectoryStore(tmp_path, lock=False).check_blob(1, blob, False) == SECRET
    assert store.check_blob(1, blob, False) == SECRET


def test_header_flag_alone_marks_state_encryption(tmp_path):
    """The ENCRYPTED header flag counts even if the request flag is clear."""
    store = DirectoryStore(tmp_path, file_key=FILE_KEY)
    store.store(1, SECRET)
    blob, _ = store.get_blob(1, decrypt=False)
    assert store.check_blob(1, blob, False) == SECRET


@pytest.mark.parametrize("mig, flags", [(MIG_KEY, 0x04 | 0x02 | 0x10), (MIG_KEY_128, 0x04 | 0x02)])
def test_migration_key_round_trip(tmp_path, mig, flags):
    (tmp_path / "src").mkdir()
    src = DirectoryStore(tmp_path / "src", migration_key=mig)
    src.store(StateKind.VOLATILE, SECRET)
    blob, encrypted = src.get_blob(StateKind.VOLATILE, decrypt=True)
    assert encrypted is False
    parsed = parse_blob(blob)
    assert int(parsed.flags) == flags
    assert {t.tag for t in parsed.tlvs} == {
        Tag.ENCRYPTED_MIGRATION_DATA,
        Tag.IVEC_ENCRYPTED_MIGRATION_DATA,
        Tag.VTPM_AEAD_SCHEME,
    }
    assert SECRET[:16] not in blob

    (tmp_path / "dst").mkdir()
    dst = DirectoryStore(tmp_path / "dst", migration_key=mig)
    assert dst.check_blob(StateKind.VOLATILE, blob, encrypted) == SECRET
    # without the migration key: 0x0d; with another one: 0x21
    assert code(DirectoryStore(tmp_path / "dst").check_blob, 2, blob, False) == PtmResult.TPM_KEYNOTFOUND
    assert (
        code(DirectoryStore(tmp_path / "dst", migration_key=StateKey(b"\x09" * mig.size)).check_blob, 2, blob, False)
        == PtmResult.TPM_DECRYPT_ERROR
    )
    # the migration layer authenticates the kind too
    assert code(dst.check_blob, StateKind.PERMANENT, blob, False) == PtmResult.TPM_DECRYPT_ERROR


def test_both_keys(tmp_path):
    store = DirectoryStore(tmp_path, file_key=FILE_KEY, migration_key=MIG_KEY)
    store.store(StateKind.PERMANENT, SECRET)
    blob, encrypted = store.get_blob(StateKind.PERMANENT, decrypt=False)
    assert encrypted is True
    assert parse_blob(blob).flags == (
        BlobFlag.MIGRATION_DATA | BlobFlag.ENCRYPTED | BlobFlag.MIGRATION_ENCRYPTED | BlobFlag.MIGRATION_256BIT_KEY
    )
    assert store.check_blob(StateKind.PERMANENT, blob, encrypted) == SECRET
    only_mig = DirectoryStore(tmp_path, migration_key=MIG_KEY, lock=False)
    assert code(only_mig.check_blob, 1, blob, True) == PtmResult.TPM_KEYNOTFOUND
    only_file = DirectoryStore(tmp_path, file_key=FILE_KEY, lock=False)
    assert code(only_file.check_blob, 1, blob, True) == PtmResult.TPM_KEYNOTFOUND


def test_unencrypted_blob_accepted_with_migration_key(plain, tmp_path):
    """swtpm's "upgrade to encryption": plain blobs are accepted anyway."""
    plain.store(1, SECRET)
    blob, encrypted = plain.get_blob(1, False)
    assert (
        DirectoryStore(tmp_path, migration_key=MIG_KEY, file_key=FILE_KEY, lock=False).check_blob(1, blob, encrypted)
        == SECRET
    )


def test_tampered_migration_blob_is_0x21(tmp_path):
    store = DirectoryStore(tmp_path, migration_key=MIG_KEY)
    store.store(1, SECRET)
    blob = bytearray(store.get_blob(1, True)[0])
    blob[30] ^= 1
    assert code(store.check_blob, 1, bytes(blob), False) == PtmResult.TPM_DECRYPT_ERROR


def test_empty_and_header_only_blobs_mean_empty_state(plain):
    assert plain.check_blob(StateKind.VOLATILE, b"", False) == b""
    assert plain.check_blob(StateKind.VOLATILE, build_blob(BlobFlag.MIGRATION_DATA, []), False) == b""


@pytest.mark.parametrize(
    "blob, result",
    [
        (bytes.fromhex("02 03 000a 0004 0000000b 00"), PtmResult.TPM_BAD_VERSION),
        (bytes.fromhex("02 01 000b 0004 0000000b 00"), PtmResult.TPM_BAD_DATASIZE),
        (bytes.fromhex("02 01 000a 0004 000000ff 00"), PtmResult.TPM_BAD_PARAMETER),
        (bytes.fromhex("02 01 000a 0004 00000010 0004 00000009"), PtmResult.TPM_BAD_PARAMETER),
        (b"\x02\x01", PtmResult.TPM_BAD_PARAMETER),
    ],
)
def test_bad_blob_headers(plain, blob, result):
    assert code(plain.check_blob, StateKind.PERMANENT, blob, False) == result


def test_state_file_is_not_a_blob(plain):
    plain.store(1, b"x")
    raw = plain.path_for(1).read_bytes()
    with pytest.raises(StateError, match="no MIGRATION_DATA") as info:
        plain.check_blob(1, raw, False)
    assert info.value.result_code == PtmResult.TPM_FAIL


def test_encrypted_request_flag_on_plain_blob(encrypted, tmp_path):
    blob = build_blob(BlobFlag.MIGRATION_DATA, [Tlv(Tag.MIGRATION_DATA, Tlv(Tag.DATA, b"x").pack())])
    assert code(encrypted.check_blob, 1, blob, True) == PtmResult.TPM_FAIL
    assert code(DirectoryStore(tmp_path, lock=False).check_blob, 1, blob, True) == PtmResult.TPM_KEYNOTFOUND


def test_check_blob_writes_nothing(tmp_path):
    store = DirectoryStore(tmp_path, migration_key=MIG_KEY)
    blob, _ = store.make_blob(StateKind.PERMANENT, SECRET, decrypt=True)
    assert store.check_blob(StateKind.PERMANENT, blob, False) == SECRET
    assert os.listdir(tmp_path) == []
    assert not store.locked


@settings(max_examples=30, deadline=None)
@given(
    data=st.binary(max_size=4096),
    kind=st.sampled_from(list(StateKind)),
    file_key=st.sampled_from([None, FILE_KEY, FILE_KEY_256]),
    migration_key=st.sampled_from([None, MIG_KEY, MIG_KEY_128]),
    decrypt=st.booleans(),
)
def test_store_and_blob_round_trip_property(data, kind, file_key, migration_key, decrypt):
    with tempfile.TemporaryDirectory() as d:
        with DirectoryStore(d, file_key=file_key, migration_key=migration_key) as store:
            store.store(kind, data)
            assert store.load(kind) == data
            blob, encrypted = store.get_blob(kind, decrypt)
            assert encrypted == (file_key is not None and not decrypt)
            assert store.check_blob(kind, blob, encrypted) == data
