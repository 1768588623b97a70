"""``vtpm-setup``: swtpm_setup's command line, manufacturing vtpm-cuse state.

Installed as ``swtpm_setup`` (a symlink), it is what libvirt runs before it starts the
TPM: the options, exit codes, log lines and ``--print-capabilities`` are swtpm_setup's.
TPM 1.2 options are refused with a message (vtpm-cuse is a TPM 2.0).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..localca import LocalCaError
from ..state import load_key_option
from ..state.errors import StateError
from .config import create_config_files, find_config_file, load_setup_config
from .manufacture import SetupError, SetupLog, SetupRequest, manufacture

__all__ = ["FEATURES", "main"]

#: swtpm_setup ``--print-capabilities`` feature names this tool implements.
FEATURES = (
    "tpm-2.0",
    "cmdarg-keyfile-fd",
    "cmdarg-pwdfile-fd",
    "cmdarg-write-ek-cert-files",
    "cmdarg-create-config-files",
    "cmdarg-reconfigure-pcr-banks",
    "tpm2-rsa-keysize-2048",
    "tpm2-rsa-keysize-3072",
)
CIPHERS = {"aes-128-cbc": "aes-128-cbc", "aes-cbc": "aes-128-cbc", "aes-256-cbc": "aes-256-cbc"}
TPM12_ONLY = ("--take-ownership", "--ownerpass", "--owner-well-known", "--srkpass", "--srk-well-known")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 1, like swtpm_setup (argparse uses 2)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vtpm-setup", description="Manufacture a vtpm-cuse TPM 2.0 state (swtpm_setup compatible).")
    add = p.add_argument
    add("--tpm-state", "--tpmstate", dest="tpm_state", help="state directory, or dir://<dir>")
    add("--tpm2", action="store_true", help="set up a TPM 2 (always; TPM 1.2 is not implemented)")
    add("--tpm", "--swtpm", dest="tpm", help="TPM program (accepted; the engine runs in this process)")
    add("--swtpm_ioctl", help=argparse.SUPPRESS)
    add("--createek", action="store_true", help="create the RSA and ECC EKs")
    add("--create-ek-cert", action="store_true", help="create EK certificates (implies --createek)")
    add("--create-platform-cert", action="store_true", help="create a platform certificate (implies --createek)")
    add("--create-spk", action="store_true", help="create a storage primary key at 0x81000001")
    add("--ecc", action="store_true", help="make the storage primary key an ECC key")
    add("--allow-signing", action="store_true", help="create non-standard EKs that can sign")
    add("--decryption", action="store_true", help="with --allow-signing: the EKs also decrypt")
    add("--lock-nvram", action="store_true", help="write-lock the certificate NV indices")
    add("--display", action="store_true", help="show the resulting configuration")
    add("--config", help="swtpm_setup.conf-style configuration file")
    add("--vmid", help="VM id: the certificates' subject")
    add("--logfile", help="append the log to this file")
    add("--keyfile", help="file with the hex state encryption key")
    add("--keyfile-fd", type=int, help="fd to read the hex state encryption key from")
    add("--pwdfile", help="file with a passphrase for the state encryption key")
    add("--pwdfile-fd", type=int, help="fd to read a passphrase from")
    add("--cipher", default="aes-128-cbc", help="aes-128-cbc or aes-256-cbc")
    add("--overwrite", action="store_true", help="re-initialise existing state")
    add("--not-overwrite", action="store_true", help="keep existing state and succeed")
    add("--pcr-banks", action="append", help="comma-separated PCR banks to activate, '-' to keep all")
    add("--rsa-keysize", help="RSA EK size: 2048, 3072 or max")
    add("--write-ek-cert-files", help="also write the EK certificates into this directory")
    add("--create-config-files", nargs="?", const="", help="[overwrite][,root][,skip-if-exist]")
    add("--tcsd-system-ps-file", help=argparse.SUPPRESS)
    add("--runas", help="(not supported: run vtpm-setup as the target user)")
    add("--reconfigure", action="store_true", help="change the PCR banks of existing state")
    add("--print-capabilities", action="store_true", help="print the supported features as JSON")
    add("--version", action="store_true", help="print the version")
    for name in TPM12_ONLY:
        add(name, nargs="?", const="", help=argparse.SUPPRESS)
    return p


def capabilities_json() -> str:
    return json.dumps({"type": "swtpm_setup", "features": list(FEATURES), "version": __version__})


def _state_dir(value: str) -> Path:
    if value.startswith("file://"):
        raise UsageError(f"--tpm-state {value}: the file:// backend is not supported; use a directory")
    return Path(value[len("dir://") :] if value.startswith("dir://") else value)


def _file_key(args: argparse.Namespace):
    cipher = CIPHERS.get(args.cipher)
    if cipher is None:
        raise UsageError(f"Unsupported cipher {args.cipher}.")
    sources = [
        ("file", args.keyfile),
        ("fd", args.keyfile_fd),
        ("pwdfile", args.pwdfile),
        ("pwdfd", args.pwdfile_fd),
    ]
    given = [(k, v) for k, v in sources if v is not None]
    if not given:
        return None
    kind, value = given[0]
    return load_key_option(f"{kind}={value},mode={cipher}", option=f"--{kind}")


def _rsa_keysize(args: argparse.Namespace, default: int) -> int:
    text = args.rsa_keysize or str(default)
    size = 3072 if text == "max" else int(text) if text.isascii() and text.isdigit() else 0
    if size not in (2048, 3072):
        raise UsageError(f"Unsupported RSA key size {text}.")
    return size


def run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"TPM emulator setup tool (vtpm-setup) version {__version__}")
        return 0
    if args.print_capabilities:
        print(capabilities_json())
        return 0
    if args.create_config_files is not None:
        flags = {f for f in args.create_config_files.replace(" ", ",").split(",") if f}
        if {"overwrite", "skip-if-exist"} <= flags:
            raise UsageError("overwrite and skip-if-exist cannot both be used")
        create_config_files(
            overwrite="overwrite" in flags, allow_root="root" in flags, skip_if_exist="skip-if-exist" in flags
        )
        return 0
    log = SetupLog(Path(args.logfile) if args.logfile else None, _print_out, _print_err)
    if args.logfile and Path(args.logfile).is_symlink():
        raise UsageError("Logfile must not be a symlink.")
    if not args.tpm2:
        log.error("TPM 1.2 is not supported by vtpm-cuse; use --tpm2.")
        return 1
    for name in TPM12_ONLY:
        if getattr(args, name[2:].replace("-", "_")) is not None:
            log.error(f"{name} applies to a TPM 1.2 only.")
            return 1
    if args.runas:
        log.error("--runas is not supported; run vtpm-setup as the user that owns the state.")
        return 1
    if args.tpm_state is None:
        log.error("--tpm-state must be provided")
        return 1
    config_path = Path(args.config) if args.config else find_config_file()
    config = load_setup_config(config_path)
    create_ek = args.createek or args.create_ek_cert or args.create_platform_cert
    if args.reconfigure and (create_ek or args.create_spk):
        log.error("Reconfiguration is not supported with creation of EK or certificates")
        return 1
    banks = ",".join(b for b in args.pcr_banks or [] if b.strip()) or config.active_pcr_banks
    request = SetupRequest(
        state_dir=_state_dir(args.tpm_state),
        vmid=args.vmid,
        create_ek=create_ek,
        ek_cert=args.create_ek_cert,
        platform_cert=args.create_platform_cert,
        lock_nvram=args.lock_nvram,
        create_spk=args.create_spk,
        ecc_spk=args.ecc,
        allow_signing=args.allow_signing,
        decryption=args.decryption,
        rsa_keysize=_rsa_keysize(args, config.rsa_keysize),
        pcr_banks=banks,
        overwrite=args.overwrite,
        not_overwrite=args.not_overwrite,
        reconfigure=args.reconfigure,
        write_ek_cert_files=Path(args.write_ek_cert_files) if args.write_ek_cert_files else None,
        display=args.display,
        file_key=_file_key(args),
        localca=config.localca,
        platform=config.platform,
    )
    try:
        manufacture(request, log)
    except SetupError as e:
        log.error(str(e))
        return 1
    if args.display:
        _display(request)
    return 0


def _display(request: SetupRequest) -> None:
    from .display import describe_state

    for line in describe_state(request.state_dir, request.file_key):
        print(line)


def _print_out(line: str) -> None:
    print(line, flush=True)


def _print_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except (UsageError, LocalCaError, StateError, ValueError) as e:
        print(f"vtpm-setup: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
