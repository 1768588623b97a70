"""--tpmstate values and the TPM_PATH fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from vtpm_cuse.state import (
    DirectoryStore,
    TpmStateOption,
    TpmStateOptionError,
    parse_tpmstate_option,
    resolve_tpmstate,
)
from vtpm_cuse.state.tpmstate import tpmstate_from_environment


def test_dir_defaults():
    opt = parse_tpmstate_option("dir=/var/lib/tpm")
    assert opt == TpmStateOption(directory=Path("/var/lib/tpm"), mode=0o600, lock=True, backup=False, fsync=False)


def test_backend_uri_dir():
    assert parse_tpmstate_option("backend-uri=dir:///var/lib/tpm").directory == Path("/var/lib/tpm")
    assert parse_tpmstate_option("backend-uri=dir://relative/d").directory == Path("relative/d")


def test_all_options():
    opt = parse_tpmstate_option("dir=/d,mode=0640,lock,backup,fsync")
    assert (opt.mode, opt.lock, opt.backup, opt.fsync) == (0o640, True, True, True)
    opt = parse_tpmstate_option("dir=/d,mode=600,lock=false,backup=false,fsync=0")
    assert (opt.mode, opt.lock, opt.backup, opt.fsync) == (0o600, False, False, False)


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("backend-uri=file:///tmp/linear,backup", "only supported by the directory backend"),
        ("backend-uri=nvram://x", "unknown scheme"),
        ("backend-uri=/plain/path", "unknown scheme"),
        ("dir=/a,backend-uri=dir:///b", "not both"),
        ("mode=0600", "dir= or backend-uri= is required"),
        ("", "dir= or backend-uri= is required"),
        ("dir", "dir needs a value"),
        ("backend-uri=dir://", "directory name is empty"),
        ("dir=/d,mode=0999", "mode='0999' is not an octal mode"),
        ("dir=/d,mode=rw", "mode='rw' is not an octal mode"),
        ("dir=/d,mode=01777", "outside 0000..0777"),
        ("dir=/d,mode=0400", "lacks owner read/write"),
        ("dir=/d,mode", "mode needs a value"),
        ("dir=/d,lock=sometimes", "lock='sometimes' is not a boolean"),
        ("dir=/d,sync", "unknown option 'sync'"),
    ],
)
def test_errors_name_the_value(value, fragment):
    with pytest.raises(TpmStateOptionError) as info:
        parse_tpmstate_option(value)
    assert fragment in str(info.value)
    assert str(info.value).startswith("--tpmstate") or "TPM_PATH" in str(info.value)


def test_tpm_path_fallback():
    assert tpmstate_from_environment({}) is None
    assert tpmstate_from_environment({"TPM_PATH": ""}) is None
    assert resolve_tpmstate(None, {"TPM_PATH": "/env/dir"}) == TpmStateOption(Path("/env/dir"))
    # the option wins over the environment
    assert resolve_tpmstate("dir=/opt/dir", {"TPM_PATH": "/env/dir"}).directory == Path("/opt/dir")
    with pytest.raises(TpmStateOptionError, match="TPM_PATH"):
        resolve_tpmstate(None, {})


def test_tpm_path_reads_os_environ(monkeypatch):
    monkeypatch.setenv("TPM_PATH", "/from/env")
    assert resolve_tpmstate(None).directory == Path("/from/env")


def test_store_from_option(tmp_path):
    opt = parse_tpmstate_option(f"dir={tmp_path},mode=0640,lock=false,backup")
    store = DirectoryStore.from_option(opt)
    assert store.directory == tmp_path and store.mode == 0o640
    assert not store.locking_enabled
    store.store(1, b"p")
    assert (tmp_path / "tpm2-00.permall").stat().st_mode & 0o777 == 0o640
    assert not (tmp_path / ".lock").exists()
