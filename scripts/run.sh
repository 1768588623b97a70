#!/usr/bin/env bash
# Set up (Debian packages, .venv) and run a vTPM.
#
#   scripts/run.sh            the CUSE character device: creates /dev/vtpm-demo and drives it
#                             with tpm2-tools (scripts/cuse_demo.sh). On a kernel without CUSE
#                             (no /dev/cuse) the same demo runs inside the QEMU VM harness.
#   scripts/run.sh socket [OPTIONS]
#                             the swtpm-compatible socket server: data channel on TCP port
#                             ${VTPM_PORT:-2321}, control channel on the next port, state in
#                             ${VTPM_STATE:-$HOME/.local/share/vtpm-cuse/demo}. Talk to it with
#                               tpm2_getrandom -T swtpm:host=127.0.0.1,port=2321 8 --hex
#                               .venv/bin/vtpm-ioctl --tcp 127.0.0.1:2322 -c
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

if [[ ${1:-} == socket ]]; then
  shift
  port=${VTPM_PORT:-2321}
  state=${VTPM_STATE:-$HOME/.local/share/vtpm-cuse/demo}
  mkdir -p "$state"
  echo "vtpm-cuse: TPM 2.0 on 127.0.0.1:$port (control :$((port + 1))), state in $state"
  exec .venv/bin/vtpm-cuse socket --tpm2 --tpmstate "dir=$state" \
    --server "type=tcp,port=$port,bindaddr=127.0.0.1" --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
    --flags not-need-init,startup-clear "$@"
fi
[[ $# -eq 0 ]] || { echo "usage: $0 [socket [OPTIONS]]" >&2; exit 2; }

if [[ -e /dev/cuse ]]; then
  as_root=()
  [[ $(id -u) -eq 0 ]] || as_root=(sudo --preserve-env=VTPM_NAME,VTPM_STATE,VTPM_DEMO_STOP)
  exec "${as_root[@]}" scripts/cuse_demo.sh
fi

echo "vtpm-cuse: this kernel has no CUSE (/dev/cuse is missing; CONFIG_CUSE is off)."
echo "vtpm-cuse: running the same demo inside the VM harness (Debian kernel with cuse.ko, QEMU TCG)..."
inner=$(mktemp /tmp/vtpm-demo.XXXXXX)
trap 'rm -f "$inner"' EXIT
printf '#!/bin/bash\nexport VTPM_DEMO_STOP=1 VTPM_STATE=/tmp/vtpm-demo-state\nexec %q/scripts/cuse_demo.sh\n' "$PWD" > "$inner"
scripts/cusevm/run.sh "$inner"
