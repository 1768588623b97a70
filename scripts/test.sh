#!/usr/bin/env bash
# Run every test: unit, protocol (simulated kernel peer), end-to-end with real clients,
# and the real-kernel CUSE tests inside the QEMU VM harness.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
# Style holds without review: lint and layout first (configured in pyproject.toml).
.venv/bin/ruff check . || exit 1
.venv/bin/ruff format --check . || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
