#!/usr/bin/env bash
# README command 2: the test suite (creates/reuses .venv). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
exec python -m pytest -q -p no:cacheprovider "$@"
