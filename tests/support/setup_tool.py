"""Running ``vtpm-setup`` (and Debian's swtpm_setup as the reference) in tests.

Both get a private CA directory through a swtpm_setup.conf + swtpm-localca.conf pair, so
no test touches /var/lib/swtpm-localca or /var/lib/vtpm-cuse.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .daemon import REPO, env_with_repo

SETUP = [sys.executable, "-m", "vtpm_cuse.setup.cli"]
SWTPM_LOCALCA = "/usr/bin/swtpm_localca"
#: What libvirt (src/qemu/qemu_tpm.c) passes to swtpm_setup on a VM's first start.
LIBVIRT_OPTIONS = ["--createek", "--create-ek-cert", "--create-platform-cert", "--lock-nvram", "--not-overwrite"]
TIMEOUT = 120


@dataclass
class SetupConfig:
    """A swtpm_setup.conf whose CA lives in ``ca_dir``."""

    directory: Path

    @property
    def ca_dir(self) -> Path:
        return self.directory / "ca"

    @property
    def path(self) -> Path:
        return self.directory / "setup.conf"

    def write(self, tool: str = SWTPM_LOCALCA) -> SetupConfig:
        self.directory.mkdir(parents=True, exist_ok=True)
        localca = self.directory / "localca.conf"
        options = self.directory / "localca.options"
        ca = self.ca_dir
        localca.write_text(
            f"statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\n"
            f"certserial = {ca}/certserial\n"
        )
        options.write_text('--platform-manufacturer "Test Platform"\n--platform-version 2.1\n--platform-model QEMU\n')
        self.path.write_text(
            f"create_certs_tool = {tool}\ncreate_certs_tool_config = {localca}\n"
            f"create_certs_tool_options = {options}\nactive_pcr_banks = sha256\n"
        )
        ca.mkdir(exist_ok=True)
        return self


def run_setup(*args: str, config: SetupConfig) -> subprocess.CompletedProcess[str]:
    """``vtpm-setup ARGS --config`` from the working tree (always with a private CA)."""
    return subprocess.run(
        [*SETUP, *args, "--config", str(config.path)],
        cwd=REPO,
        env=env_with_repo(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def run_swtpm_setup(*args: str, config: SetupConfig) -> subprocess.CompletedProcess[str]:
    """Debian's ``swtpm_setup ARGS`` (the reference), with its CA in ``config``."""
    return subprocess.run(
        ["swtpm_setup", *args, "--config", str(config.path)], capture_output=True, text=True, timeout=TIMEOUT
    )
