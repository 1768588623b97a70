"""QEMU's ``emulator`` TPM backend on ``vtpm-cuse socket``, on the host.

Real QEMU (Debian's qemu-system-x86_64) with ``-chardev socket,path=CTRL -tpmdev
emulator`` against ``vtpm-cuse socket --tpm2 --ctrl type=unixio,path=CTRL``, the
guest side played over qtest (tests/support/qtest_tpm.py) through tpm-tis and
tpm-crb: QEMU's own vectors, GetRandom, CreatePrimary, malformed commands; QEMU's
exit (CMD_SHUTDOWN) and ``terminate``; migration between two QEMU processes each
with its own vtpm-cuse, plain and with ``--migration-key``; savevm/loadvm on qcow2.
Each test prints ``QEMULOG <path>: ...`` lines for the report.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.qemu_tpm_checks import (
    QEMU_PCR_VALUE,
    create_primary,
    malformed_then_valid,
    pcr_extend,
    qemu_vectors,
    random_bytes,
    read_pcr_value,
    startup,
)
from support.qtest_tpm import QEMU, Qemu, QtestError, SocketTpm, emulator_args, interface
from support.swtpm_oracle import SwtpmOracle
from support.tpm_client import command, u32
from vtpm_cuse.tpm.constants import TPM_CC

MODELS = ("tpm-tis", "tpm-crb")
TPM_CAP_TPM_PROPERTIES = 6
TPM_PT_MAX_COMMAND_SIZE = 0x11E
MIGRATION_TIMEOUT = 60.0


def qemulog(path: str, what: str) -> None:
    print(f"QEMULOG {path}: {what}", flush=True)


@pytest.fixture(scope="module", autouse=True)
def qemu_present() -> None:
    if shutil.which(QEMU) is None or shutil.which("qemu-img") is None:
        pytest.fail(f"{QEMU} and qemu-img are needed (scripts/setup.sh installs qemu-system-x86, qemu-utils)")


@pytest.fixture
def tpms(tmp_path: Path) -> Iterator[list[SocketTpm]]:
    """Daemons a test starts; all stopped afterwards, whatever happened."""
    started: list[SocketTpm] = []
    yield started
    for tpm in started:
        tpm.stop()


def new_tpm(tpms: list[SocketTpm], work: Path, *extra: str, terminate: bool = False) -> SocketTpm:
    tpm = SocketTpm(work, list(extra), terminate).start()
    tpms.append(tpm)
    return tpm


@pytest.mark.parametrize("model", MODELS)
def test_qemu_vectors_random_and_create_primary(model: str, tpms: list[SocketTpm], tmp_path: Path) -> None:
    daemon = new_tpm(tpms, tmp_path / "a")
    with Qemu(emulator_args(daemon.ctrl, model)) as qemu:
        tpm = interface(model, qemu)
        qemu_vectors(tpm)
        first, second = random_bytes(tpm), random_bytes(tpm)
        assert first != second
        public = create_primary(tpm)
        assert public == create_primary(tpm), "a primary key is a function of the seed and template"
        malformed_then_valid(tpm)
    qemulog(
        f"emulator {model}",
        f"Startup, PCR_Extend+Read = {QEMU_PCR_VALUE.hex()[:16]}.., GetRandom, "
        f"CreatePrimary ({len(public)}-byte public), malformed commands answered ok",
    )


@pytest.mark.parametrize("model", MODELS)
def test_qemu_exit_shuts_the_daemon_down_with_state_saved(model: str, tpms: list[SocketTpm], tmp_path: Path) -> None:
    daemon = new_tpm(tpms, tmp_path / "a")
    with Qemu(emulator_args(daemon.ctrl, model)) as qemu:
        tpm = interface(model, qemu)
        qemu_vectors(tpm)
    # QEMU's backend finalize sends CMD_SHUTDOWN: the daemon ends by itself, cleanly.
    assert daemon.wait() == 0
    log = daemon.log.read_text()
    assert "TPM2_Shutdown" in log, log
    # The next start resumes the saved state: Startup(STATE) keeps PCR 10's value.
    again = new_tpm(tpms, tmp_path / "a")
    with Qemu(emulator_args(again.ctrl, model)) as qemu:
        tpm = interface(model, qemu)
        assert tpm.transfer(startup(clear=False)) == bytes.fromhex("80010000000a00000000")
        assert read_pcr_value(tpm) == QEMU_PCR_VALUE
    assert again.wait() == 0
    qemulog(f"emulator {model}", "QEMU exit -> CMD_SHUTDOWN, daemon exit 0, state resumed by Startup(STATE) ok")


def test_terminate_ends_the_daemon_when_qemu_goes_away(tpms: list[SocketTpm], tmp_path: Path) -> None:
    daemon = new_tpm(tpms, tmp_path / "a", terminate=True)
    qemu = Qemu(emulator_args(daemon.ctrl, "tpm-tis")).start()
    qemu_vectors(interface("tpm-tis", qemu))
    assert qemu.proc is not None
    qemu.proc.send_signal(signal.SIGKILL)  # no CMD_SHUTDOWN: only the connection closes
    qemu.quit()
    assert daemon.wait() == 0
    qemulog("emulator terminate", "QEMU killed -> control connection closed -> daemon exit 0 ok")


def migrate(source: Qemu, destination: Qemu, uri: str) -> None:
    source.qmp("migrate", uri=uri)
    deadline = time.monotonic() + MIGRATION_TIMEOUT
    for side in (source, destination):
        while (status := side.qmp("query-migrate").get("status")) != "completed":
            if status == "failed" or time.monotonic() > deadline:
                raise QtestError(f"migration {status}: {side.qmp('query-migrate')}")
            time.sleep(0.02)


def migration_pair(tmp_path: Path, tpms: list[SocketTpm], model: str, src_extra, dst_extra):
    uri = f"unix:{tmp_path / 'migrate.sock'}"
    source_tpm = new_tpm(tpms, tmp_path / "src", *src_extra)
    dest_tpm = new_tpm(tpms, tmp_path / "dst", *dst_extra)
    source = Qemu(emulator_args(source_tpm.ctrl, model), qmp_path=tmp_path / "src.qmp").start()
    dest = Qemu(emulator_args(dest_tpm.ctrl, model), qmp_path=tmp_path / "dst.qmp", extra=["-incoming", uri])
    return uri, source, dest.start(), source_tpm, dest_tpm


@pytest.mark.parametrize("model", MODELS)
def test_migration_carries_the_pcrs(model: str, tpms: list[SocketTpm], tmp_path: Path) -> None:
    uri, source, dest, _, _ = migration_pair(tmp_path, tpms, model, (), ())
    try:
        qemu_vectors(interface(model, source))
        migrate(source, dest, uri)
        tpm = interface(model, dest)
        assert read_pcr_value(tpm) == QEMU_PCR_VALUE
        assert len(random_bytes(tpm)) == 32
    finally:
        dest.quit()
        source.quit()
    qemulog(f"emulator {model} migration", "PCR 10 extended on the source, read on the destination ok")


def key_file(path: Path, byte: int) -> str:
    path.write_text(bytes([byte]).hex() * 32)
    os.chmod(path, 0o600)
    return f"file={path},mode=aes-256-cbc"


def test_migration_with_a_migration_key(tpms: list[SocketTpm], tmp_path: Path) -> None:
    key = key_file(tmp_path / "mig.key", 0x5A)
    uri, source, dest, _, _ = migration_pair(
        tmp_path, tpms, "tpm-tis", ("--migration-key", key), ("--migration-key", key)
    )
    try:
        qemu_vectors(interface("tpm-tis", source))
        migrate(source, dest, uri)
        assert read_pcr_value(interface("tpm-tis", dest)) == QEMU_PCR_VALUE
    finally:
        dest.quit()
        source.quit()
    qemulog("emulator migration --migration-key", "encrypted blobs carried PCR 10 ok")


def test_migration_with_a_different_key_is_refused(tpms: list[SocketTpm], tmp_path: Path) -> None:
    """The blobs really are encrypted: a destination with another key cannot load them."""
    uri, source, dest, _, dest_tpm = migration_pair(
        tmp_path,
        tpms,
        "tpm-tis",
        ("--migration-key", key_file(tmp_path / "a.key", 0x5A)),
        ("--migration-key", key_file(tmp_path / "b.key", 0xA5)),
    )
    try:
        qemu_vectors(interface("tpm-tis", source))
        source.qmp("migrate", uri=uri)
        assert dest.proc is not None
        dest.proc.wait(MIGRATION_TIMEOUT)  # QEMU exits when the incoming state cannot be loaded
        assert dest.proc.returncode != 0
    finally:
        dest.quit()
        source.quit()
    qemulog("emulator migration wrong key", f"destination QEMU refused the blobs (exit {dest.proc.returncode}) ok")


def test_savevm_loadvm_on_qcow2(tpms: list[SocketTpm], tmp_path: Path) -> None:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    daemon = new_tpm(tpms, tmp_path / "a")
    drive = ["-drive", f"if=none,id=disk0,format=qcow2,file={disk}"]
    with Qemu(emulator_args(daemon.ctrl, "tpm-tis"), qmp_path=tmp_path / "qmp", extra=drive) as qemu:
        tpm = interface("tpm-tis", qemu)
        qemu_vectors(tpm)
        hmp(qemu, "savevm snap1")
        tpm.transfer(pcr_extend())
        assert read_pcr_value(tpm) != QEMU_PCR_VALUE
        hmp(qemu, "loadvm snap1")
        assert read_pcr_value(tpm) == QEMU_PCR_VALUE
    qemulog("emulator savevm/loadvm qcow2", "PCR 10 back to its snapshot value after loadvm ok")


def hmp(qemu: Qemu, line: str) -> None:
    output = qemu.qmp("human-monitor-command", **{"command-line": line})
    assert not output.strip(), f"{line}: {output}"


def passthrough_buffer_size_probe() -> bytes:
    """What QEMU's passthrough backend asks a TPM 2 before choosing the frontend's buffer
    (tpm_util_get_buffer_size): GetCapability(TPM_PROPERTIES, MAX_COMMAND_SIZE, 2)."""
    return command(TPM_CC.GetCapability, u32(TPM_CAP_TPM_PROPERTIES) + u32(TPM_PT_MAX_COMMAND_SIZE) + u32(2))


def test_passthrough_buffer_size_probe_matches_swtpm(tpms: list[SocketTpm], tmp_path: Path) -> None:
    """Our answer equals libtpms' at the default 4096-byte buffer (what a passthrough
    device has: nobody sends SET_BUFFERSIZE; TIS asks for 4096 too), so QEMU sizes both
    alike, and refuses CRB passthrough (3968 bytes) for both (tests/vm/test_qemu_passthrough.py)."""
    daemon = new_tpm(tpms, tmp_path / "a")
    with Qemu(emulator_args(daemon.ctrl, "tpm-tis")) as qemu:
        tpm = interface("tpm-tis", qemu)
        tpm.transfer(startup())
        ours = tpm.transfer(passthrough_buffer_size_probe())
    oracle = SwtpmOracle()
    try:
        oracle.init()
        oracle.execute(startup())
        reference = oracle.execute(passthrough_buffer_size_probe())
    finally:
        oracle.close()
    assert ours == reference, (ours.hex(), reference.hex())
    qemulog("emulator tpm-tis", f"passthrough's buffer-size probe answered as libtpms: {ours[-16:].hex()}")
