"""--key / --migration-key values: every accepted form and the errors."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from vtpm_cuse.state import KeyOptionError, StateKey, load_key_option, parse_key_option
from vtpm_cuse.state.keyoption import Kdf, KeyFormat, KeyMode, KeySource

HEX128 = "1234567890abcdef1234567890abcdef"  # the key swtpm's own tests use
HEX256 = "00112233445566778899aabbccddeeffffeeddccbbaa99887766554433221100"


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def pipe_with(data: bytes) -> int:
    """A read fd delivering ``data`` then EOF."""
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return r


def fd_is_closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False


# -- parsing ----------------------------------------------------------------


def test_defaults():
    opt = parse_key_option("file=/k")
    assert opt.source is KeySource.FILE and opt.location == "/k"
    assert opt.mode is KeyMode.AES_128_CBC and opt.mode.key_size == 16
    assert opt.format is KeyFormat.HEX and opt.kdf is Kdf.PBKDF2 and opt.remove is False


def test_all_fields():
    opt = parse_key_option("pwdfd=7,mode=aes-256-gcm,kdf=sha512,remove")
    assert (opt.source, opt.location, opt.mode, opt.kdf, opt.remove) == (
        KeySource.PWDFD,
        7,
        KeyMode.AES_256_GCM,
        Kdf.SHA512,
        True,
    )


@pytest.mark.parametrize(
    "mode, size", [("aes-cbc", 16), ("aes-128-cbc", 16), ("aes-256-cbc", 32), ("aes-128-gcm", 16), ("aes-256-gcm", 32)]
)
def test_mode_names_select_key_size(mode, size):
    assert parse_key_option(f"file=/k,mode={mode}").mode.key_size == size


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("", "one of file=, fd=, pwdfile= or pwdfd= is required"),
        ("mode=aes-cbc", "is required"),
        ("file=/a,pwdfile=/b", "not file= and pwdfile="),
        ("file=/a,fd=3", "not file= and fd="),
        ("file=/a,colour=blue", "unknown option 'colour=blue'"),
        ("file=/a,mode=aes-192-cbc", "unknown mode='aes-192-cbc'"),
        ("file=/a,mode=des", "unknown mode='des'"),
        ("file=/a,format=base64", "unknown format='base64'"),
        ("pwdfile=/a,kdf=scrypt", "unknown kdf='scrypt'"),
        ("file=/a,kdf=sha512", "kdf= applies to pwdfile=/pwdfd=, not file="),
        ("pwdfile=/a,format=hex", "format= applies to file=/fd= keys, not pwdfile="),
        ("fd=abc", "fd='abc' is not a file descriptor number"),
        ("fd=-1", "fd='-1' is not a file descriptor number"),
        ("file=/a,remove=maybe", "remove='maybe' is not a boolean"),
        ("file=", "empty value in 'file='"),
        ("file", "file needs a value"),
        ("file=/a,file=/b", "'file' given more than once"),
    ],
)
def test_bad_options(value, fragment):
    with pytest.raises(KeyOptionError) as info:
        parse_key_option(value)
    message = str(info.value)
    assert fragment in message
    assert message.startswith("--key: ") and "\n" not in message


def test_option_name_in_messages():
    with pytest.raises(KeyOptionError, match="^--migration-key: unknown mode"):
        parse_key_option("file=/a,mode=x", "--migration-key")


@pytest.mark.parametrize("value", ["file=/a,remove", "file=/a,remove=true", "file=/a,remove=TRUE", "file=/a,remove=1"])
def test_remove_true_spellings(value):
    assert parse_key_option(value).remove is True


def test_remove_false():
    assert parse_key_option("file=/a,remove=false").remove is False


# -- hex key files ------------------------------------------------------------


@pytest.mark.parametrize(
    "content", [HEX128, "0x" + HEX128, HEX128 + "\n", "0x" + HEX128.upper() + "\r\n", HEX128 + "  \n\n"]
)
def test_hex_128(tmp_path, content):
    path = write(tmp_path / "key", content)
    assert load_key_option(f"file={path}") == StateKey(bytes.fromhex(HEX128))


@pytest.mark.parametrize("content", [HEX256, "0x" + HEX256 + "\n"])
def test_hex_256(tmp_path, content):
    path = write(tmp_path / "key", content)
    for mode in ("aes-256-cbc", "aes-256-gcm"):
        key = load_key_option(f"file={path},mode={mode},format=hex")
        assert key == StateKey(bytes.fromhex(HEX256)) and key.bits == 256


@pytest.mark.parametrize(
    "content, mode, fragment",
    [
        (HEX256, "aes-cbc", "has 64 digits; mode=aes-cbc needs 32"),
        (HEX128, "aes-256-cbc", "has 32 digits; mode=aes-256-cbc needs 64"),
        (HEX128[:-1], "aes-cbc", "has 31 digits"),
        (HEX128 + "0", "aes-cbc", "has 33 digits"),
        ("0x", "aes-cbc", "not a hex key"),
        ("", "aes-cbc", "not a hex key"),
        ("\n", "aes-cbc", "not a hex key"),
        (HEX128[:-1] + "g", "aes-cbc", "not a hex key"),
        (" " + HEX128, "aes-cbc", "not a hex key"),
        ("0X" + HEX128, "aes-cbc", "not a hex key"),
        (HEX128 + "\nsecond line", "aes-cbc", "unexpected text after the hex key"),
    ],
)
def test_hex_errors(tmp_path, content, mode, fragment):
    path = write(tmp_path / "key", content)
    with pytest.raises(KeyOptionError, match=fragment) as info:
        load_key_option(f"file={path},mode={mode}")
    assert str(path) in str(info.value)


def test_hex_error_does_not_echo_the_key(tmp_path):
    path = write(tmp_path / "key", HEX256)
    with pytest.raises(KeyOptionError) as info:
        load_key_option(f"file={path}")  # 64 digits for a 128-bit mode
    assert HEX256[:8] not in str(info.value)


# -- binary key files ---------------------------------------------------------


def test_binary_128(tmp_path):
    raw = bytes.fromhex(HEX128)
    path = write(tmp_path / "bin", raw)
    assert load_key_option(f"file={path},format=binary") == StateKey(raw)


def test_binary_256(tmp_path):
    raw = os.urandom(32)
    path = write(tmp_path / "bin", raw)
    key = load_key_option(f"file={path},format=binary,mode=aes-256-cbc")
    assert key == StateKey(raw) and key.bits == 256


def test_binary_16_bytes_with_256_bit_mode_gives_aes128(tmp_path):
    raw = os.urandom(16)
    path = write(tmp_path / "bin", raw)
    key = load_key_option(f"file={path},format=binary,mode=aes-256-gcm")
    assert key == StateKey(raw) and key.bits == 128


@pytest.mark.parametrize(
    "size, mode",
    [(32, "aes-cbc"), (0, "aes-cbc"), (15, "aes-cbc"), (20, "aes-256-cbc"), (33, "aes-256-cbc"), (5000, "aes-256-cbc")],
)
def test_binary_bad_sizes(tmp_path, size, mode):
    path = write(tmp_path / "bin", b"k" * size)
    with pytest.raises(KeyOptionError) as info:
        load_key_option(f"file={path},format=binary,mode={mode}")
    assert str(path) in str(info.value)


# -- passphrases ---------------------------------------------------------------


@pytest.mark.parametrize("mode, size", [("aes-cbc", 16), ("aes-256-cbc", 32), ("aes-256-gcm", 32)])
def test_pwdfile_pbkdf2_default(tmp_path, mode, size):
    passphrase = b"correct horse battery staple\n"
    path = write(tmp_path / "pwd", passphrase)
    expected = hashlib.pbkdf2_hmac("sha512", passphrase, b"swtpm", 1000, size)
    assert load_key_option(f"pwdfile={path},mode={mode}") == StateKey(expected)
    assert load_key_option(f"pwdfile={path},mode={mode},kdf=pbkdf2") == StateKey(expected)


def test_pbkdf2_known_vector(tmp_path):
    """A fixed vector, so a change of salt/iterations/hash is noticed even if
    the test's own hashlib call were changed in the same way."""
    path = write(tmp_path / "pwd", b"password")
    expected = hashlib.pbkdf2_hmac("sha512", b"password", b"swtpm", 1000, 16)
    assert expected.hex() == "e7e0e1e00b313f678bfda581bf72a7e2"
    assert load_key_option(f"pwdfile={path}") == StateKey(expected)
    # The widely published PBKDF2-HMAC-SHA512("password", "salt", c=1) vector,
    # checking that hashlib is the primitive we think it is.
    assert hashlib.pbkdf2_hmac("sha512", b"password", b"salt", 1, 16).hex() == "867f70cf1ade02cff3752599a3a53dc4"


@pytest.mark.parametrize("mode, size", [("aes-cbc", 16), ("aes-256-cbc", 32)])
def test_pwdfile_sha512(tmp_path, mode, size):
    passphrase = b"secret\n"
    path = write(tmp_path / "pwd", passphrase)
    expected = hashlib.sha512(passphrase).digest()[:size]
    assert load_key_option(f"pwdfile={path},kdf=sha512,mode={mode}") == StateKey(expected)


def test_trailing_newline_is_part_of_the_passphrase(tmp_path):
    a = load_key_option(f"pwdfile={write(tmp_path / 'a', 'secret')}")
    b = load_key_option(f"pwdfile={write(tmp_path / 'b', 'secret' + chr(10))}")
    assert a != b


def test_long_passphrase(tmp_path):
    passphrase = os.urandom(100_000)
    path = write(tmp_path / "pwd", passphrase)
    expected = hashlib.sha512(passphrase).digest()[:16]
    assert load_key_option(f"pwdfile={path},kdf=sha512") == StateKey(expected)


def test_empty_passphrase_refused(tmp_path):
    path = write(tmp_path / "pwd", b"")
    with pytest.raises(KeyOptionError, match="passphrase is empty"):
        load_key_option(f"pwdfile={path}")


# -- descriptors ----------------------------------------------------------------


def test_fd_hex():
    fd = pipe_with(HEX128.encode() + b"\n")
    assert load_key_option(f"fd={fd}") == StateKey(bytes.fromhex(HEX128))
    assert fd_is_closed(fd)


def test_fd_binary_256():
    raw = os.urandom(32)
    fd = pipe_with(raw)
    assert load_key_option(f"fd={fd},format=binary,mode=aes-256-cbc") == StateKey(raw)
    assert fd_is_closed(fd)


def test_pwdfd_pbkdf2():
    fd = pipe_with(b"pass phrase")
    expected = hashlib.pbkdf2_hmac("sha512", b"pass phrase", b"swtpm", 1000, 32)
    assert load_key_option(f"pwdfd={fd},mode=aes-256-cbc") == StateKey(expected)
    assert fd_is_closed(fd)


def test_fd_closed_even_on_error():
    fd = pipe_with(b"not a key")
    with pytest.raises(KeyOptionError, match=f"--key: fd {fd}: not a hex key"):
        load_key_option(f"fd={fd}")
    assert fd_is_closed(fd)


def test_bad_fd():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(KeyOptionError, match=f"fd {r}: cannot read"):
        load_key_option(f"fd={r}")


def test_fd_with_remove_is_harmless():
    fd = pipe_with(HEX128.encode())
    assert load_key_option(f"fd={fd},remove=true") == StateKey(bytes.fromhex(HEX128))


# -- remove and file errors -----------------------------------------------------------


@pytest.mark.parametrize("form", ["file={p}", "file={p},format=binary", "pwdfile={p}"])
def test_remove_true_unlinks_after_reading(tmp_path, form):
    content = bytes.fromhex(HEX128) if "binary" in form else HEX128.encode()
    path = write(tmp_path / "key", content)
    load_key_option(form.format(p=path) + ",remove=true")
    assert not path.exists()


def test_remove_false_keeps_file(tmp_path):
    path = write(tmp_path / "key", HEX128)
    load_key_option(f"file={path},remove=false")
    load_key_option(f"file={path}")
    assert path.exists()


def test_remove_not_done_when_the_key_is_bad(tmp_path):
    path = write(tmp_path / "key", "xyz")
    with pytest.raises(KeyOptionError):
        load_key_option(f"file={path},remove")
    assert path.exists()


def test_missing_key_file(tmp_path):
    path = tmp_path / "absent"
    with pytest.raises(KeyOptionError, match=f"--key: file '{path}': cannot open"):
        load_key_option(f"file={path}")


def test_key_file_too_large_is_not_slurped(tmp_path):
    path = write(tmp_path / "big", b"0" * 100_000)
    with pytest.raises(KeyOptionError, match="not a key file"):
        load_key_option(f"file={path}")


def test_parsed_option_repr_has_no_key(tmp_path):
    path = write(tmp_path / "key", HEX128)
    opt = parse_key_option(f"file={path},mode=aes-cbc")
    assert HEX128 not in repr(opt)
    key = opt.load()
    assert HEX128 not in repr(key) and HEX128[:8] not in str(key)
