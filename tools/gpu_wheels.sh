#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with what the GPU machine lacks, to be carried there (device `carry: [".whl", ...]`):
# sd-scripts' own pins as wheels (the machine's transformers 5.x / huggingface_hub 1.x break the diffusers 0.32.1
# sd-scripts needs; see docs in ../shared/docs/gpu.md), bitsandbytes trimmed to its CPU + CUDA 13.0 libraries,
# peft 0.17.1 (the machine's peft is built for its newer transformers), toml, and the CLIP BPE vocab that
# tools/build_tokenizers.py reads (open_clip_torch is not on that machine).
# Needs network; run once here. Idempotent: files already present are kept.  usage: tools/gpu_wheels.sh [DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEST="${1:-.whl}"
PY="${PY:-.venv/bin/python}"
# python3.12 x86-64 on the device; pure-Python wheels match any platform, tokenizers/bitsandbytes need manylinux
TARGET=(--only-binary=:all: --no-deps --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
PINS=(transformers==4.54.1 huggingface_hub==0.34.3 tokenizers==0.21.4 diffusers==0.32.1 accelerate==1.6.0
      toml==0.10.2 voluptuous==0.15.2 imagesize==1.4.1 ftfy==6.3.1 wcwidth==0.2.13 peft==0.17.1)
BNB=bitsandbytes==0.50.2

mkdir -p "$DEST"
"$PY" -m pip download -q "${TARGET[@]}" -d "$DEST" "${PINS[@]}"

if ! ls "$DEST"/bitsandbytes-*.whl >/dev/null 2>&1; then
  full="$(mktemp -d)"
  trap 'rm -rf "$full"' EXIT
  "$PY" -m pip download -q "${TARGET[@]}" -d "$full" "$BNB"
  "$PY" tools/trim_bnb_wheel.py "$full"/bitsandbytes-*.whl "$DEST"
fi

bpe="$("$PY" -c 'import sys; sys.path.insert(0, "tools"); import build_tokenizers as b; print(b.default_bpe_path())')"
cp -n "$bpe" "$DEST/"

# two versions of one package would make the device's pip install refuse the whole set
dupes="$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr '[:upper:]' '[:lower:]' | sort | uniq -d)"
[ -z "$dupes" ] || { echo "error: $DEST holds several versions of: $dupes" >&2; exit 1; }
du -sh "$DEST"
ls -la "$DEST"
