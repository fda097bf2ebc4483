#!/usr/bin/env bash
# The test suite: install, lint, unit tests (no root), then the kernel tests (root, real namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
.venv/bin/ruff check src tests
.venv/bin/lint-imports
.venv/bin/pytest -q -p no:cacheprovider tests/unit "$@"
if [ "$(id -u)" = 0 ]; then
  .venv/bin/pytest -q -p no:cacheprovider tests/kernel "$@"
else
  echo "not root: skipping tests/kernel (they create network namespaces)" >&2
  exit 1
fi
