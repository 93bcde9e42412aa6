#!/bin/sh
# Regenerates samples/app.log byte for byte from the task generator (seed 2026, 1.5 MB) and checks it against the
# committed sha256. Usage: samples/generate.sh   (RLM=path/to/rlm to use another binary)
set -eu
cd "$(dirname "$0")/.."
expected=471cb07152a459cddefca31e6b339f349426d93ab475c369bffa44d0d086c786
rlm=${RLM:-.build/debug/rlm}
if [ ! -x "$rlm" ]; then
    swift build --product rlm
fi
"$rlm" bench tasks sample --out samples/app.log
if command -v sha256sum >/dev/null 2>&1; then
    actual=$(sha256sum samples/app.log | cut -d' ' -f1)
else
    actual=$(shasum -a 256 samples/app.log | cut -d' ' -f1)
fi
if [ "$actual" != "$expected" ]; then
    echo "samples/app.log: sha256 $actual, expected $expected (the generator changed?)" >&2
    exit 1
fi
echo "samples/app.log: sha256 ok"
