"""torch.compile on sd-scripts' SDXL U-Net + LoRA, the way `--torch_compile` training runs it: graph breaks,
compile wall time, eager vs compiled step time (+ images/s, MFU and peak memory on CUDA), recompiles per shape.

The model is sd-scripts' own SdxlUNet2DConditionModel (random init, sdpa) with networks.lora applied to the U-Net
only, base weights frozen, LoRA weights in fp32 and trained by AdamW, as sdxl_train_network.py sets them up. The U-Net
is wrapped by accelerate's prepare_model (mixed-precision autocast + fp32 outputs) and then compiled with the same
keyword arguments accelerate 1.6 passes to torch.compile (backend, mode, fullgraph=False, dynamic). accelerate
passes only the settings that differ from its defaults (TorchDynamoPlugin.to_kwargs), so unless `dynamo_dynamic` is
set, torch.compile gets no `dynamic` at all — torch's automatic dynamic shapes: a changed dimension recompiles once
and is dynamic from then on. That is `--dynamic auto` (the default here); `false` forces a full recompile for
every new shape, `true` compiles shape-generic from the start.

Phases: (a) torch._dynamo.explain of the training forward; eager steps; then per --dynamic value: (b) the first
compiled forward+backward (compile wall time), (c) steady compiled steps, (d) recompile probes: a second bucket
shape, a short last batch, a sampling call (no grad, batch 2 as classifier-free guidance does), and the first shape
again. The optimizer step (not compiled by sd-scripts either) is in every step time. Runs on the CPU at a small
size and, unchanged, on a GPU at training size.

usage: python bench/compile_probe.py [--device cpu|cuda] [--dtype bf16|fp16|fp32] [--batch 2] [--height 256]
       [--width 256] [--gradient-checkpointing] [--backend aot_eager] [--mode default] [--dynamic auto,true]
       [--steps 3] [--network-dim 128] [--network-alpha 128] [--no-explain] [--no-eager] [--no-probes]
       [--no-compile] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
SD_SCRIPTS = REPO_ROOT / "vendor" / "sd-scripts"
CONTEXT_TOKENS, CONTEXT_DIM, ADM_DIM = 77, 2048, 2816  # SDXL: both text encoders' states concatenated; pooled+sizes
BACKENDS = ("eager", "aot_eager", "inductor")
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DYNAMIC = {"false": False, "true": True, "auto": None}  # auto: torch.compile's own default, not what accelerate passes
DTYPES = ("bf16", "fp16", "fp32")
BUCKET_STEP = 64  # sd-scripts' bucket_reso_steps for SDXL
PEAK_TFLOPS = 989.0  # H100 SXM / H200 dense bf16


@dataclass(frozen=True)
class Shape:
    """One call of the U-Net: a training step (forward+backward+optimizer) or a no-grad sampling forward."""
    name: str
    batch: int
    height: int  # image pixels; latents are /8
    width: int
    train: bool = True


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 1")
    return value


def _dynamic_list(text: str) -> list[str]:
    values = [v.strip().lower() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in DYNAMIC]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma list of {', '.join(DYNAMIC)}")
    return list(dict.fromkeys(values))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=DTYPES, default="bf16", help="U-Net weights and autocast dtype")
    p.add_argument("--batch", type=_positive, default=2)
    p.add_argument("--height", type=_positive, default=256, help="image px (latents /8)")
    p.add_argument("--width", type=_positive, default=256, help="image px (latents /8)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--backend", choices=BACKENDS, default="aot_eager")
    p.add_argument("--mode", choices=MODES, default="default")
    p.add_argument("--dynamic", type=_dynamic_list, default=["auto"],
                   help="comma list of false|true|auto, each compiled afresh (auto: what sd-scripts' training gets)")
    p.add_argument("--steps", type=_positive, default=3, help="timed steady-state steps (median)")
    p.add_argument("--network-dim", type=_positive, default=128)
    p.add_argument("--network-alpha", type=float, default=128.0)
    p.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS, help="for the MFU (CUDA only)")
    p.add_argument("--no-explain", dest="explain", action="store_false")
    p.add_argument("--no-eager", dest="eager", action="store_false", help="skip the eager baseline")
    p.add_argument("--no-probes", dest="probes", action="store_false", help="skip the recompile probes")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="explain and eager only")
    p.add_argument("--sd-scripts", type=Path, default=SD_SCRIPTS)
    p.add_argument("--verbose", action="store_true", help="also print torch's recompile log")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    for side in ("height", "width"):
        if getattr(args, side) % BUCKET_STEP:
            p.error(f"--{side} {getattr(args, side)}: must be a multiple of {BUCKET_STEP} (an SDXL bucket side)")
    if args.height < 2 * BUCKET_STEP or args.width < 2 * BUCKET_STEP:
        p.error(f"--height/--width must be >= {2 * BUCKET_STEP} (the second bucket is one step narrower)")
    return args


def shape_plan(batch: int, height: int, width: int) -> tuple[Shape, list[Shape]]:
    """The timed training shape and the recompile probes that follow it, in order.

    second_bucket: same area class, one bucket step taller and narrower (what aspect-ratio bucketing feeds next);
    short_batch: a bucket's last, partial batch (only when batch > 1); sample: sd-scripts' sampling at the training
    size, no grad, batch 2 (classifier-free guidance doubles one prompt); base_again: the first shape, which must
    hit the cache.
    """
    base = Shape("base", batch, height, width)
    probes = [Shape("second_bucket", batch, height + BUCKET_STEP, width - BUCKET_STEP)]
    if batch > 1:
        probes.append(Shape("short_batch", batch - 1, height, width))
    probes += [Shape("sample", 2, height, width, train=False), Shape("base_again", batch, height, width)]
    return base, probes


def mfu(flops_per_step: float, step_s: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the card's dense peak."""
    return flops_per_step / step_s / (peak_tflops * 1e12)


def break_location(user_stack: list[Any], sd_scripts: Path) -> str:
    """file:line of the innermost frame inside sd-scripts (else the innermost frame) of a graph-break stack."""
    frames = list(user_stack or [])
    root = str(sd_scripts.resolve())
    for frame in reversed(frames):
        if str(Path(frame.filename).resolve()).startswith(root):
            return f"{Path(frame.filename).resolve().relative_to(root)}:{frame.lineno}"
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def summarise_breaks(reasons: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Distinct (reason, location) pairs with their counts, most frequent first."""
    counts: dict[tuple[str, str], int] = {}
    for reason, where in reasons:
        counts[(reason, where)] = counts.get((reason, where), 0) + 1
    return [{"reason": r, "where": w, "count": n} for (r, w), n in sorted(counts.items(), key=lambda kv: -kv[1])]


# ------------------------------------------------------------------------------------------- heavy part

class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class Probe:
    """The model, optimizer and inputs of one run, plus the step and compile machinery."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch
        from accelerate import Accelerator
        from library import sdxl_original_unet
        from networks import lora

        self.torch, self.args = torch, args
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
        self.device = torch.device(args.device)
        previous = torch.get_default_dtype()
        try:  # allocate the 2.6 B frozen parameters directly in the weight dtype, on the device
            torch.set_default_dtype(self.dtype)
            with self.device:
                unet = sdxl_original_unet.SdxlUNet2DConditionModel()
        finally:
            torch.set_default_dtype(previous)
        unet.set_use_sdpa(True)  # train_util.replace_unet_modules(..., sdpa=True)
        unet.requires_grad_(False)
        if args.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        network = lora.create_network(1.0, args.network_dim, args.network_alpha, None, [], unet)
        network.apply_to([], unet, apply_text_encoder=False, apply_unet=True)
        network.to(self.device).requires_grad_(True)  # LoRA weights stay fp32 (no full_bf16), as in sd-scripts
        self.lora_modules = len(network.unet_loras)
        # sd-scripts: unet.train() with gradient checkpointing, else eval(); the network is in train mode
        unet.train(args.gradient_checkpointing)
        network.train()
        mixed = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[args.dtype]
        self.accelerator = Accelerator(mixed_precision=mixed, cpu=args.device == "cpu", dynamo_backend="no")
        self.model = self.accelerator.prepare_model(unet)  # autocast + fp32 outputs wrapped around forward
        self.optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
        self.network = network
        self.inputs: dict[Shape, tuple[Any, ...]] = {}

    def _inputs(self, shape: Shape) -> tuple[Any, ...]:
        torch = self.torch
        if shape not in self.inputs:
            g = torch.Generator().manual_seed(0)
            b, h, w = shape.batch, shape.height // 8, shape.width // 8

            def rnd(*size: int) -> Any:
                return torch.randn(*size, generator=g).to(self.device, self.dtype)

            # training: one timestep per image; sampling: a 0-d timestep the U-Net expands, as the pipeline passes
            t = torch.randint(0, 1000, (b,), generator=g) if shape.train else torch.tensor(500)
            self.inputs[shape] = (rnd(b, 4, h, w), t.to(self.device), rnd(b, CONTEXT_TOKENS, CONTEXT_DIM),
                                  rnd(b, ADM_DIM), torch.randn(b, 4, h, w, generator=g).to(self.device))
        return self.inputs[shape]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def step(self, model: Callable[..., Any], shape: Shape) -> float:
        """One call of `shape` through `model`; wall seconds, device work included."""
        torch = self.torch
        x, t, ctx, y, target = self._inputs(shape)
        self._sync()
        t0 = time.perf_counter()
        if shape.train:
            with self.accelerator.autocast():
                pred = model(x, t, ctx, y)
            loss = torch.nn.functional.mse_loss(pred.float(), target.float())
            self.accelerator.backward(loss)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        else:
            with self.accelerator.autocast(), torch.no_grad():
                model(x, t, ctx, y)
        self._sync()
        return time.perf_counter() - t0

    def explain(self, shape: Shape) -> dict[str, Any]:
        torch = self.torch
        x, t, ctx, y, _ = self._inputs(shape)
        torch._dynamo.reset()
        t0 = time.perf_counter()
        with self.accelerator.autocast():
            out = torch._dynamo.explain(self.model)(x, t, ctx, y)
        wall = time.perf_counter() - t0
        reasons = [(str(r.reason).strip().splitlines()[0][:300] if str(r.reason).strip() else "?",
                    break_location(getattr(r, "user_stack", []), self.args.sd_scripts)) for r in out.break_reasons]
        torch._dynamo.reset()
        return {"graph_count": out.graph_count, "graph_break_count": out.graph_break_count,
                "op_count": out.op_count, "wall_s": round(wall, 2), "break_reasons": summarise_breaks(reasons)}

    def compile(self, dynamic: bool | None) -> Callable[..., Any]:
        """torch.compile with the keyword arguments accelerate 1.6's prepare_model passes (TorchDynamoPlugin)."""
        self.torch._dynamo.reset()
        return self.torch.compile(self.model, backend=self.args.backend, mode=self.args.mode, fullgraph=False,
                                  dynamic=dynamic)

    def peak_memory(self) -> dict[str, float]:
        mem = {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
        if self.device.type == "cuda":
            mem["max_memory_allocated_gb"] = round(self.torch.cuda.max_memory_allocated() / 1e9, 2)
            self.torch.cuda.reset_peak_memory_stats()
        return mem


class CompileWatch:
    """Dynamo's frame/graph counters and its recompile log, read around each call."""

    def __init__(self, verbose: bool) -> None:
        import torch
        import torch._dynamo.guards  # noqa: F401  registers the "recompiles" artifact logger we attach to
        from torch._dynamo.utils import counters

        self.counters = counters
        torch._logging.set_logs(recompiles=True)
        self.recompiles, self.warnings = _Collect(), _Collect()
        names = [n for n in logging.root.manager.loggerDict if n.endswith("__recompiles")]
        if not names:
            raise SystemExit("error: this torch has no dynamo 'recompiles' log; cannot count recompiles")
        for name in names:
            logger = logging.getLogger(name)
            logger.addHandler(self.recompiles)
            logger.propagate = verbose
        self.warnings.setLevel(logging.WARNING)
        logging.getLogger("torch._dynamo").addHandler(self.warnings)

    def snapshot(self) -> tuple[int, int, int, int]:
        return (self.counters["frames"]["ok"], self.counters["stats"]["unique_graphs"],
                len(self.recompiles.messages), len(self.warnings.messages))

    def delta(self, before: tuple[int, int, int, int]) -> dict[str, Any]:
        after = self.snapshot()
        guard_failures = [m.split("triggered by the following guard failure(s):")[-1].strip().splitlines()[0]
                          .lstrip("- ")[:200] for m in self.recompiles.messages[before[2]:after[2]]]
        return {"frames_compiled": after[0] - before[0], "graphs_compiled": after[1] - before[1],
                "recompiles": after[2] - before[2], "first_guard_failures": sorted(set(guard_failures))[:5],
                "warnings": [m.splitlines()[0][:300] for m in self.warnings.messages[before[3]:after[3]]]}


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(args.sd_scripts))
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU")
    base, probes = shape_plan(args.batch, args.height, args.width)
    result: dict[str, Any] = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                              "torch": torch.__version__, "shape_plan": [asdict(base)] + [asdict(s) for s in probes]}
    if args.device == "cuda":
        result["gpu"] = torch.cuda.get_device_name(0)
    t0 = time.perf_counter()
    probe = Probe(args)
    result["build_s"] = round(time.perf_counter() - t0, 1)
    result["lora_modules"] = probe.lora_modules
    print(f"built U-Net + {probe.lora_modules} LoRA modules (dim {args.network_dim}) on {args.device} in "
          f"{result['build_s']} s; step shape {args.batch}x{args.height}x{args.width}", flush=True)
    flops = None
    if args.device == "cuda":  # the meta-device count of bench/flops_unet.py: model FLOPs, not recompute
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from flops_unet import unet_step_flops

        flops = unet_step_flops(args.height, args.width, args.batch, args.network_dim, args.sd_scripts)["step"]
        result["flops_per_step"] = flops

    def speed(step_s: float) -> dict[str, Any]:
        out: dict[str, Any] = {"step_s_median": step_s}
        if args.device == "cuda":
            out["images_per_s"] = round(args.batch / step_s, 3)
            out["mfu"] = round(mfu(flops, step_s, args.peak_tflops), 4) if flops else None
        return out

    if args.explain:
        result["explain"] = probe.explain(base)
        e = result["explain"]
        print(f"(a) explain: {e['graph_count']} graphs, {e['graph_break_count']} graph breaks, {e['op_count']} ops "
              f"({e['wall_s']} s)", flush=True)
        for b in e["break_reasons"]:
            print(f"    {b['count']:4d} x {b['reason']}  @ {b['where']}")
    if args.eager:
        probe.peak_memory()
        first = probe.step(probe.model, base)
        times = [probe.step(probe.model, base) for _ in range(args.steps)]
        result["eager"] = {"first_step_s": round(first, 3), **speed(_median(times)), **probe.peak_memory()}
        print(f"eager: first step {first:.2f} s, median {result['eager']['step_s_median']:.3f} s/step "
              f"{json.dumps({k: v for k, v in result['eager'].items() if k not in ('first_step_s',)})}", flush=True)
    watch = CompileWatch(args.verbose)
    result["compiled"] = {}
    for dyn in args.dynamic if args.compile else []:
        label = f"{args.backend}/{args.mode}/dynamic={dyn}"
        compiled = probe.compile(DYNAMIC[dyn])
        mark = watch.snapshot()
        first = probe.step(compiled, base)
        entry: dict[str, Any] = {"compile_first_step_s": round(first, 2), "first_compile": watch.delta(mark)}
        times = [probe.step(compiled, base) for _ in range(args.steps)]
        entry.update(speed(_median(times)))
        entry["steady_recompiles"] = watch.delta(mark)["recompiles"] - entry["first_compile"]["recompiles"]
        entry.update(probe.peak_memory())
        print(f"(b,c) {label}: first step (compile) {first:.1f} s, "
              f"{entry['first_compile']['frames_compiled']} frames / {entry['first_compile']['graphs_compiled']} "
              f"graphs compiled; steady {entry['step_s_median']:.3f} s/step "
              f"{json.dumps({k: v for k, v in entry.items() if k in ('images_per_s', 'mfu', 'peak_rss_gb', 'max_memory_allocated_gb')})}",
              flush=True)
        if args.probes:
            entry["probes"] = {}
            for shape in probes:
                mark = watch.snapshot()
                wall = probe.step(compiled, shape)
                d = watch.delta(mark)
                entry["probes"][shape.name] = {"wall_s": round(wall, 2), **d}
                print(f"(d) {label} {shape.name} {shape.batch}x{shape.height}x{shape.width}"
                      f"{'' if shape.train else ' no-grad'}: {wall:.1f} s, {d['recompiles']} recompiles, "
                      f"{d['frames_compiled']} frames compiled; {'; '.join(d['first_guard_failures'])[:300]}"
                      f"{' WARN ' + ' | '.join(d['warnings']) if d['warnings'] else ''}", flush=True)
        result["compiled"][dyn] = entry
        if "eager" in result:
            entry["speedup_vs_eager"] = round(result["eager"]["step_s_median"] / entry["step_s_median"], 3)
            print(f"    speed-up vs eager: {entry['speedup_vs_eager']}x", flush=True)
    result["peak_rss_gb"] = probe.peak_memory()["peak_rss_gb"]
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
        tmp.replace(args.json)
    print(f"peak RSS {result['peak_rss_gb']} GB")


if __name__ == "__main__":
    main()
