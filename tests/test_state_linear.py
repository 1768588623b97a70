"""``--tpmstate backend-uri=file://``: all state in one file (vtpm_cuse/state/linear.py),
through the store API and through a real daemon that keeps its seeds across a restart."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, tpm_roundtrip
from tests.support.tpm_client import Response, command, u16, u32
from vtpm_cuse.state import StateError, StateKind, StorageLockError, parse_tpmstate_option
from vtpm_cuse.state.crypto import StateKey
from vtpm_cuse.state.linear import MAGIC, LinearFileStore
from vtpm_cuse.state.store import DirectoryStore
from vtpm_cuse.tpm.constants import TPM_CC, TPM_RH, TPM_SU


def test_the_option_builds_a_linear_store(tmp_path: Path) -> None:
    option = parse_tpmstate_option(f"backend-uri=file://{tmp_path}/tpm.img,mode=0640")
    store = DirectoryStore.from_option(option)
    assert isinstance(store, LinearFileStore) and store.file == tmp_path / "tpm.img"
    assert not store.locking_enabled  # swtpm's default for file://
    assert DirectoryStore.from_option(parse_tpmstate_option(f"backend-uri=file://{tmp_path}/t,lock")).locking_enabled


def test_three_kinds_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "tpm.img"
    store = LinearFileStore(path)
    store.store(StateKind.PERMANENT, b"perm" * 100)
    store.store(StateKind.VOLATILE, b"vol")
    assert sorted(os.listdir(tmp_path)) == ["tpm.img"]
    assert path.read_bytes().startswith(MAGIC)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = LinearFileStore(path)
    assert again.load(StateKind.PERMANENT) == b"perm" * 100 and again.load(StateKind.VOLATILE) == b"vol"
    assert again.load(StateKind.SAVESTATE) is None and not again.exists(StateKind.SAVESTATE)
    assert again.delete(StateKind.VOLATILE) and not again.delete(StateKind.VOLATILE)
    assert LinearFileStore(path).load(StateKind.VOLATILE) is None
    assert LinearFileStore(path).load(StateKind.PERMANENT) == b"perm" * 100


def test_encryption_and_blobs_work_as_in_the_directory_store(tmp_path: Path) -> None:
    key = StateKey(bytes(range(32)))
    store = LinearFileStore(tmp_path / "tpm.img", file_key=key)
    store.store(StateKind.PERMANENT, b"secret seeds")
    assert b"secret seeds" not in (tmp_path / "tpm.img").read_bytes()
    blob, encrypted = store.get_blob(StateKind.PERMANENT, decrypt=True)
    assert not encrypted and store.check_blob(StateKind.PERMANENT, blob, False) == b"secret seeds"
    with pytest.raises(StateError, match="no --key"):
        LinearFileStore(tmp_path / "tpm.img").load(StateKind.PERMANENT)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[:-3], "truncated or damaged"),
        (lambda raw: raw[:20] + bytes([raw[20] ^ 1]) + raw[21:], "CRC mismatch"),
        (lambda raw: b"NOTOURS!" + raw[8:], "not a vtpm-cuse linear state file"),
    ],
)
def test_damage_is_reported_not_loaded(tmp_path: Path, damage, message: str) -> None:
    path = tmp_path / "tpm.img"
    LinearFileStore(path).store(StateKind.PERMANENT, b"state" * 10)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(StateError, match=message):
        LinearFileStore(path).load(StateKind.PERMANENT)


def test_a_zeroed_device_image_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "zeros"
    path.write_bytes(bytes(4096))
    assert LinearFileStore(path).load(StateKind.PERMANENT) is None


def test_the_lock_excludes_a_second_process(tmp_path: Path) -> None:
    store = LinearFileStore(tmp_path / "tpm.img", lock=True)
    store.store(StateKind.PERMANENT, b"p")
    assert (tmp_path / "tpm.img.lock").exists()
    pid = os.fork()
    if pid == 0:  # POSIX record locks are per process: the child must be refused
        try:
            LinearFileStore(tmp_path / "tpm.img", lock=True).store(StateKind.PERMANENT, b"q")
            os._exit(1)
        except StorageLockError:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.close()


def _primary_public(port: int) -> bytes:
    """TPM2_CreatePrimary of a fixed ECC template under the owner hierarchy: its public key depends
    only on the owner seed, so it is equal across restarts iff the permanent state survived."""
    template = (
        u16(0x0023) + u16(0x000B) + u32(0x00030072) + u16(0)  # ECC, SHA256, fixedTPM|fixedParent|... restricted|decrypt
        + u16(0x0006) + u16(128) + u16(0x0043)  # AES-128-CFB
        + u16(0x0010) + u16(0x0003) + u16(0x0010)  # no scheme, NIST P256, no KDF
        + u16(0) + u16(0)  # unique x, y
    )  # fmt: skip
    sensitive = u16(4) + u16(0) + u16(0)  # TPM2B_SENSITIVE_CREATE: empty userAuth and data
    body = sensitive + u16(len(template)) + template + u16(0) + u32(0)  # outsideInfo, no PCRs
    cmd = command(TPM_CC.CreatePrimary, body, handles=u32(TPM_RH.OWNER), auth=b"")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        assert Response(tpm_roundtrip(s, command(TPM_CC.Startup, u16(TPM_SU.CLEAR)))).rc == 0
        response = Response(tpm_roundtrip(s, cmd))
    assert response.rc == 0, hex(response.rc)
    params = response.params(handles=1)
    return params[: 2 + int.from_bytes(params[:2], "big")]  # outPublic


def test_a_daemon_keeps_its_seeds_in_the_file_across_a_restart(tmp_path: Path) -> None:
    image = tmp_path / "tpm.img"
    option = ["--tpmstate", f"backend-uri=file://{image}", "--flags", "not-need-init"]
    first = Daemon(tmp_path / "unused", extra=option).start()
    try:
        key = _primary_public(first.data_port)
    finally:
        first.stop()
    assert image.read_bytes().startswith(MAGIC) and not (tmp_path / "unused").exists()
    second = Daemon(tmp_path / "unused", extra=option).start()
    try:
        assert _primary_public(second.data_port) == key
    finally:
        second.stop()


def test_print_states_reads_the_single_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from vtpm_cuse.cli import daemon

    image = tmp_path / "tpm.img"
    store = LinearFileStore(image)
    store.store(StateKind.PERMANENT, b"p" * 40)
    store.store(StateKind.VOLATILE, b"v" * 7)
    sizes = {kind: store.stored_size(kind) for kind in StateKind}
    assert daemon.run(["socket", "--tpm2", "--tpmstate", f"backend-uri=file://{image}", "--print-states"]) == 0
    states = json.loads(capsys.readouterr().out)["states"]
    assert states == [
        {"name": "permall", "size": sizes[StateKind.PERMANENT]},
        {"name": "volatile", "size": sizes[StateKind.VOLATILE]},
    ]
