"""Debian's swtpm_ioctl and our vtpm-ioctl against the control port of ``vtpm-cuse socket``.

Both tools run the same scenario; where the output is deterministic the two
must print the same thing.  State saved with ``--save`` survives a process
restart through ``--load``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import IOCTL, REPO, Daemon, env_with_repo, tpm_roundtrip

SWTPM_IOCTL = shutil.which("swtpm_ioctl")
TOOLS = {
    "swtpm_ioctl": [SWTPM_IOCTL] if SWTPM_IOCTL else None,
    "vtpm-ioctl": IOCTL,
}

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")


def pcr_read_0() -> bytes:
    """TPM2_PCR_Read of sha256 PCR 0 (needs no session)."""
    body = (1).to_bytes(4, "big") + (0x000B).to_bytes(2, "big") + bytes([3, 0x01, 0x00, 0x00])
    return (0x8001).to_bytes(2, "big") + (10 + len(body)).to_bytes(4, "big") + (0x17E).to_bytes(4, "big") + body


@pytest.fixture(params=[name for name, argv in TOOLS.items() if argv], ids=lambda n: n)
def tool(request: pytest.FixtureRequest):
    argv = TOOLS[request.param]

    def run(port: int, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*argv, "--tcp", f"127.0.0.1:{port}", *args],
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env=env_with_repo(),
        )
        return result

    run.name = request.param  # type: ignore[attr-defined]
    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"rc={result.returncode} stdout={result.stdout!r} stderr={result.stderr!r}"
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], stderr: str) -> None:
    assert result.returncode == 1
    assert result.stderr == stderr


def pcr0(d: Daemon) -> bytes:
    with d.connect_data() as s:
        response = tpm_roundtrip(s, pcr_read_0())
    assert response[6:10] == bytes(4), response.hex()
    return response[-32:]


def test_commands_and_outputs(tool, daemon: Daemon) -> None:
    port = daemon.ctrl_port
    assert ok(tool(port, "-c")) == "ptm capability is 0x1ffff\n"
    fails(tool(port, "-e"), "TPM result from PTM_GET_TPMESTABLISHED: 0xa\n")
    ok(tool(port, "-i"))
    assert ok(tool(port, "-e")) == "tpmEstablished is 0\n"
    assert ok(tool(port, "-g")) == "ptm configuration flags: 0x0\n"
    ok(tool(port, "-l", "0"))
    fails(tool(port, "-l", "5"), "Locality outside valid range of [0..4].\n")
    fails(tool(port, "-r", "0"), "TPM result from PTM_RESET_TPMESTABLISHED: 0x3d\n")
    ok(tool(port, "-r", "3"))
    assert ok(tool(port, "-b", "0")) == "TPM buffersize: 4096\nminimum size  : 2832\nmaximum size  : 4096\n"
    fails(tool(port, "-b", "3000"), "TPM result from PTM_SET_BUFFERSIZE: 0xa\n")
    info = ok(tool(port, "--info", "1"))
    assert info.startswith('{"TPMSpecification":{"family":"2.0"') and info.endswith("}\n")
    ok(tool(port, "-C"))
    ok(tool(port, "-v"))


def test_hash_sets_established_and_extends_pcr0(tool, daemon: Daemon) -> None:
    port = daemon.ctrl_port
    ok(tool(port, "-i"))
    assert ok(tool(port, "-e")) == "tpmEstablished is 0\n"
    ok(tool(port, "-h", "1234"))
    assert ok(tool(port, "-e")) == "tpmEstablished is 1\n"
    with daemon.connect_data() as s:
        assert tpm_roundtrip(s, STARTUP_CLEAR)[6:10] == bytes(4)
    # Without TPM2_Startup the H-CRTM sequence lands in PCR 0 (swtpm's tests/_test_tpm2_hashing3).
    assert pcr0(daemon) != bytes(32)
    ok(tool(port, "-h", "-", stdin=b"data from stdin"))


def test_save_load_across_restart(tool, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = Daemon(state).start()
    try:
        port = first.ctrl_port
        ok(tool(port, "-i"))
        ok(tool(port, "-h", "measured"))
        with first.connect_data() as s:
            assert tpm_roundtrip(s, STARTUP_CLEAR)[6:10] == bytes(4)
        value = pcr0(first)
        assert value != bytes(32)
        perm, vol, save = tmp_path / "perm.blob", tmp_path / "vol.blob", tmp_path / "save.blob"
        ok(tool(port, "--save", "permanent", str(perm)))
        ok(tool(port, "--save", "volatile", str(vol)))
        ok(tool(port, "--save", "savestate", str(save)))  # absent: non-fatal, empty file
        assert perm.stat().st_size > 0 and vol.stat().st_size > 0
        assert save.stat().st_size == 0
        ok(tool(port, "-s"))
        assert first.wait_exit() == 0
    finally:
        first.stop()
    second = Daemon(tmp_path / "fresh").start()
    try:
        port = second.ctrl_port
        ok(tool(port, "--stop"))
        ok(tool(port, "--load", "permanent", str(perm)))
        ok(tool(port, "--load", "volatile", str(vol)))
        ok(tool(port, "-i"))
        assert pcr0(second) == value
        assert ok(tool(port, "-e")) == "tpmEstablished is 1\n"
        ok(tool(port, "--stop"))
        fails(tool(port, "-e"), "TPM result from PTM_GET_TPMESTABLISHED: 0xa\n")
        ok(tool(port, "-s"))
        assert second.wait_exit() == 0
    finally:
        second.stop()


def test_load_while_running_is_refused(tool, daemon: Daemon, tmp_path: Path) -> None:
    port = daemon.ctrl_port
    ok(tool(port, "-i"))
    blob = tmp_path / "perm.blob"
    ok(tool(port, "--save", "permanent", str(blob)))
    fails(tool(port, "--load", "permanent", str(blob)), "TPM result from PTM_SET_STATEBLOB: 0xa\n")


def test_shutdown_ends_the_process(tool, daemon: Daemon) -> None:
    ok(tool(daemon.ctrl_port, "-i"))
    ok(tool(daemon.ctrl_port, "-s"))
    assert daemon.wait_exit() == 0


@pytest.mark.skipif(SWTPM_IOCTL is None, reason="swtpm_ioctl not installed")
@pytest.mark.parametrize(
    "args",
    [
        ["-c"],
        ["-e"],
        ["-g"],
        ["-b", "0"],
        ["-l", "9"],
        ["-l", "x"],
        ["-r", "1"],
        ["--info", "x"],
        ["--save", "bogus", "/nonexistent"],
        ["--load", "permanent", "/nonexistent/file"],
        ["-c", "-e"],
        ["--info", "1"],
        ["-i"],
        ["-v"],
        ["--stop"],
    ],
    ids=lambda a: " ".join(a),
)
def test_same_output_as_swtpm_ioctl(daemon: Daemon, args: list[str]) -> None:
    outputs = []
    for argv in ([SWTPM_IOCTL], IOCTL):
        result = subprocess.run(
            [*argv, "--tcp", f":{daemon.ctrl_port}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env=env_with_repo(),
        )
        outputs.append((result.returncode, result.stdout, result.stderr))
    assert outputs[0] == outputs[1]
