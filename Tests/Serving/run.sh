#!/usr/bin/env bash
# The serving tests: the real `rlm serve` and `rlm mcp` driven with the official openai and mcp clients, schemathesis
# against docs/openapi.json, load on loopback and SIGTERM. Needs a built rlm (swift build): $RLM_BIN, default
# .build/debug/rlm. Installs the pinned packages into the python3 on PATH first (what CI does).
#   Tests/Serving/run.sh [pytest arguments…]      e.g. Tests/Serving/run.sh -k mcp -x
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export RLM_BIN="${RLM_BIN:-$repo/.build/debug/rlm}"
[ -x "$RLM_BIN" ] || { echo "no rlm binary at $RLM_BIN: build it first (swift build) or set RLM_BIN" >&2; exit 2; }
python3 -m pip install -q -r "$here/requirements.txt" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages -r "$here/requirements.txt"
export PYTHONDONTWRITEBYTECODE=1
cd "$repo"
exec python3 -m pytest Tests/Serving -q "$@"
