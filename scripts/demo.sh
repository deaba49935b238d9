#!/usr/bin/env bash
# README command 1: the demo audit on the embedded ground-truth data (creates/reuses .venv).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
exec trustaudit demo --out "${1:-trustaudit-demo}"
