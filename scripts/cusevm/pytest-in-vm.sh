#!/bin/bash
# pytest-in-vm.sh [PYTEST ARGS...] -- run a pytest selection inside the CUSE VM.
#
# Example: scripts/cusevm/pytest-in-vm.sh tests/vm/ -v
#
# The guest sees this checkout at the same absolute path (the host root is shared
# read-only with a tmpfs overlay), so the project's own virtualenv runs the tests:
# the guest's default python may differ. One pytest process does everything, because
# Python imports are slow under TCG. Exits with pytest's status.
#
# Environment: CUSEVM_VENV (default: <project>/.venv), CUSEVM_SHARE_DIR (keep the
# share, e.g. for results the tests write to $CUSEVM_SHARE), and everything run.sh reads.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/../.." && pwd)
venv=${CUSEVM_VENV:-$project/.venv}
[[ -x $venv/bin/python ]] || { echo "pytest-in-vm: no virtualenv python at $venv/bin/python" >&2; exit 125; }

script=$(mktemp /tmp/cusevm-pytest.XXXXXX)
trap 'rm -f "$script"' EXIT
{
  echo '#!/bin/bash'
  echo 'ip link set lo up 2>/dev/null || true'
  printf 'cd %q\n' "$project"
  # the cache plugin would only write into the throwaway overlay
  printf 'exec %q -m pytest -p no:cacheprovider' "$venv/bin/python"
  (($#)) && printf ' %q' "$@"
  echo
} > "$script"

set +e
"$here/run.sh" "$script" ${CUSEVM_SHARE_DIR:+"$CUSEVM_SHARE_DIR"}
rc=$?
exit $rc
