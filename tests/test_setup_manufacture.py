"""vtpm-setup against Debian's swtpm_setup: what libvirt runs before it starts a TPM.

One state is manufactured by each tool with libvirt's command line; tpm2-tools then read
both back (ours through ``vtpm-cuse socket``, the reference through ``swtpm socket``) and
the NV indices, their attributes, the persistent EKs and the PCR banks must agree.  The
certificates must parse with openssl, chain to the local CA, and certify the key that
``tpm2_createek`` re-derives from the endorsement seed.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509

from support.daemon import Daemon, free_port_pair
from support.setup_tool import LIBVIRT_OPTIONS, SetupConfig, run_setup, run_swtpm_setup
from support.tpm2_tools import Tpm2Runner, tpm2_runner
from vtpm_cuse.localca import TpmInfo, der_tpm_specification

VMID = "vm1:6b1c8f0e-3f7a-4cde-9a51-2f0d9c1f7e11"
SPK, RSA_EK, ECC_EK = 0x81000001, 0x81010001, 0x81010016
RSA_CERT, ECC_CERT, PLATFORM_CERT = 0x01C00002, 0x01C00016, 0x01C08000
TPM_RC_NV_LOCKED = 0x148


@contextmanager
def swtpm_on(state: Path) -> Iterator[Tpm2Runner]:
    """Debian's swtpm serving ``state`` (the reference), with a tpm2-tools runner."""
    data, ctrl = free_port_pair()
    proc = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}", "--flags", "not-need-init,startup-clear"]
        + [
            "--server",
            f"type=tcp,port={data},bindaddr=127.0.0.1",
            "--ctrl",
            f"type=tcp,port={ctrl},bindaddr=127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", ctrl), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("swtpm did not start") from None
                time.sleep(0.05)
        yield tpm2_runner(data)
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def vtpm_on(state: Path, *extra: str) -> Iterator[Tpm2Runner]:
    """``vtpm-cuse socket`` serving ``state``, with a tpm2-tools runner."""
    d = Daemon(state, extra=["--flags", "not-need-init,startup-clear", *extra]).start()
    try:
        yield tpm2_runner(d.data_port)
    finally:
        d.stop()


def nv_public(tpm2: Tpm2Runner) -> dict[int, int]:
    """NV index -> TPMA_NV value, from tpm2_nvreadpublic."""
    out = tpm2("nvreadpublic").stdout.decode()
    blocks = re.findall(r"^(0x[0-9a-f]+):\n(.*?)(?=^0x|\Z)", out, flags=re.M | re.S)
    return {
        int(index, 16): int(re.search(r"attributes:\n.*\n\s+value: (0x[0-9A-Fa-f]+)", body).group(1), 16)
        for index, body in blocks
    }


def persistent(tpm2: Tpm2Runner) -> list[int]:
    return [int(h, 16) for h in re.findall(r"0x[0-9a-fA-F]+", tpm2("getcap", "handles-persistent").stdout.decode())]


def active_banks(tpm2: Tpm2Runner) -> list[str]:
    out = tpm2("getcap", "pcrs").stdout.decode()
    return [m.group(1) for m in re.finditer(r"- (\w+): \[ (?:\d)", out)]


def openssl(*args: str, data: bytes | None = None) -> str:
    result = subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> SetupConfig:
    return SetupConfig(tmp_path_factory.mktemp("config")).write()


@pytest.fixture(scope="module")
def ours(tmp_path_factory, config: SetupConfig) -> tuple[Path, subprocess.CompletedProcess[str]]:
    state = tmp_path_factory.mktemp("ours") / "tpm2"
    log = state.parent / "setup.log"
    args = ["--tpm2", "--tpm-state", str(state), "--vmid", VMID, "--logfile", str(log), *LIBVIRT_OPTIONS]
    result = run_setup(*args, config=config)
    assert result.returncode == 0, result.stderr + log.read_text()
    return state, result


@pytest.fixture(scope="module")
def tpm2(ours) -> Iterator[Tpm2Runner]:
    with vtpm_on(ours[0]) as run:
        yield run


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """What swtpm_setup's state holds, read through swtpm."""
    config = SetupConfig(tmp_path_factory.mktemp("refconfig")).write()
    state = tmp_path_factory.mktemp("ref")
    result = run_swtpm_setup("--tpm2", "--tpm-state", str(state), "--vmid", VMID, *LIBVIRT_OPTIONS, config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    with swtpm_on(state) as run:
        ek_cert = run("nvread", hex(RSA_CERT)).stdout
        return {"nv": nv_public(run), "persistent": persistent(run), "banks": active_banks(run), "ek_cert": ek_cert}


def test_libvirt_command_line_gives_swtpm_setups_nv_indices_and_keys(tpm2, reference):
    assert nv_public(tpm2) == reference["nv"] == {i: 0x62072801 for i in (RSA_CERT, ECC_CERT, PLATFORM_CERT)}
    assert persistent(tpm2) == reference["persistent"] == [RSA_EK, ECC_EK]
    assert active_banks(tpm2) == reference["banks"] == ["sha256"]


def test_ek_certificate_has_swtpm_certs_extensions(tpm2, reference):
    ours = x509.load_der_x509_certificate(tpm2("nvread", hex(RSA_CERT)).stdout)
    ref = x509.load_der_x509_certificate(reference["ek_cert"])
    assert {(e.oid, e.critical) for e in ours.extensions} == {(e.oid, e.critical) for e in ref.extensions}
    # TPMSpecification {family "2.0", level, revision}: the same DER layout as swtpm_cert's.
    sda = x509.ObjectIdentifier("2.5.29.9")
    ref_spec = ref.extensions.get_extension_for_oid(sda).value.value
    assert ref_spec == der_tpm_specification(TpmInfo("", "", "", spec_level=0, spec_revision=ref_spec[-1]))
    assert ours.extensions.get_extension_for_oid(sda).value.value == der_tpm_specification(
        TpmInfo("", "", "", spec_level=0, spec_revision=ours.extensions.get_extension_for_oid(sda).value.value[-1])
    )


def test_log_names_every_step(ours):
    state, _ = ours
    log = (state.parent / "setup.log").read_text()
    for line in (
        "Successfully created RSA 2048 EK with handle 0x81010001.",
        "Successfully created NVRAM area 0x1c00002 for RSA 2048 EK certificate.",
        "Successfully created NVRAM area 0x1c08000 for platform certificate.",
        "Successfully created ECC EK with handle 0x81010016.",
        "Successfully created NVRAM area 0x1c00016 for ECC EK certificate.",
        "Successfully activated PCR banks sha256 among sha1,sha256,sha384,sha512.",
        "Successfully authored TPM state.",
    ):
        assert line in log
    assert log.startswith("Starting vTPM manufacturing as ")


def test_ek_certificate_certifies_the_key_tpm2_createek_derives(tpm2, tmp_path):
    pem = tmp_path / "ek.pem"
    tpm2("createek", "-G", "rsa", "-c", str(tmp_path / "ek.ctx"), "-u", str(pem), "-f", "pem")
    tpm2("nvread", hex(RSA_CERT), "-o", str(tmp_path / "ek.der"))
    cert_key = openssl("x509", "-inform", "der", "-in", str(tmp_path / "ek.der"), "-pubkey", "-noout")
    assert cert_key == pem.read_text()


@pytest.mark.parametrize("index", [RSA_CERT, ECC_CERT, PLATFORM_CERT])
def test_certificates_chain_to_the_local_ca(tpm2, config, tmp_path, index):
    der = tmp_path / "cert.der"
    tpm2("nvread", hex(index), "-o", str(der))
    pem = tmp_path / "cert.pem"
    openssl("x509", "-inform", "der", "-in", str(der), "-out", str(pem))
    root = config.ca_dir / "swtpm-localca-rootca-cert.pem"
    out = openssl("verify", "-CAfile", str(root), "-untrusted", str(config.ca_dir / "issuercert.pem"), str(pem))
    assert out.strip() == f"{pem}: OK"
    text = openssl("x509", "-in", str(pem), "-noout", "-text")
    assert f"Subject: CN = {VMID}" in text
    if index == PLATFORM_CERT:
        assert "2.23.133.8.2" in text and "2.23.133.5.1.1=Test Platform" in text
    else:
        assert "2.23.133.8.1" in text and "DirName:/2.23.133.2.1=id:" in text
        assert ("Key Encipherment" if index == RSA_CERT else "Key Agreement") in text


def test_lock_nvram_makes_the_certificates_read_only(tpm2, tmp_path):
    data = tmp_path / "one"
    data.write_bytes(b"x")
    result = tpm2("nvwrite", hex(RSA_CERT), "-C", "p", "-i", str(data), check=False)
    assert result.returncode != 0
    assert f"0x{TPM_RC_NV_LOCKED:x}" in result.stderr.decode().lower()


def test_existing_state_is_kept_refused_or_replaced(config, tmp_path):
    state = tmp_path / "tpm2"
    assert run_setup("--tpm2", "--tpm-state", str(state), "--createek", config=config).returncode == 0
    permall = state / "tpm2-00.permall"
    first = permall.read_bytes()

    kept = run_setup("--tpm2", "--tpm-state", f"dir://{state}", *LIBVIRT_OPTIONS, config=config)
    assert kept.returncode == 0 and permall.read_bytes() == first

    refused = run_setup("--tpm2", "--tpm-state", str(state), "--createek", config=config)
    assert refused.returncode == 1
    assert f"Found existing TPM state '{permall}'." in refused.stderr
    assert permall.read_bytes() == first

    replaced = run_setup("--tpm2", "--tpm-state", str(state), "--createek", "--overwrite", config=config)
    assert replaced.returncode == 0 and permall.read_bytes() != first


def test_spk_pcr_banks_then_reconfigure(config, tmp_path):
    state = tmp_path / "tpm2"
    args = ["--tpm2", "--tpm-state", str(state), "--createek", "--create-spk", "--pcr-banks", "sha1,sha384"]
    result = run_setup(*args, config=config)
    assert result.returncode == 0, result.stderr
    assert "Successfully created RSA 2048 storage primary key with handle 0x81000001." in result.stdout
    assert "Successfully activated PCR banks sha1,sha384 among sha1,sha256,sha384,sha512." in result.stdout
    with vtpm_on(state) as run:
        assert active_banks(run) == ["sha1", "sha384"]
    result = run_setup("--tpm2", "--tpm-state", str(state), "--reconfigure", "--pcr-banks", "sha512", config=config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Starting vTPM reconfiguration")
    with vtpm_on(state) as run:
        assert active_banks(run) == ["sha512"]
        assert persistent(run) == [SPK, RSA_EK, ECC_EK]


def test_signing_ek_templates_match_swtpm_setups(config, tmp_path):
    """--allow-signing makes non-standard EKs; their templates go to NV for clients."""
    options = ["--tpm2", "--createek", "--allow-signing", "--decryption", "--rsa-keysize", "3072"]
    ours, ref = tmp_path / "ours", tmp_path / "ref"
    assert run_setup(*options, "--tpm-state", str(ours), config=config).returncode == 0
    ref_config = SetupConfig(tmp_path / "refconfig").write()
    ref.mkdir()  # swtpm_setup does not create it
    assert run_swtpm_setup(*options, "--tpm-state", str(ref), config=ref_config).returncode == 0
    templates = {}
    for name, serve, state in (("ours", vtpm_on, ours), ("ref", swtpm_on, ref)):
        with serve(state) as run:
            templates[name] = [run("nvread", idx).stdout for idx in ("0x1c0001d", "0x1c00017")]
            templates[name + "_handles"] = sorted(persistent(run))
    assert templates["ours"] == templates["ref"]
    assert templates["ours_handles"] == templates["ref_handles"] == [ECC_EK, 0x8101001C]


def test_encrypted_state_and_ek_cert_files(config, tmp_path):
    state, certs = tmp_path / "tpm2", tmp_path / "certs"
    certs.mkdir()
    pwd = tmp_path / "pwd"
    pwd.write_text("a passphrase")
    key = ["--pwdfile", str(pwd), "--cipher", "aes-256-cbc"]
    args = ["--tpm2", "--tpm-state", str(state), "--create-ek-cert", *key, "--write-ek-cert-files", str(certs)]
    result = run_setup(*args, config=config)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in certs.iterdir()) == ["ek-rsa2048.crt", "ek-secp384r1.crt"]
    with vtpm_on(state, "--key", f"pwdfile={pwd},mode=aes-256-cbc") as run:
        assert run("nvread", hex(RSA_CERT)).stdout == (certs / "ek-rsa2048.crt").read_bytes()
    # Without the key the state cannot be used.
    with vtpm_on(state) as run:
        assert run("nvread", hex(RSA_CERT), check=False).returncode != 0


def test_print_capabilities_has_swtpm_setups_tpm2_features(config):
    ours = json.loads(run_setup("--print-capabilities", config=config).stdout)
    ref = json.loads(subprocess.run(["swtpm_setup", "--print-capabilities"], capture_output=True, text=True).stdout)
    assert ours["type"] == ref["type"] == "swtpm_setup"
    tpm12_only = {"tpm-1.2", "tpm12-not-need-root"}
    assert set(ref["features"]) - tpm12_only <= set(ours["features"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tpm2", "--createek"], "--tpm-state must be provided"),
        (["--tpm-state", "{dir}", "--createek"], "TPM 1.2 is not supported"),
        (["--tpm2", "--tpm-state", "{dir}", "--pcr-banks", "md5"], "Unsupported PCR bank(s) md5"),
        (["--tpm2", "--tpm-state", "{dir}", "--rsa-keysize", "1000"], "Unsupported RSA key size 1000."),
        # str.isdigit() accepts "²", int() does not: was a ValueError (tests/fuzz/target_options.py)
        (["--tpm2", "--tpm-state", "{dir}", "--rsa-keysize", "\u00b2"], "Unsupported RSA key size \u00b2."),
        (["--tpm2", "--tpm-state", "{dir}", "--cipher", "des"], "Unsupported cipher des."),
        (["--tpm2", "--tpm-state", "file:///x"], "file:// backend is not supported"),
        (["--tpm2", "--tpm-state", "{dir}", "--reconfigure"], "Cannot reconfigure: no TPM state"),
        (["--tpm2", "--tpm-state", "{dir}", "--reconfigure", "--createek"], "Reconfiguration is not supported"),
        (["--tpm2", "--tpm-state", "{dir}", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(config, tmp_path, args, message):
    state = tmp_path / "tpm2"
    result = run_setup(*(a.format(dir=state) for a in args), config=config)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (state / "tpm2-00.permall").exists()
