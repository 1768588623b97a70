"""vtpm-setup's configuration: swtpm_setup.conf and swtpm-localca.options formats.

``swtpm_setup.conf`` keys honoured: ``create_certs_tool_config`` (a swtpm-localca.conf
naming the CA directory), ``create_certs_tool_options`` (platform certificate fields),
``active_pcr_banks`` and ``rsa_keysize``.  ``create_certs_tool`` is read but not run: the
certificates are always made by the built-in CA (:mod:`vtpm_cuse.localca`), which writes
the same files swtpm_localca does, so an existing swtpm CA directory can be shared.

Without ``--config``, the first of ``$XDG_CONFIG_HOME/vtpm-setup.conf`` (or
``~/.config/vtpm-setup.conf``) and ``/etc/vtpm-cuse/vtpm-setup.conf`` that exists is
read; when none does, the built-in defaults apply (CA under ``/var/lib/vtpm-cuse/localca``
for root, ``$XDG_CONFIG_HOME/vtpm-cuse/localca`` otherwise).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..localca import LocalCaConfig, LocalCaError, PlatformInfo, read_key_values

__all__ = [
    "DEFAULT_PCR_BANKS",
    "SetupConfig",
    "SYSTEM_CONFIG",
    "create_config_files",
    "find_config_file",
    "load_setup_config",
    "read_platform_options",
    "user_config_dir",
]

SYSTEM_CONFIG = Path("/etc/vtpm-cuse/vtpm-setup.conf")
SYSTEM_CA_DIR = Path("/var/lib/vtpm-cuse/localca")
CONFIG_NAME = "vtpm-setup.conf"
LOCALCA_CONFIG_NAME = "vtpm-localca.conf"
LOCALCA_OPTIONS_NAME = "vtpm-localca.options"
DEFAULT_PCR_BANKS = "sha256"
DEFAULT_RSA_KEYSIZE = 2048
#: The platform certificate's fields when no options file names them (swtpm's defaults).
DEFAULT_PLATFORM = PlatformInfo(manufacturer="vtpm-cuse", model="QEMU", version="2.1")


class ConfigError(LocalCaError):
    """A configuration file is missing or malformed."""


def user_config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    xdg = environ.get("XDG_CONFIG_HOME")
    return Path(xdg) if xdg else Path(environ.get("HOME", "/")) / ".config"


def find_config_file(environ: Mapping[str, str] = os.environ) -> Path | None:
    for candidate in (user_config_dir(environ) / CONFIG_NAME, SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class SetupConfig:
    localca: LocalCaConfig
    platform: PlatformInfo
    active_pcr_banks: str
    rsa_keysize: int


def _default_ca_dir(environ: Mapping[str, str]) -> Path:
    return SYSTEM_CA_DIR if os.geteuid() == 0 else user_config_dir(environ) / "vtpm-cuse" / "localca"


def read_platform_options(path: Path) -> PlatformInfo:
    """``--platform-manufacturer X`` / ``--platform-model X`` / ``--platform-version X`` lines."""
    try:
        words = shlex.split(path.read_text(), comments=True)
    except OSError as e:
        raise ConfigError(f"cannot read options file {path}: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    fields = {"manufacturer": DEFAULT_PLATFORM.manufacturer, "model": DEFAULT_PLATFORM.model}
    fields["version"] = DEFAULT_PLATFORM.version
    names = {"--platform-manufacturer": "manufacturer", "--platform-model": "model", "--platform-version": "version"}
    it = iter(words)
    for word in it:
        value = next(it, None)
        if word in names:
            if value is None:
                raise ConfigError(f"{path}: {word} needs a value")
            fields[names[word]] = value
        # Other swtpm_localca options (--tpm-manufacturer ...) do not apply: the TPM's own
        # properties are what its EK certificate states.
    return PlatformInfo(**fields)


def load_setup_config(path: Path | None, environ: Mapping[str, str] = os.environ) -> SetupConfig:
    """The configuration from ``path`` (or the built-in defaults when None)."""
    values = read_key_values(path) if path is not None else {}
    ca_config_path = values.get("create_certs_tool_config")
    localca = (
        LocalCaConfig.from_file(ca_config_path)
        if ca_config_path
        else LocalCaConfig.in_directory(_default_ca_dir(environ))
    )
    options_path = values.get("create_certs_tool_options")
    platform = read_platform_options(Path(options_path)) if options_path else DEFAULT_PLATFORM
    keysize_text = values.get("rsa_keysize", "").strip() or str(DEFAULT_RSA_KEYSIZE)
    if keysize_text == "max":
        keysize_text = "3072"
    try:
        rsa_keysize = int(keysize_text)
    except ValueError:
        raise ConfigError(f"{path}: rsa_keysize {keysize_text!r} is not a number") from None
    return SetupConfig(
        localca=localca,
        platform=platform,
        active_pcr_banks=values.get("active_pcr_banks", "").strip() or DEFAULT_PCR_BANKS,
        rsa_keysize=rsa_keysize,
    )


def create_config_files(
    *, overwrite: bool, allow_root: bool, skip_if_exist: bool, environ: Mapping[str, str] = os.environ
) -> list[Path]:
    """``--create-config-files``: a user's vtpm-setup.conf, vtpm-localca.conf and .options."""
    if os.geteuid() == 0 and not allow_root:
        raise ConfigError("refusing to create configuration files for root without the 'root' flag")
    directory = user_config_dir(environ)
    ca_dir = directory / "vtpm-cuse" / "localca"
    files = {
        directory / CONFIG_NAME: (
            f"create_certs_tool_config = {directory / LOCALCA_CONFIG_NAME}\n"
            f"create_certs_tool_options = {directory / LOCALCA_OPTIONS_NAME}\n"
            f"active_pcr_banks = {DEFAULT_PCR_BANKS}\n"
        ),
        directory / LOCALCA_CONFIG_NAME: (
            f"statedir = {ca_dir}\n"
            f"signingkey = {ca_dir / 'signkey.pem'}\n"
            f"issuercert = {ca_dir / 'issuercert.pem'}\n"
            f"certserial = {ca_dir / 'certserial'}\n"
        ),
        directory / LOCALCA_OPTIONS_NAME: (
            f"--platform-manufacturer {DEFAULT_PLATFORM.manufacturer}\n"
            f"--platform-version {DEFAULT_PLATFORM.version}\n"
            f"--platform-model {DEFAULT_PLATFORM.model}\n"
        ),
    }
    existing = [p for p in files if p.exists()]
    if existing and skip_if_exist:
        return []
    if existing and not overwrite:
        raise ConfigError(f"{existing[0]} exists; use --create-config-files overwrite to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return list(files)
