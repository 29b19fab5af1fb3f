#!/usr/bin/env bash
# `make gpu-smoke`: prove `medsynth train` on the GPU machine (no network) and measure it.
# Run from anywhere; works in the repo it lives in. Needs .whl/ (tools/gpu_wheels.sh) and vendor/sd-scripts.
#   1. install the carried wheels into $SMOKE_SITE (sd-scripts' pins; the machine's transformers 5 breaks them)
#   2. offline CLIP tokenizers, a random-init SDXL checkpoint built on the GPU, the FLOPs of a training step
#   3. the demo dataset (`medsynth dataset build`) three times: 16 repeats (fast runs), 2 and 1 (slow, short runs)
#   4. `medsynth train` once per variant of the plan (below), briefly, with nvidia-smi sampling (timestamped, so
#      the figures split the peak into setup / training / sampling) and each process's allocator peak
#      (bench/cuda_peak/sitecustomize.py)
#   5. bench/gpu_figures.py -> ONE JSON: $OUT/gpu_smoke.json (+ console log, timestamped train logs, a sample)
# Hard internal deadline (SMOKE_DEADLINE s, default 420): each variant gets at most its cap, and never the time the
# later variants' minimums need; figures are written whatever happens.
# SMOKE_PLAN: the variants, in order (default "default seed-blog"); see variant() for the list. Variants of one
# group ("vram": peak-memory probes at batch 1) run side by side on the GPU: the allocator peaks tell them apart.
# SMOKE_ARGS_<variant, - as _>: more `medsynth train` arguments for one variant, e.g.
#   SMOKE_ARGS_default="--set train_batch_size=16".
# Knobs for the CPU rehearsal: SMOKE_CPU=1 (train with --cpu at 256 px on SMOKE_MAX_IMAGES images; groups run one
# after the other), SMOKE_PY (interpreter, default python3), SMOKE_WORK, SMOKE_SITE, SMOKE_CKPT (reuse a checkpoint).
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

if [ "$CPU" = 1 ]; then  # plumbing only: 2 images at 256 px, tiny samples, caps scaled to the CPU's pace
  DEV=cpu; RES=256; MAX_IMAGES="${SMOKE_MAX_IMAGES:-2}"; REPEATS_FAST=2; REPEATS_SLOW=1; EPOCHS_FAST=2; PACE=6
  TRAIN_ARGS=(--cpu --set train_batch_size=2 --set mixed_precision=bf16 --set network_dim=8 --set network_alpha=8
              --set sample_width=256 --set sample_height=256 --set sample_steps=2)
else  # 20 demo images (all in one bucket): fast = 20 x 18 repeats = 360 images/epoch, 30 steps at batch 12, 2 epochs
      # (360 = full batches of 4, 6, 8 and 12: no short last batch, so a compiled run meets one training shape);
      # slow = 20 x 1 = 20 steps at batch 1 (~1 image/s on the seed's settings), 1 epoch
  DEV=cuda; RES=1024; MAX_IMAGES="${SMOKE_MAX_IMAGES:-0}"; REPEATS_FAST=18; REPEATS_SLOW=1; EPOCHS_FAST=2; PACE=1
  TRAIN_ARGS=(--set sample_steps=10)
fi
PEAKS="$WORK/cuda_peaks"

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
  rm -rf "$WORK/runs" "$WORK"/ds-* "$WORK"/fig_*.json "$WORK/timings.jsonl" "$WORK/versions.json" "$PEAKS"
  mkdir -p "$PEAKS"
  say "install carried wheels into $SITE"
  rm -rf "$SITE"
  timed install_wheels "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
      .whl/*.whl 2>&1 | grep -v -i warning
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "FATAL: wheel install failed (run tools/gpu_wheels.sh here first)"; return 1; }
  export PYTHONPATH="$REPO/bench/cuda_peak:$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}" MEDSYNTH_CUDA_PEAK_DIR="$PEAKS"
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HOME="$WORK/hf_home"
  export PYTHONUNBUFFERED=1 COLUMNS=250 TOKENIZERS_PARALLELISM=false BITSANDBYTES_NOWELCOME=1 MEDSYNTH_PYTHON="$PY"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

  say "versions + import of sdxl_train_network"
  "$PY" - "$WORK/versions.json" <<'EOF' || { echo "FATAL: the training stack does not import"; return 1; }
import importlib.metadata as md, json, platform, sys
from orchestrator.common.paths import SD_SCRIPTS_DIR
v = {"python": platform.python_version()}
for name in ("torch", "torchvision", "accelerate", "diffusers", "transformers", "huggingface-hub", "tokenizers",
             "bitsandbytes", "peft", "safetensors", "numpy", "toml", "triton"):
    try:
        v[name] = md.version(name)
    except md.PackageNotFoundError:
        v[name] = None
import shutil
import torch
v["cuda"] = torch.version.cuda
v["c_compiler"] = shutil.which("cc") or shutil.which("gcc")  # triton builds a small C module at first use
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
  if [[ " ${SMOKE_PLAN:-} " == *" compile"* ]]; then  # the inductor toolchain, before minutes go into a compile run
    timed compile_check "$PY" -c "import torch; d='$DEV'; f=torch.compile(lambda x: (x.sin() + 1).sum(), backend='inductor'); print(float(f(torch.ones(8, device=d))))" \
        > "$WORK/compile_check.log" 2>&1 &
    COMPILE_PID=$!
  fi
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
    timed "dataset_${pair%%:*}" "$PY" -m orchestrator.cli.main dataset build --csv "$csv" --images datasets/demo/images \
        --out "$WORK/ds-${pair%%:*}" --repeats "${pair##*:}" --resolution "$RES" --quiet >/dev/null \
        || { echo "FATAL: dataset build failed"; return 1; }
  done
  wait "$FLOPS_PID" || echo "flops_unet failed: $(tail -3 "$WORK/flops.log")"
  COMPILE_OK=1
  if [ -n "${COMPILE_PID:-}" ] && ! wait "$COMPILE_PID"; then
    COMPILE_OK=0; echo "torch.compile (inductor) does not work here: $(tail -3 "$WORK/compile_check.log")"
  fi
}

variant() {  # variant NAME -> "PRESET DATASET EPOCHS GROUP CAP_S MIN_S ENV ARGS..." (caps: GPU seconds)
  case "$1" in
    default)         echo "default   fast $EPOCHS_FAST - 170 90 -" ;;
    seed-blog)       echo "seed-blog slow 1 - 110 70 -" ;;
    low-vram)        echo "low-vram  slow 1 vram 120 75 -" ;;
    low-vram-plain)  echo "low-vram  slow 1 vram 120 75 - --set expandable_segments=false" ;;  # PyTorch's plain allocator
    tier24)          echo "default   slow 1 vram 120 75 - --set train_batch_size=1 --set gradient_checkpointing=false" ;;
    # a batch set by hand drops the tier's other settings: give the ≥70 GiB tier's explicitly
    tier80)          echo "default   fast 1 - 120 75 - --set train_batch_size=6 --set optimizer_type=AdamW --set optimizer_args=[\"fused=True\"] --set vae_batch_size=8 --set kohya.highvram=true" ;;
    # compile: the first inductor step of SDXL + LoRA took over 211 s on an H200 (bench/RESULTS.md): give it a call
    compile)         echo "default   fast 1 - 500 300 TORCH_LOGS=recompiles --set torch_compile=true --set dynamo_backend=inductor" ;;
    bs16)            echo "default   fast 1 - 150 90 - --set train_batch_size=16" ;;
    # default before its tier settings (bitsandbytes' AdamW8bit, VAE batch 1 with a cache flush per batch, PyTorch's
    # plain allocator): the comparison that made them the default
    untuned)         echo "default   fast 1 - 150 90 - --set optimizer_type=AdamW8bit --set optimizer_args=[] --set vae_batch_size= --set kohya.highvram=false --set expandable_segments=false" ;;
    *) return 1 ;;
  esac
}

train_run() {  # train_run NAME PRESET DATASET TIMEOUT_S ENV EXTRA_ARGS...
  local name=$1 preset=$2 ds=$3 tmo=$4 envs=$5 smi="" rc pipe hard t0=$(date +%s); shift 5
  local run_dir="$WORK/runs/smoke-$name" env_args=()
  [ "$envs" != - ] && IFS=, read -r -a env_args <<< "$envs"
  if command -v nvidia-smi >/dev/null && [ "$CPU" != 1 ]; then
    nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader,nounits -lms 500 \
        > "$WORK/gpumem_$name.csv" 2>/dev/null &
    smi=$!
  fi
  say "train $name: preset $preset, data $ds, timeout ${tmo}s${env_args:+, env ${env_args[*]}} $*"
  ( timeout -s INT -k 30 "$tmo" env "${env_args[@]}" "$PY" -m orchestrator.cli.main train --preset "$preset" \
      --run-name "smoke-$name" --dataset "$WORK/ds-$ds" --offline --model "$CKPT" \
      --set "tokenizer_cache_dir=$WORK/tok" --set "runs_dir=$WORK/runs" --set num_sample_prompts=1 \
      "${TRAIN_ARGS[@]}" "$@" 2>&1 | "$PY" bench/tslog.py "$WORK/train_$name.log" > "$WORK/console_$name.log" ) &
  pipe=$!
  hard=$(( $(date +%s) + tmo + 45 ))
  while kill -0 "$pipe" 2>/dev/null; do  # a killed medsynth leaves sd-scripts (own session) holding the pipe
    [ "$(date +%s)" -ge "$hard" ] && kill_run "$run_dir/train.toml"
    sleep 1
  done
  wait "$pipe"; rc=$?
  kill_run "$run_dir/train.toml"
  [ -n "$smi" ] && kill "$smi" 2>/dev/null
  tail -n "$([ "$rc" = 0 ] && echo 4 || echo 30)" "$WORK/console_$name.log"
  say "train $name: exit $rc (124 = timed out)"
  local quoted="$*"; quoted="${quoted//\"/\\\"}"
  echo "{\"step\": \"train_$name\", \"rc\": $rc, \"wall_s\": $(( $(date +%s) - t0 )), \"timeout_s\": $tmo," \
       "\"env\": \"$envs\", \"args\": \"$quoted\"}" >> "$WORK/timings.jsonl"
  "$PY" bench/gpu_figures.py run "$run_dir" --tslog "$WORK/train_$name.log" --gpumem "$WORK/gpumem_$name.csv" \
      --cuda-peaks "$PEAKS" --flops "$WORK/flops.json" --json "$WORK/fig_$name.json" ${SHARED:+--shared-gpu} \
      > /dev/null \
      || echo "figures of $name failed"
}

later_minimum() {  # later_minimum J PLAN...: the seconds the variants from index J on need at least;
  # side-by-side variants (one group, on a GPU) need their largest minimum once
  local j=$1 total=0 prev="" gmax=0 name grp min m
  shift
  local plan=("$@")
  for name in "${plan[@]:$j}"; do
    read -r _ _ _ grp _ min _ <<< "$(variant "$name")"
    m=$(( min * PACE ))
    if [ "$grp" != - ] && [ "$grp" = "$prev" ] && [ "$CPU" != 1 ]; then
      [ "$m" -gt "$gmax" ] && { total=$(( total + m - gmax )); gmax=$m; }
    else
      total=$(( total + m )); gmax=$m
    fi
    prev=$grp
  done
  echo "$total"
}

main() {
  local plan=() i j name preset ds epochs group cap min envs args rest t batch=()
  read -r -a plan <<< "${SMOKE_PLAN:-default seed-blog}"
  for name in "${plan[@]}"; do variant "$name" >/dev/null || { echo "FATAL: unknown variant $name in SMOKE_PLAN"; return 1; }; done
  setup || return 1
  i=0
  while [ "$i" -lt "${#plan[@]}" ]; do
    # a batch: this variant plus the following ones of the same group (side by side on a GPU)
    read -r preset ds epochs group cap min envs args <<< "$(variant "${plan[$i]}")"
    batch=("${plan[$i]}"); j=$(( i + 1 ))
    while [ "$group" != - ] && [ "$CPU" != 1 ] && [ "$j" -lt "${#plan[@]}" ] \
        && [ "$(variant "${plan[$j]}" | awk '{print $4}')" = "$group" ]; do
      batch+=("${plan[$j]}"); j=$(( j + 1 ))
    done
    rest=$(later_minimum "$j" "${plan[@]}")
    t=$(( $(remaining) - rest - 20 )); [ "$t" -gt $(( cap * PACE )) ] && t=$(( cap * PACE ))
    if [[ "${batch[0]}" == compile* ]] && [ "$COMPILE_OK" = 0 ]; then
      say "skip ${batch[*]}: torch.compile failed its check (compile_check.log)"
    elif [ "$t" -lt $(( min * PACE / 2 )) ]; then
      say "skip ${batch[*]}: only ${t}s of the time left is theirs"
    else
      local shared=""; [ "${#batch[@]}" -gt 1 ] && shared=1  # card-wide nvidia-smi figures mix these runs
      for name in "${batch[@]}"; do
        read -r preset ds epochs group cap min envs args <<< "$(variant "$name")"
        local extra=() var="SMOKE_ARGS_${name//-/_}"
        read -r -a extra <<< "$args ${!var:-}"
        SHARED=$shared train_run "$name" "$preset" "$ds" "$t" "$envs" --set "max_train_epochs=$epochs" \
            --set sample_every_n_epochs=1 --set save_every_n_epochs=1 "${extra[@]}" &
      done
      wait
    fi
    i=$j
  done
}

summarise() {
  local runs=() fig name
  for fig in "$WORK"/fig_*.json; do
    [ -s "$fig" ] || continue
    name="${fig##*/fig_}"; name="${name%.json}"; runs+=("$name=$fig")
    cp "$WORK/train_$name.log" "$OUT/train_$name.log" 2>/dev/null
  done
  "$PY" - "$WORK/timings.jsonl" "$WORK/timings.json" "$(elapsed)" "$CPU" "${SMOKE_PLAN:-default seed-blog}" <<'EOF'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1])] if __import__("os").path.exists(sys.argv[1]) else []
json.dump({"script_total_s": int(sys.argv[3]), "cpu_rehearsal": sys.argv[4] == "1", "plan": sys.argv[5].split(),
           "steps": steps}, open(sys.argv[2], "w"), indent=1)
EOF
  [ ${#runs[@]} -gt 0 ] || runs=("none=/dev/null")
  "$PY" bench/gpu_figures.py combine "$OUT/gpu_smoke.json" "${runs[@]}" --context "versions=$WORK/versions.json" \
      --context "checkpoint=$WORK/ckpt.json" --context "flops=$WORK/flops.json" --context "timings=$WORK/timings.json"
  local sample
  sample="$(ls -t "$WORK"/runs/smoke-default/sample/*.png 2>/dev/null | head -1)"
  [ -n "$sample" ] && "$PY" -c "import cv2,sys; im=cv2.imread(sys.argv[1]); cv2.imwrite(sys.argv[2], cv2.resize(im, (256, 256)))" \
      "$sample" "$OUT/sample_default.png"
}

{ main; echo "main exit: $?"; summarise; say "done; files in $OUT:"; ls -la "$OUT"; } 2>&1 | tee "$OUT/gpu_smoke.log"
