#!/usr/bin/env bash
# Install what vtpm-cuse and its tests need on a Debian machine, and create .venv.
# Idempotent: a second run only checks.  Runs as root (apt-get) or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  python3 python3-venv python3-dev gcc pkg-config   # the virtualenv and tpm2-pytss's build
  libtss2-dev                                       # tpm2-pytss (independent TPM structure decoder)
  tpm2-tools swtpm swtpm-tools                      # real clients and the reference TPM
  qemu-system-x86 busybox-static cpio               # the real-kernel CUSE VM harness
  seabios qemu-utils                                # QEMU TPM tests: guest firmware, qcow2 for savevm
  libvirt-daemon-driver-qemu libvirt-clients        # libvirt: emulator backend (session libvirtd), passthrough in the VM
  systemd util-linux                                # systemd-analyze verify of the unit; runuser
  iproute2                                          # ss -ltnp: who listens (tests/test_cli_as_swtpm.py)
  openssl                                           # openssl x509/verify of CertifyX509's certificates
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# editable_mode=compat: the checkout goes on sys.path through a plain .pth line; the default
# (an import-hook finder) makes every interpreter start import pathlib, importlib.util and
# friends first, ~10 ms of each daemon start (scripts/bench_startup.py).  setuptools calls the
# mode transitional: where it is gone, the default install is used.
# pip's and setuptools' chatter goes to a log that is shown only when something fails.
if ! { .venv/bin/python -m pip install -q --upgrade pip && { .venv/bin/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat \
    || .venv/bin/python -m pip install -q -e '.[test]'; }; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup: installing the Python packages failed" >&2
  exit 1
fi
