#!/usr/bin/env bash
# cuse_demo.sh -- create /dev/${VTPM_NAME:-vtpm-demo} with vtpm-cuse and drive it with tpm2-tools.
#
# Needs root and a kernel with CUSE (/dev/cuse); scripts/run.sh runs it inside the
# cusevm guest when this kernel has none. The device stays up afterwards unless
# VTPM_DEMO_STOP=1 (set inside the VM, which powers off anyway); stop it with
#   .venv/bin/vtpm-ioctl -s /dev/vtpm-demo
set -euo pipefail
project=$(cd "$(dirname "$0")/.." && pwd)
bin=$project/.venv/bin
name=${VTPM_NAME:-vtpm-demo}
state=${VTPM_STATE:-/var/lib/vtpm-cuse/$name}
node=/dev/$name
export TPM2TOOLS_TCTI=device:$node

if [[ -e $node ]]; then
  echo "vtpm-cuse: $node already exists; driving it as it is"
else
  mkdir -p "$state"
  # Like swtpm, the daemon detaches and the command returns once the node exists.
  "$bin/vtpm-cuse" cuse -n "$name" --tpm2 --tpmstate "dir=$state" --flags not-need-init,startup-clear
  echo "vtpm-cuse: $node is up (state in $state): $(ls -l "$node")"
fi
echo "--- vtpm-ioctl -c $node";                  "$bin/vtpm-ioctl" -c "$node"
echo "--- tpm2_getrandom 16 --hex";               tpm2_getrandom 16 --hex; echo
echo "--- tpm2_pcrextend 16:sha256=<sha256(demo)>"; tpm2_pcrextend "16:sha256=$(printf demo | sha256sum | cut -c1-64)"
echo "--- tpm2_pcrread sha256:16";                tpm2_pcrread sha256:16
echo "--- tpm2_getcap properties-fixed (head)";   tpm2_getcap properties-fixed | sed -n 1,12p
if [[ ${VTPM_DEMO_STOP:-} == 1 ]]; then
  "$bin/vtpm-ioctl" -s "$node"
  echo "vtpm-cuse: shut down ($node removed)"
else
  echo "vtpm-cuse: $node stays up; stop it with: $bin/vtpm-ioctl -s $node"
fi
