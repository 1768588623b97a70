#!/usr/bin/env bash
# Set up (Debian packages, .venv) and run a vTPM as an swtpm-compatible socket server:
# data channel on TCP port ${VTPM_PORT:-2321}, control channel on the next port, state in
# ${VTPM_STATE:-$HOME/.local/share/vtpm-cuse/demo}.  Talk to it with
#   tpm2_getrandom -T swtpm:host=127.0.0.1,port=2321 8 --hex
#   .venv/bin/vtpm-ioctl --tcp 127.0.0.1:2322 -c
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
port=${VTPM_PORT:-2321}
state=${VTPM_STATE:-$HOME/.local/share/vtpm-cuse/demo}
mkdir -p "$state"
echo "vtpm-cuse: TPM 2.0 on 127.0.0.1:$port (control :$((port + 1))), state in $state"
exec .venv/bin/vtpm-cuse socket --tpm2 --tpmstate "dir=$state" \
  --server "type=tcp,port=$port,bindaddr=127.0.0.1" --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
  --flags not-need-init,startup-clear "$@"
