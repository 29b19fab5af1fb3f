#!/usr/bin/env bash
# `make gpu-smoke`: prove `medsynth train` on the GPU machine (no network) and measure it.
# Run from anywhere; works in the repo it lives in. Needs .whl/ (tools/gpu_wheels.sh) and vendor/sd-scripts.
#   1. install the carried wheels into $SMOKE_SITE (sd-scripts' pins; the machine's transformers 5 breaks them)
#   2. offline CLIP tokenizers, a random-init SDXL checkpoint built on the GPU, the FLOPs of a training step
#   3. the demo dataset (`medsynth dataset build`), twice: many repeats for the fast preset, few for the slow one
#   4. `medsynth train --preset default`, then `--preset seed-blog`, each briefly, with nvidia-smi sampling
#   5. bench/gpu_figures.py -> ONE JSON: $OUT/gpu_smoke.json (+ console log, timestamped train logs, a sample)
# Hard internal deadline (SMOKE_DEADLINE s, default 420): runs get what time is left; figures are written anyway.
# Knobs for the CPU rehearsal: SMOKE_CPU=1 (train with --cpu at 256 px on SMOKE_MAX_IMAGES images),
# SMOKE_PY (interpreter, default python3), SMOKE_WORK, SMOKE_SITE, SMOKE_CKPT (reuse a checkpoint file).
# Variants on a warm machine: SMOKE_PRESETS (default "default seed-blog"; "low-vram" may be added), SMOKE_DEFAULT_ARGS (extra `medsynth
# train` arguments for the default run, e.g. "--set train_batch_size=16").
set -u -o pipefail

START=$(date +%s)
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${OUT:-$REPO/build/gpu-smoke}"
WORK="${SMOKE_WORK:-/tmp/medsynth-smoke}"
SITE="${SMOKE_SITE:-$WORK/site}"
PY="${SMOKE_PY:-python3}"
DEADLINE="${SMOKE_DEADLINE:-420}"
CPU="${SMOKE_CPU:-0}"
CKPT="${SMOKE_CKPT:-$WORK/sdxl_random.safetensors}"
mkdir -p "$OUT" "$WORK"

if [ "$CPU" = 1 ]; then  # plumbing only: 2 images at 256 px, tiny samples
  DEV=cpu; RES=256; MAX_IMAGES="${SMOKE_MAX_IMAGES:-2}"; REPEATS_FAST=2; REPEATS_SLOW=1; EPOCHS_FAST=2
  TRAIN_ARGS=(--cpu --set train_batch_size=2 --set mixed_precision=bf16 --set network_dim=8 --set network_alpha=8
              --set sample_width=256 --set sample_height=256 --set sample_steps=2)
else  # 20 demo images: default 20 x 16 repeats = 320 images/epoch (40 steps at batch 8), 2 epochs;
      # seed-blog (batch 1, ~1 image/s) 20 x 2 = 40 steps, 1 epoch
  DEV=cuda; RES=1024; MAX_IMAGES="${SMOKE_MAX_IMAGES:-0}"; REPEATS_FAST=16; REPEATS_SLOW=2; EPOCHS_FAST=2
  TRAIN_ARGS=(--set sample_steps=10)
fi

elapsed() { echo $(( $(date +%s) - START )); }
remaining() { echo $(( DEADLINE - $(date +%s) + START )); }
say() { echo "=== [$(elapsed)s] $*"; }
timed() {  # timed NAME CMD...: run, record wall seconds and exit code in $WORK/timings.jsonl
  local name=$1 t0 rc ms; shift
  t0=$(date +%s%N); "$@"; rc=$?; ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "{\"step\": \"$name\", \"rc\": $rc, \"wall_s\": $(( ms / 1000 )).$(printf %03d $(( ms % 1000 )))}" >> "$WORK/timings.jsonl"
  return $rc
}
kill_run() {  # the training processes of one run dir (sd-scripts' group survives a killed medsynth)
  local pattern="$1" p cmd
  for p in /proc/[0-9]*; do
    cmd="$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" || continue
    [[ "$cmd" == *"$pattern"* ]] && kill -9 "${p#/proc/}" 2>/dev/null
  done
}

setup() {
  say "start: $(hostname), repo $REPO, work $WORK, deadline ${DEADLINE}s, cpu rehearsal: $CPU"
  rm -rf "$WORK/runs" "$WORK"/ds-* "$WORK"/fig_*.json "$WORK/timings.jsonl" "$WORK/versions.json"
  say "install carried wheels into $SITE"
  rm -rf "$SITE"
  timed install_wheels "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
      .whl/*.whl 2>&1 | grep -v -i warning
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "FATAL: wheel install failed (run tools/gpu_wheels.sh here first)"; return 1; }
  export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HOME="$WORK/hf_home"
  export PYTHONUNBUFFERED=1 COLUMNS=250 TOKENIZERS_PARALLELISM=false BITSANDBYTES_NOWELCOME=1 MEDSYNTH_PYTHON="$PY"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

  say "versions + import of sdxl_train_network"
  "$PY" - "$WORK/versions.json" <<'EOF' || { echo "FATAL: the training stack does not import"; return 1; }
import importlib.metadata as md, json, platform, sys
from orchestrator.paths import SD_SCRIPTS_DIR
v = {"python": platform.python_version()}
for name in ("torch", "torchvision", "accelerate", "diffusers", "transformers", "huggingface-hub", "tokenizers",
             "bitsandbytes", "peft", "safetensors", "numpy", "toml"):
    try:
        v[name] = md.version(name)
    except md.PackageNotFoundError:
        v[name] = None
import torch
v["cuda"] = torch.version.cuda
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    v["gpu"], v["gpu_total_mib"], v["gpu_sms"] = p.name, p.total_memory // 2**20, p.multi_processor_count
sys.path.insert(0, str(SD_SCRIPTS_DIR))
import sdxl_train_network, networks.lora, bitsandbytes  # noqa: F401,E401  the whole import chain of training
json.dump(v, open(sys.argv[1], "w"), indent=1)
print(json.dumps(v))
EOF

  say "tokenizers, FLOPs (background) and the random checkpoint"
  timed tokenizers "$PY" tools/build_tokenizers.py "$WORK/tok" --bpe .whl/bpe_simple_vocab_16e6.txt.gz || return 1
  "$PY" bench/flops_unet.py --height "$RES" --width "$RES" --json "$WORK/flops.json" > "$WORK/flops.log" 2>&1 &
  FLOPS_PID=$!
  if [ -s "$CKPT" ] && [ -n "${SMOKE_CKPT:-}" ]; then
    say "reusing $CKPT"
  else
    timed checkpoint "$PY" tools/make_random_sdxl.py "$CKPT" --device "$DEV" --dtype bf16 --check \
        --json "$WORK/ckpt.json" || { echo "FATAL: checkpoint build failed"; return 1; }
  fi

  say "datasets (medsynth dataset build on the demo set)"
  local csv=datasets/demo/metadata.csv
  if [ "$MAX_IMAGES" -gt 0 ]; then  # the first N melanoma rows, for the CPU rehearsal
    csv="$WORK/metadata_subset.csv"
    "$PY" - "$MAX_IMAGES" "$csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open("datasets/demo/metadata.csv", newline="")))
keep = [r for r in rows if r["diagnosis"] == "melanoma"][: int(sys.argv[1])]
with open(sys.argv[2], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(keep)
EOF
  fi
  for pair in "fast:$REPEATS_FAST" "slow:$REPEATS_SLOW"; do
    timed "dataset_${pair%%:*}" "$PY" -m orchestrator.cli dataset build --csv "$csv" --images datasets/demo/images \
        --out "$WORK/ds-${pair%%:*}" --repeats "${pair##*:}" --resolution "$RES" --quiet >/dev/null \
        || { echo "FATAL: dataset build failed"; return 1; }
  done
  wait "$FLOPS_PID" || echo "flops_unet failed: $(tail -3 "$WORK/flops.log")"
}

train_run() {  # train_run PRESET DATASET TIMEOUT_S EXTRA_ARGS...
  local preset=$1 ds=$2 tmo=$3 name="smoke-$1" smi="" rc pipe hard t0=$(date +%s); shift 3
  local run_dir="$WORK/runs/$name"
  if command -v nvidia-smi >/dev/null && [ "$CPU" != 1 ]; then
    nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits -lms 500 \
        > "$WORK/gpumem_$preset.csv" 2>/dev/null &
    smi=$!
  fi
  say "train $preset (timeout ${tmo}s)"
  ( timeout -s INT -k 30 "$tmo" "$PY" -m orchestrator.cli train --preset "$preset" --run-name "$name" \
      --dataset "$WORK/ds-$ds" --offline --model "$CKPT" --set "tokenizer_cache_dir=$WORK/tok" \
      --set "runs_dir=$WORK/runs" --set num_sample_prompts=1 "${TRAIN_ARGS[@]}" "$@" 2>&1 \
    | "$PY" bench/tslog.py "$WORK/train_$preset.log" ) &
  pipe=$!
  hard=$(( $(date +%s) + tmo + 45 ))
  while kill -0 "$pipe" 2>/dev/null; do  # a killed medsynth leaves sd-scripts (own session) holding the pipe
    [ "$(date +%s)" -ge "$hard" ] && kill_run "$run_dir/train.toml"
    sleep 1
  done
  wait "$pipe"; rc=$?
  kill_run "$run_dir/train.toml"
  [ -n "$smi" ] && kill "$smi" 2>/dev/null
  say "train $preset: exit $rc (124 = timed out)"
  echo "{\"step\": \"train_$preset\", \"rc\": $rc, \"wall_s\": $(( $(date +%s) - t0 )), \"timeout_s\": $tmo}" \
      >> "$WORK/timings.jsonl"
  "$PY" bench/gpu_figures.py run "$run_dir" --tslog "$WORK/train_$preset.log" --gpumem "$WORK/gpumem_$preset.csv" \
      --flops "$WORK/flops.json" --json "$WORK/fig_$preset.json" > /dev/null || echo "figures of $preset failed"
}

main() {
  local presets=" ${SMOKE_PRESETS:-default seed-blog} " extra=()
  read -r -a extra <<< "${SMOKE_DEFAULT_ARGS:-}"
  setup || return 1
  local rem t
  rem=$(remaining); t=$(( rem - 110 )); [ "$t" -gt 300 ] && t=300   # leave ~110 s for seed-blog + figures
  [ "$t" -lt 60 ] && t=$(( rem - 20 ))                               # short of time: default alone
  [ "$t" -lt 45 ] && { echo "FATAL: only ${rem}s left for training"; return 1; }
  [[ "$presets" != *" seed-blog "* ]] && t=$(( $(remaining) - 20 ))
  [[ "$presets" == *" default "* ]] && train_run default fast "$t" --set "max_train_epochs=$EPOCHS_FAST" "${extra[@]}"
  rem=$(remaining); t=$(( rem - 20 ))
  if [[ "$presets" != *" seed-blog "* ]]; then
    :
  elif [ "$t" -ge 45 ]; then
    train_run seed-blog slow "$t" --set max_train_epochs=1 --set sample_every_n_epochs=1 --set save_every_n_epochs=1
  else
    say "skip seed-blog: only ${rem}s left"
  fi
  if [[ "$presets" == *" low-vram "* ]]; then  # opt-in (SMOKE_PRESETS): its peak VRAM against the 15 GB target
    rem=$(remaining); t=$(( rem - 20 ))
    if [ "$t" -ge 45 ]; then
      train_run low-vram slow "$t" --set max_train_epochs=1 --set sample_every_n_epochs=1 --set save_every_n_epochs=1
    else
      say "skip low-vram: only ${rem}s left"
    fi
  fi
}

summarise() {
  local runs=() preset
  for preset in default seed-blog low-vram; do
    [ -s "$WORK/fig_$preset.json" ] && runs+=("$preset=$WORK/fig_$preset.json")
  done
  "$PY" - "$WORK/timings.jsonl" "$WORK/timings.json" "$(elapsed)" "$CPU" <<'EOF'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1])] if __import__("os").path.exists(sys.argv[1]) else []
json.dump({"script_total_s": int(sys.argv[3]), "cpu_rehearsal": sys.argv[4] == "1", "steps": steps},
          open(sys.argv[2], "w"), indent=1)
EOF
  [ ${#runs[@]} -gt 0 ] || runs=("none=/dev/null")
  "$PY" bench/gpu_figures.py combine "$OUT/gpu_smoke.json" "${runs[@]}" --context "versions=$WORK/versions.json" \
      --context "checkpoint=$WORK/ckpt.json" --context "flops=$WORK/flops.json" --context "timings=$WORK/timings.json"
  for preset in default seed-blog low-vram; do
    [ -s "$WORK/train_$preset.log" ] && cp "$WORK/train_$preset.log" "$OUT/train_$preset.log"
  done
  local sample
  sample="$(ls -t "$WORK"/runs/smoke-default/sample/*.png 2>/dev/null | head -1)"
  [ -n "$sample" ] && "$PY" -c "import cv2,sys; im=cv2.imread(sys.argv[1]); cv2.imwrite(sys.argv[2], cv2.resize(im, (256, 256)))" \
      "$sample" "$OUT/sample_default.png"
}

{ main; echo "main exit: $?"; summarise; say "done; files in $OUT:"; ls -la "$OUT"; } 2>&1 | tee "$OUT/gpu_smoke.log"
