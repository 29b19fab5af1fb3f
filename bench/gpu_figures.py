"""Speed and output figures of a `medsynth train` run, and the one figures JSON of `make gpu-smoke`.

Step times come from the run's TensorBoard events (loss/current is logged once per step with its wall time) or,
when a run was cut before they were flushed, from a log timestamped by bench/tslog.py (first time each tqdm
step count appears). Steady state skips the first WARMUP_STEPS steps and drops intervals over 3x the median
(epoch ends: saving and sampling). Images per step are exact: images per epoch / batches per epoch, read from the
LoRA metadata. MFU = U-Net training-step FLOPs per image (bench/flops_unet.py) x images/s / the card's dense
bf16 peak.

Memory: nvidia-smi's card-wide samples (the CUDA context and anything else on the card included), split into the
phases of the run when they carry timestamps (setup = load + caching, training steps, sampling, the end), and
the training process's own allocator peaks when bench/cuda_peak/sitecustomize.py recorded them (exact per
process, so two runs sharing a card can be told apart).

usage: python bench/gpu_figures.py run RUN_DIR [--tslog LOG] [--gpumem CSV] [--cuda-peaks DIR] [--flops FLOPS.json]
                                       [--peak-tflops N] [--json OUT]
       python bench/gpu_figures.py combine OUT.json NAME=RUN_FIGURES.json ... [--context KEY=FILE.json ...]
                                           [--base NAME ...]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

WARMUP_STEPS = 5
GAP_FACTOR = 3.0
# dense bf16 tensor-core peaks (no sparsity), from NVIDIA's data sheets; the first matching name wins
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0),
                    ("A100", 312.0), ("L40S", 362.0), ("RTX 4090", 165.0), ("A10G", 70.0), ("L4", 121.0))

_BAR = re.compile(r"^\[\s*([\d.]+)\]\s*steps:\s+\d+%\|.*?\|\s*(\d+)/(\d+)\s*\[([^\]]*)\]")
_LINE = re.compile(r"^\[\s*([\d.]+)\]\s?(.*)$")
_TQDM_PIECE = re.compile(r"\d+%\|.*\|\s*\d+/\d+\s*\[")
_EVENTS = {  # event -> text sd-scripts logs when it starts (library/train_util.py, train_network.py)
    "load_model": "load StableDiffusion checkpoint",
    "cache_latents": "caching latents with caching strategy",
    "cache_text_encoder": "caching Text Encoder outputs with caching strategy",
    "prepare_optimizer": "prepare optimizer, data loader etc.",
    "train_start": "running training",
}
_REPEATED = {"save": "saving checkpoint:", "sample": "generating sample images at step"}
_ERRORS = ("Traceback", "CUDA out of memory", "OutOfMemoryError", "Error:")


# ------------------------------------------------------------------------------------------------ sources

def parse_tslog(path: Path) -> dict[str, Any]:
    """Step first-seen times, event times and errors from a bench/tslog.py log."""
    steps: dict[int, float] = {}
    events: dict[str, Any] = {}
    errors: list[str] = []
    total = None
    last_bar = None
    cache_end = None
    steps_per_epoch = None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    t0_epoch = None
    for raw in lines:
        if raw.startswith("# t0_epoch="):
            t0_epoch = float(raw.split("=", 1)[1])
            continue
        if m := _BAR.match(raw):
            t, n, total = float(m.group(1)), int(m.group(2)), int(m.group(3))
            if n == 0:  # the bar's first draw: the loop starts
                events.setdefault("loop_start", t)
            else:
                steps.setdefault(n, t)
            last_bar = m.group(4)
            continue
        if not (m := _LINE.match(raw)):
            continue
        t, text = float(m.group(1)), m.group(2)
        if m := re.search(r"num batches per epoch\D*(\d+)\s*$", text):
            steps_per_epoch = int(m.group(1))
        for key, marker in _EVENTS.items():
            if marker.lower() in text.lower():
                events.setdefault(key, t)
        for key, marker in _REPEATED.items():
            if marker in text:
                events.setdefault(key, []).append(t)
        # latent caching ends at the first line after its start that is not its own progress or messages
        if "cache_latents" in events and cache_end is None and t > events["cache_latents"] \
                and not _TQDM_PIECE.search(text) and "caching latents" not in text and "cache validity" not in text:
            cache_end = t
        if any(e in text for e in _ERRORS):
            errors.append(text[:300])
        if "Recompiling function" in text:  # TORCH_LOGS=recompiles: torch.compile met a new shape or grad mode
            events["recompiles"] = events.get("recompiles", 0) + 1
    if "cache_latents" in events and cache_end is not None:
        events["cache_latents_s"] = round(cache_end - events["cache_latents"], 2)
    result: dict[str, Any] = {"steps": steps, "steps_total": total, "steps_per_epoch": steps_per_epoch,
                              "events": events, "errors": errors[:10], "t0_epoch": t0_epoch}
    if last_bar:
        result["tqdm_last"] = last_bar
        if m := re.search(r"avr_loss=([^\s,\]]+)", last_bar):
            result["avr_loss_last"] = m.group(1)
    return result


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """tag -> [(step, wall_time, value)] from every events file under run_dir (empty if tensorboard is absent)."""
    try:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
        from tensorboard.util import tensor_util
    except ImportError:
        return {}
    scalars: dict[str, list[tuple[int, float, float]]] = {}
    for path in sorted(glob.glob(str(run_dir / "**" / "events.out.tfevents.*"), recursive=True)):
        for event in EventFileLoader(path).Load():
            for v in event.summary.value:
                value = float(tensor_util.make_ndarray(v.tensor)) if v.HasField("tensor") else v.simple_value
                scalars.setdefault(v.tag, []).append((event.step, event.wall_time, value))
    return scalars


def gpu_memory(csv_path: Path) -> dict[str, Any]:
    """Peak memory and mean busy utilisation from `nvidia-smi --query-gpu=[timestamp,]memory.used,utilization.gpu
    --format=csv,noheader,nounits -lms 500`; with timestamps, the samples too (epoch seconds, MiB) for phases."""
    mem, util, samples = [], [], []
    for line in csv_path.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        stamp = parts.pop(0) if len(parts) == 3 else None
        try:
            used, busy = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            continue
        mem.append(used)
        util.append(busy)
        if stamp:
            try:  # nvidia-smi writes local time; this runs on the same machine
                samples.append((datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp(), used))
            except ValueError:
                pass
    if not mem:
        return {}
    busy = [u for u in util if u > 0]
    return {"peak_vram_mib_nvidia_smi": max(mem), "gpu_util_mean_pct_when_busy": round(statistics.mean(busy), 1)
            if busy else 0.0, "gpu_samples": len(mem), "samples": samples}


def memory_phases(samples: list[tuple[float, float]], log: dict[str, Any]) -> dict[str, float]:
    """Peak nvidia-smi MiB per phase: setup (until the loop starts: load, latent and text-encoder caching),
    training (steps), sampling (from each "generating sample images" to the next step or save), end (after the
    last step and its sampling: the final save). Needs the tslog's t0 and timestamped samples."""
    t0, events, steps = log.get("t0_epoch"), log.get("events", {}), sorted(log.get("steps", {}).values())
    if t0 is None or not samples or not steps or "loop_start" not in events:
        return {}
    later = sorted(steps + list(events.get("save", [])))
    windows = [(s, next((t for t in later if t > s), float("inf"))) for s in events.get("sample", [])]
    peaks: dict[str, float] = {}
    for epoch_s, used in samples:
        t = epoch_s - t0
        if t < events["loop_start"]:
            phase = "setup"
        elif any(a <= t < b for a, b in windows):
            phase = "sampling"
        elif t <= steps[-1]:
            phase = "training"
        else:
            phase = "end"
        peaks[phase] = max(peaks.get(phase, 0.0), used)
    return peaks


def cuda_peaks(peak_dir: Path, run_dir: Path) -> dict[str, Any]:
    """The largest allocator peaks among the processes of this run (bench/cuda_peak/sitecustomize.py files whose
    command line names the run's train.toml)."""
    marker = str(run_dir / "train.toml")
    best: dict[str, Any] = {}
    for path in sorted(peak_dir.glob("*.json")):
        record = _read_json(path)
        if not any(marker in str(arg) for arg in record.get("argv", [])):
            continue
        for dev in record.get("devices", []):
            if dev.get("max_reserved_mib", 0) > best.get("torch_max_reserved_mib", -1):
                best = {"torch_max_reserved_mib": dev["max_reserved_mib"],
                        "torch_max_allocated_mib": dev["max_allocated_mib"], "torch_peak_pid": record.get("pid")}
    return best


def inspect_lora(path: Path) -> dict[str, Any]:
    """Size, metadata and the rank actually stored (of one attention projection's lora_down)."""
    import torch
    from safetensors import safe_open

    info: dict[str, Any] = {"file": path.name, "bytes": path.stat().st_size}
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        meta = f.metadata() or {}
        downs = sorted(k for k in keys if k.endswith("lora_down.weight"))
        info.update(tensors=len(keys), lora_modules=len(downs))
        if downs:
            probe = next((k for k in downs if "attn1_to_q" in k), downs[0])
            w = f.get_tensor(probe).float()
            info["lora_down_shape"] = list(w.shape)
            info["lora_down_rank"] = int(torch.linalg.matrix_rank(w.reshape(w.shape[0], -1)))
            info["lora_up_abs_mean"] = float(f.get_tensor(probe.replace("lora_down", "lora_up")).float().abs().mean())
    for key in ("ss_network_dim", "ss_network_alpha", "ss_network_module", "ss_epoch", "ss_steps",
                "ss_num_train_images", "ss_num_batches_per_epoch", "ss_num_epochs", "ss_optimizer",
                "ss_mixed_precision", "ss_gradient_checkpointing", "ss_cache_latents"):
        if key in meta:
            info[key] = meta[key]
    return info


# ------------------------------------------------------------------------------------------------ figures

def steady_state(step_times: dict[int, float], warmup: int = WARMUP_STEPS,
                 steps_per_epoch: int | None = None) -> dict[str, Any]:
    """steps/s of the steady state from {step: time it completed}: intervals ending at step <= warmup skipped,
    and those that cross an epoch end (saving, sampling) when steps_per_epoch is known."""
    ns = sorted(step_times)
    crosses = (lambda a, b: (a - 1) // steps_per_epoch != (b - 1) // steps_per_epoch) if steps_per_epoch else \
        (lambda a, b: False)
    per = [(b, (step_times[b] - step_times[a]) / (b - a)) for a, b in zip(ns, ns[1:]) if b > warmup and not crosses(a, b)]
    if not per:
        return {"steps_seen": len(ns)}
    median = statistics.median(x for _, x in per)
    kept = [x for _, x in per if x <= GAP_FACTOR * median]
    gaps = [round(x, 2) for _, x in per if x > GAP_FACTOR * median]
    return {"steps_seen": len(ns), "steady_intervals": len(kept), "step_s_median": round(median, 4),
            "steps_per_s": round(len(kept) / sum(kept), 4) if sum(kept) > 0 else None,
            "steps_per_s_median": round(1 / median, 4) if median > 0 else None, "gaps_s": gaps}


def peak_bf16_tflops(gpu_name: str | None) -> float | None:
    for fragment, tflops in PEAK_BF16_TFLOPS:
        if gpu_name and fragment.lower() in gpu_name.lower():
            return tflops
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_figures(run_dir: Path, tslog: Path | None = None, gpumem: Path | None = None,
                flops: dict[str, Any] | None = None, peak_tflops: float | None = None,
                peak_dir: Path | None = None, shared_gpu: bool = False) -> dict[str, Any]:
    """shared_gpu: other runs used the card at the same time (nvidia-smi's card-wide figures include them)."""
    run = _read_json(run_dir / "run.json")
    cfg = run.get("config", {})
    fig: dict[str, Any] = {"run_dir": run_dir.name, "preset": run.get("preset"), "status": run.get("status"),
                           "shared_gpu": shared_gpu,
                           "train_batch_size": cfg.get("train_batch_size"), "batch_choice": run.get("batch"),
                           "gradient_checkpointing": cfg.get("gradient_checkpointing"),
                           "cache_latents": cfg.get("cache_latents"), "mixed_precision": cfg.get("mixed_precision"),
                           "optimizer": [cfg.get("optimizer_type"), cfg.get("optimizer_args")],
                           "compile": [cfg.get("torch_compile"), cfg.get("dynamo_backend"), cfg.get("dynamo_mode"),
                                       cfg.get("dynamo_dynamic")],
                           "gpu": run.get("gpu"), "packages": run.get("packages")}
    log = parse_tslog(tslog) if tslog and tslog.is_file() else {}
    scalars = tensorboard_scalars(run_dir)
    tb_steps = {step: wall for step, wall, _ in scalars.get("loss/current", [])}
    step_times = tb_steps or log.get("steps", {})
    fig["step_times_from"] = "tensorboard" if tb_steps else ("tslog" if step_times else None)
    loras = sorted(run_dir.glob("*.safetensors"), key=os.path.getmtime)
    last = inspect_lora(loras[-1]) if loras else {}
    steps_per_epoch = int(last.get("ss_num_batches_per_epoch") or log.get("steps_per_epoch") or 0) or None
    warmup = min(WARMUP_STEPS, len(step_times) // 2)  # short (CPU) runs still give a figure
    fig["warmup_steps_skipped"] = warmup
    fig.update(steady_state(step_times, warmup, steps_per_epoch))
    if losses := scalars.get("loss/current"):
        fig["loss_last"] = losses[-1][2]
        fig["loss_finite"] = all(v == v and abs(v) != float("inf") for _, _, v in losses)
    elif "avr_loss_last" in log:
        fig["loss_last"] = log["avr_loss_last"]
    fig["steps_total"] = log.get("steps_total")
    fig["events_s"] = log.get("events", {})
    fig["latent_cache_s"] = log.get("events", {}).get("cache_latents_s")
    if "loop_start" in fig["events_s"] and log.get("steps", {}).get(1) is not None:
        # the first step's wall time: torch.compile's first compile when compiling, else the warm-up
        fig["first_step_s"] = round(log["steps"][1] - fig["events_s"]["loop_start"], 2)
    fig["errors"] = log.get("errors", [])

    fig["lora_files"] = [{"file": p.name, "bytes": p.stat().st_size} for p in loras]
    fig["last_lora"] = last
    fig["lora_file_mb"] = round(last["bytes"] / 1e6, 1) if last else None
    fig["sample_images"] = len(list((run_dir / "sample").glob("*.png")))

    # images per step: exact from the metadata (partial last batches of buckets included), else the batch size
    fig["steps_per_epoch"] = steps_per_epoch
    if last.get("ss_num_train_images") and steps_per_epoch:
        per_step = int(last["ss_num_train_images"]) / steps_per_epoch
    else:
        per_step = cfg.get("train_batch_size") if isinstance(cfg.get("train_batch_size"), int) else None
    fig["images_per_step"] = round(per_step, 3) if per_step else None
    if per_step and fig.get("steps_per_s"):
        fig["images_per_s"] = round(fig["steps_per_s"] * per_step, 3)
        if fig.get("steps_per_epoch"):
            fig["epoch_train_s"] = round(fig["steps_per_epoch"] / fig["steps_per_s"], 1)
    if epochs := scalars.get("loss/epoch_average"):
        ends = [wall for _, wall, _ in sorted(epochs)]
        fig["epoch_wall_s"] = [round(b - a, 1) for a, b in zip(ends, ends[1:])]  # incl. the save + sample between

    if gpumem and gpumem.is_file():
        memory = gpu_memory(gpumem)
        samples = memory.pop("samples", [])
        fig.update(memory)
        if phases := memory_phases(samples, log):
            fig["peak_vram_mib_by_phase"] = phases
    if peak_dir and peak_dir.is_dir():
        fig.update(cuda_peaks(peak_dir, run_dir))
    if flops and fig.get("images_per_s"):
        gpus = (run.get("gpu") or {}).get("gpus") or [{}]
        peak = peak_tflops or peak_bf16_tflops(gpus[0].get("name"))
        per_image = flops["flops_per_image"]["step"]
        fig["tflops_achieved"] = round(per_image * fig["images_per_s"] / 1e12, 1)
        fig["peak_bf16_tflops"] = peak
        fig["mfu_pct"] = round(100 * fig["tflops_achieved"] / peak, 1) if peak else None
    return fig


def combine(parts: dict[str, dict[str, Any]], context: dict[str, Any],
            bases: tuple[str, ...] = ("seed-blog", "default")) -> dict[str, Any]:
    """The one figures JSON: context (gpu, versions, timings), each run, and every run's images/s over each base
    run that is present ("default/seed-blog" is the issue's ratio; "compile/default" what compiling adds)."""
    out = dict(context)
    out["runs"] = parts
    # what the card holds beyond the allocator's peak (CUDA context, libraries), from the runs that had it alone;
    # added to every allocator peak it gives the card-wide peak of runs that shared the card
    alone = [r["peak_vram_mib_nvidia_smi"] - r["torch_max_reserved_mib"] for r in parts.values()
             if not r.get("shared_gpu") and r.get("peak_vram_mib_nvidia_smi") and r.get("torch_max_reserved_mib")]
    if alone:
        out["cuda_overhead_mib"] = overhead = round(statistics.median(alone), 1)
        for run in parts.values():
            if run.get("torch_max_reserved_mib"):
                run["peak_vram_mib_estimated"] = round(run["torch_max_reserved_mib"] + overhead, 1)
    speedup = {}
    for base in bases:
        ref = parts.get(base, {}).get("images_per_s")
        for name, run in parts.items():
            if ref and name != base and run.get("images_per_s") and f"{base}/{name}" not in speedup:
                speedup[f"{name}/{base}"] = round(run["images_per_s"] / ref, 2)
    out["speedup_images_per_s"] = speedup
    return out


def _pairs(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: {item!r}: expected NAME=FILE")
        out[key] = Path(value)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="figures of one run directory")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--tslog", type=Path)
    r.add_argument("--gpumem", type=Path)
    r.add_argument("--cuda-peaks", type=Path, help="folder of bench/cuda_peak/sitecustomize.py records")
    r.add_argument("--flops", type=Path, help="bench/flops_unet.py --json output")
    r.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: from the GPU's name)")
    r.add_argument("--json", type=Path)
    r.add_argument("--shared-gpu", action="store_true", help="other runs used the card at the same time")
    c = sub.add_parser("combine", help="merge run figures and context files into one JSON")
    c.add_argument("out", type=Path)
    c.add_argument("runs", nargs="+", help="NAME=RUN_FIGURES.json")
    c.add_argument("--context", action="append", default=[], help="KEY=FILE.json, stored under KEY")
    c.add_argument("--base", action="append", help="runs the others' images/s are divided by "
                                                   "(default: seed-blog, then default)")
    args = p.parse_args(argv)
    if args.cmd == "run":
        flops = _read_json(args.flops) if args.flops else None
        fig = run_figures(args.run_dir, args.tslog, args.gpumem, flops, args.peak_tflops, args.cuda_peaks,
                          args.shared_gpu)
        text = json.dumps(fig, indent=1, default=str)
        if args.json:
            args.json.write_text(text + "\n")
        print(text)
    else:
        parts = {name: _read_json(path) for name, path in _pairs(args.runs).items()}
        context = {key: _read_json(path) for key, path in _pairs(args.context).items()}
        out = combine(parts, context, tuple(args.base) if args.base else ("seed-blog", "default"))
        tmp = args.out.with_name(f".{args.out.name}.partial")
        tmp.write_text(json.dumps(out, indent=1, default=str) + "\n")
        os.replace(tmp, args.out)
        print(json.dumps({k: v for k, v in out.items() if k != "runs"}, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
