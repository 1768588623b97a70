"""Debian's tpm2-tools against ``vtpm-cuse socket`` through tpm2-tss' swtpm TCTI.

The TCTI speaks raw TPM commands on the data port and CMD_* on the control
port, exactly like it does with swtpm, so these tests exercise the sockets
end to end with a real, independent client.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.support.tpm2_tools import module_tpm2_fixtures

PCR = 16


daemon, tpm2 = module_tpm2_fixtures()


def read_pcr(tpm2, tmp_path: Path, index: int = PCR) -> bytes:
    out = tmp_path / f"pcr{index}.bin"
    tpm2("pcrread", f"sha256:{index}", "-o", str(out))
    return out.read_bytes()


def test_selftest(tpm2) -> None:
    tpm2("selftest", "--fulltest")


def test_getrandom_returns_the_requested_length(tpm2, tmp_path: Path) -> None:
    out = tmp_path / "random.bin"
    tpm2("getrandom", "32", "-o", str(out))
    assert len(out.read_bytes()) == 32


def test_every_capability_tpm2_getcap_knows(tpm2) -> None:
    names = [line.removeprefix("- ").strip() for line in tpm2("getcap", "-l").stdout.decode().splitlines()]
    assert "properties-fixed" in names
    failures = {}
    for name in names:
        result = tpm2("getcap", name, check=False)
        if result.returncode != 0:
            failures[name] = result.stderr.decode()[-300:]
    assert not failures


def test_pcrextend_matches_hashlib(tpm2, tmp_path: Path) -> None:
    tpm2("pcrreset", str(PCR))
    before = read_pcr(tpm2, tmp_path)
    assert before == bytes(32)
    digest = hashlib.sha256(b"extend me").digest()
    tpm2("pcrextend", f"{PCR}:sha256={digest.hex()}")
    assert read_pcr(tpm2, tmp_path) == hashlib.sha256(before + digest).digest()


def test_pcrevent_matches_hashlib(tpm2, tmp_path: Path) -> None:
    tpm2("pcrreset", str(PCR))
    data = tmp_path / "event.bin"
    data.write_bytes(b"an event" * 100)
    tpm2("pcrevent", str(PCR), str(data))
    expected = hashlib.sha256(bytes(32) + hashlib.sha256(data.read_bytes()).digest()).digest()
    assert read_pcr(tpm2, tmp_path) == expected


def test_hmac_session_encrypts_getrandom(tpm2, tmp_path: Path) -> None:
    session = tmp_path / "hmac.ctx"
    tpm2("startauthsession", "--hmac-session", "-S", str(session))
    try:
        tpm2("sessionconfig", "--enable-encrypt", str(session))
        assert b"encrypt" in tpm2("sessionconfig", str(session)).stdout
        out = tmp_path / "random.bin"
        tpm2("getrandom", "20", "-S", str(session), "-o", str(out))
        assert len(out.read_bytes()) == 20
        # tpm2-tools saves the session between invocations (TPM2_ContextSave / _ContextLoad).
        assert b"0x2000000" in tpm2("getcap", "handles-saved-session").stdout
    finally:
        tpm2("flushcontext", str(session))
    assert b"0x2000000" not in tpm2("getcap", "handles-saved-session").stdout


def policy_pcr_digest(tpm2, tmp_path: Path, pcrs: list[int]) -> bytes:
    """H(0..0 || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || H(PCR values)), from tpm2_pcrread."""
    values = b"".join(read_pcr(tpm2, tmp_path, pcr) for pcr in pcrs)
    select = bytearray(3)
    for pcr in pcrs:
        select[pcr // 8] |= 1 << (pcr % 8)
    selection = (1).to_bytes(4, "big") + (0x000B).to_bytes(2, "big") + b"\x03" + bytes(select)
    return hashlib.sha256(bytes(32) + (0x17F).to_bytes(4, "big") + selection + hashlib.sha256(values).digest()).digest()


def test_policypcr_in_trial_and_policy_sessions(tpm2, tmp_path: Path) -> None:
    expected = policy_pcr_digest(tpm2, tmp_path, [0, 1])
    for kind in ([], ["--policy-session"]):
        session, policy = tmp_path / "session.ctx", tmp_path / "pcr.policy"
        tpm2("startauthsession", *kind, "-S", str(session))
        try:
            tpm2("policypcr", "-S", str(session), "-l", "sha256:0,1", "-L", str(policy))
        finally:
            tpm2("flushcontext", str(session))
        assert policy.read_bytes() == expected


def test_policy_session_authorizes_a_key_with_a_pcr_policy(tpm2, tmp_path: Path) -> None:
    trial, policy = tmp_path / "trial.ctx", tmp_path / "pcr.policy"
    tpm2("startauthsession", "-S", str(trial))
    tpm2("policypcr", "-S", str(trial), "-l", "sha256:7", "-L", str(policy))
    tpm2("flushcontext", str(trial))
    primary, session = tmp_path / "primary.ctx", tmp_path / "policy.ctx"
    tpm2("createprimary", "-C", "o", "-g", "sha256", "-G", "ecc", "-L", str(policy), "-c", str(primary))
    tpm2("startauthsession", "--policy-session", "-S", str(session))
    try:
        create = (
            "create",
            "-C",
            str(primary),
            "-P",
            f"session:{session}",
            "-G",
            "ecc",
            "-u",
            str(tmp_path / "key.pub"),
            "-r",
            str(tmp_path / "key.priv"),
        )
        tpm2("policypcr", "-S", str(session), "-l", "sha256:7")
        tpm2(*create)
        # The policy holds for one command; then PCR 7 changes and it no longer can.
        tpm2("policypcr", "-S", str(session), "-l", "sha256:7")
        tpm2("pcrextend", f"7:sha256={'33' * 32}")
        failed = tpm2(*create, check=False)
        assert failed.returncode != 0 and b"0x128" in failed.stderr  # TPM_RC_PCR_CHANGED
    finally:
        tpm2("flushcontext", str(session))
        tpm2("flushcontext", "-t")


def test_salted_session_with_an_ecc_key(tpm2, tmp_path: Path) -> None:
    primary, session = tmp_path / "primary.ctx", tmp_path / "salted.ctx"
    tpm2("createprimary", "-C", "o", "-g", "sha256", "-G", "ecc", "-c", str(primary))
    try:
        tpm2("startauthsession", "--hmac-session", "-S", str(session), "-c", str(primary))
        tpm2("sessionconfig", "--enable-encrypt", str(session))
        out = tmp_path / "random.bin"
        tpm2("getrandom", "16", "-S", str(session), "-o", str(out))
        assert len(out.read_bytes()) == 16
        tpm2("flushcontext", str(session))
    finally:
        tpm2("flushcontext", "-t")


def test_pcrreset_clears_pcr16(tpm2, tmp_path: Path) -> None:
    tpm2("pcrextend", f"{PCR}:sha256={'11' * 32}")
    assert read_pcr(tpm2, tmp_path) != bytes(32)
    tpm2("pcrreset", str(PCR))
    assert read_pcr(tpm2, tmp_path) == bytes(32)


def test_pcrread_all_banks(tpm2) -> None:
    assert b"sha256" in tpm2("pcrread").stdout


@pytest.mark.parametrize(
    "size",
    [1024, 1024 * 1024],
    ids=["1KiB", "1MiB"],
)
def test_hash_matches_hashlib(tpm2, tmp_path: Path, size: int) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(size))
    out = tmp_path / "digest.bin"
    tpm2("hash", "-g", "sha256", "-C", "o", "-o", str(out), str(data))
    assert out.read_bytes() == hashlib.sha256(data.read_bytes()).digest()


def test_readclock(tpm2) -> None:
    assert b"clock" in tpm2("readclock").stdout


def test_shutdown_last(tpm2) -> None:
    # module order: runs after the others (pytest keeps file order)
    tpm2("shutdown")
