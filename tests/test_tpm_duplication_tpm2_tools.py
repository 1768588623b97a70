"""Credentials and duplication with Debian's tpm2-tools against ``vtpm-cuse socket``.

tpm2_makecredential runs offline (``--tcti none``): tpm2-tools computes the credential
in software from the key's public area, an implementation independent of ours, and
tpm2_activatecredential then recovers it in our TPM.  Both make the same credential
inside the TPM too (tpm2_makecredential through the TCTI).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.test_sockets_tpm2_tools import daemon, tpm2  # noqa: F401 (the fixtures)


@pytest.fixture
def keys(tpm2, tmp_path: Path):  # noqa: F811 (the fixture)
    """A storage primary (the credential key) and an ECC key under it (the credentialed key)."""

    def step(*args: str) -> subprocess.CompletedProcess[bytes]:
        result = tpm2(*args)
        tpm2("flushcontext", "-t")
        return result

    paths = {n: str(tmp_path / n) for n in ("primary.ctx", "primary.pub", "key.pub", "key.priv", "key.ctx", "key.name")}
    step("createprimary", "-C", "o", "-G", "ecc", "-c", paths["primary.ctx"])
    step("readpublic", "-c", paths["primary.ctx"], "-o", paths["primary.pub"])
    step("create", "-C", paths["primary.ctx"], "-G", "ecc", "-u", paths["key.pub"], "-r", paths["key.priv"])
    step("load", "-C", paths["primary.ctx"], "-u", paths["key.pub"], "-r", paths["key.priv"], "-c", paths["key.ctx"])
    step("readpublic", "-c", paths["key.ctx"], "-n", paths["key.name"])
    return step, paths


@pytest.mark.parametrize("where", ["offline", "in-tpm"])
def test_tpm2_makecredential_then_activatecredential(keys, tpm2, tmp_path: Path, where):  # noqa: F811
    step, paths = keys
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(32))
    blob, out = str(tmp_path / "cred.out"), str(tmp_path / "certinfo")
    name = Path(paths["key.name"]).read_bytes().hex()
    make = ["makecredential", "-u", paths["primary.pub"], "-s", str(secret), "-n", name, "-o", blob]
    if where == "offline":
        make[1:1] = ["--tcti", "none"]
    step(*make)
    step("activatecredential", "-c", paths["key.ctx"], "-C", paths["primary.ctx"], "-i", blob, "-o", out)
    assert Path(out).read_bytes() == secret.read_bytes()
    # A credential for another Name does not activate with this key.
    other = ["makecredential", "--tcti", "none", "-u", paths["primary.pub"], "-s", str(secret)]
    step(*other, "-n", "000b" + "00" * 32, "-o", blob)
    failed = tpm2(
        "activatecredential", "-c", paths["key.ctx"], "-C", paths["primary.ctx"], "-i", blob, "-o", out, check=False
    )
    tpm2("flushcontext", "-t")
    assert failed.returncode != 0 and b"0x1df" in failed.stderr.lower()  # TPM_RC_INTEGRITY, parameter 1
