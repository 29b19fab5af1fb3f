"""Checks before a run is written or launched, and the probes they need.

Two probes: nvidia-smi for the dry run (no torch import: the dry run must stay under a second), and the
training interpreter itself ($MEDSYNTH_PYTHON or medsynth's own) for a launch: its torch sees the GPUs
training will see, and its packages are the ones recorded in run.json. Every check raises MedsynthError
with one line saying what to do; notes that do not stop a run are collected in a Preflight.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.train.config import TrainConfig
from orchestrator.common.errors import MedsynthError
from orchestrator.kohya import lycoris_args as lycoris
from orchestrator.common.paths import SD_SCRIPTS_COMMIT, git_checkout

TRAIN_SCRIPT = "sdxl_train_network.py"
TOKENIZER_FOLDERS = ("openai_clip-vit-large-patch14", "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# LoRA file size at dim 128 in fp16 for SDXL's U-Net (measured: 681 MB, ../shared/docs/gpu.md)
_LORA_BYTES_DIM128_FP16 = 681e6


# ----------------------------------------------------------------------------------------------- probes

@dataclass(frozen=True)
class Gpu:
    name: str
    total_gib: float


def probe_gpus_fast() -> list[Gpu] | None:
    """GPUs from nvidia-smi (no torch import: the dry-run must stay under a second). None: none visible."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in out.strip().splitlines():
        name, _, mib = line.rpartition(",")
        try:
            gpus.append(Gpu(name.strip(), float(mib) / 1024))
        except ValueError:
            continue
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [int(i) for i in visible.split(",") if i.strip().isdigit()]
        gpus = [gpus[i] for i in ids if i < len(gpus)]
    return gpus or None


_PROBE = r"""
import importlib.metadata as md, importlib.util as u, json
out = {"packages": {}, "gpus": [], "torch_error": None}
for name in ("torch", "torchvision", "accelerate", "diffusers", "transformers", "bitsandbytes", "safetensors",
             "huggingface-hub", "tokenizers", "voluptuous", "toml", "lycoris-lora"):
    try:
        out["packages"][name] = md.version(name)
    except md.PackageNotFoundError:
        out["packages"][name] = None
out["bitsandbytes"] = u.find_spec("bitsandbytes") is not None
out["accelerate"] = u.find_spec("accelerate") is not None
out["tensorboard"] = any(u.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))
try:
    import torch
    out["cuda"] = torch.cuda.is_available()
    for i in range(torch.cuda.device_count() if out["cuda"] else 0):
        p = torch.cuda.get_device_properties(i)
        out["gpus"].append({"name": p.name, "total_gib": p.total_memory / 2**30})
except Exception as e:
    out["torch_error"] = repr(e)[:300]
print("MEDSYNTH_PROBE " + json.dumps(out))
"""


@dataclass(frozen=True)
class Probe:
    """What the training interpreter sees: packages, GPUs (via torch.cuda), bitsandbytes."""

    python: str
    packages: Mapping[str, str | None]
    gpus: tuple[Gpu, ...]
    bitsandbytes: bool
    accelerate: bool
    torch_error: str | None = None
    tensorboard: bool = True


def probe_python(python: str, env: Mapping[str, str]) -> Probe:
    try:
        done = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, env=dict(env), timeout=300)
    except OSError as exc:
        raise MedsynthError(f"cannot run the training interpreter {python} ($MEDSYNTH_PYTHON): {exc}") from exc
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("MEDSYNTH_PROBE ")), None)
    if line is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MedsynthError(f"probing {python} failed (exit {done.returncode}): {tail[0]}")
    data = json.loads(line[len("MEDSYNTH_PROBE "):])
    return Probe(python, data["packages"], tuple(Gpu(g["name"], g["total_gib"]) for g in data["gpus"]),
                 data["bitsandbytes"], data["accelerate"], data["torch_error"], data.get("tensorboard", True))


# ----------------------------------------------------------------------------------------------- preflight

@dataclass
class Preflight:
    notes: list[str] = field(default_factory=list)


def sd_scripts_commit(sd_scripts: Path) -> tuple[str | None, str]:
    """(commit or None, how it was found). A plain extracted folder has no .git: then the gitlink is reported."""
    if (sd_scripts / ".git").exists():
        done = subprocess.run(["git", "-C", str(sd_scripts), "rev-parse", "HEAD"], capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout.strip(), "git checkout"
    checkout = git_checkout()  # installed (a wheel): no gitlink to read
    if checkout is not None:
        try:
            done = subprocess.run(["git", "-C", str(checkout), "ls-tree", "HEAD", "vendor/sd-scripts"],
                                  capture_output=True, text=True, timeout=10)
            parts = done.stdout.split()
            if done.returncode == 0 and len(parts) >= 3 and parts[1] == "commit":
                return None, f"plain folder; the project's gitlink pins {parts[2]}"
        except (OSError, subprocess.SubprocessError):
            pass
    return None, "plain folder; commit not verifiable"


def check_sd_scripts(sd_scripts: Path, report: Preflight) -> tuple[str | None, str]:
    """(the checkout's commit or None for a plain folder, how the commit was established)."""
    if not (sd_scripts / TRAIN_SCRIPT).is_file():
        # a checkout fetches its submodule; an installed medsynth looks in the project folder's vendor/sd-scripts
        fix = "run 'make setup' (git submodule update --init) or unpack" if git_checkout() else "unpack"
        raise MedsynthError(f"{sd_scripts}/{TRAIN_SCRIPT} not found: {fix} kohya-ss/sd-scripts at "
                            f"{SD_SCRIPTS_COMMIT} there (or pass --sd-scripts DIR)")
    commit, how = sd_scripts_commit(sd_scripts)
    if commit is not None and commit != SD_SCRIPTS_COMMIT:
        raise MedsynthError(f"{sd_scripts} is at {commit}, medsynth is validated against {SD_SCRIPTS_COMMIT}: "
                            f"run 'git submodule update' (the contract would not match)")
    if commit is None:
        pinned = re.search(r"[0-9a-f]{40}", how)
        if pinned and pinned.group(0) != SD_SCRIPTS_COMMIT:
            raise MedsynthError(f"the vendor/sd-scripts gitlink ({pinned.group(0)}) differs from "
                                f"orchestrator/common/paths.py's SD_SCRIPTS_COMMIT ({SD_SCRIPTS_COMMIT})")
        report.notes.append(f"sd-scripts: {how}")
    return commit, how


def check_gpus(probe: Probe, *, min_gpu_gib: float, num_processes: int, gpu_ids: Sequence[int]) -> list[Gpu]:
    """The GPUs training will use; errors when there are none, too few, or too small for the preset."""
    if not probe.gpus:
        why = probe.torch_error or ("torch.cuda.is_available() is False" if probe.packages.get("torch")
                                    else "torch is not installed")
        raise MedsynthError(f"no CUDA GPU visible to {probe.python} ({why}): training needs one "
                            f"(--dry-run works without; --cpu only for tiny test runs)")
    if gpu_ids:
        bad = [i for i in gpu_ids if i >= len(probe.gpus)]
        if bad:
            raise MedsynthError(f"gpu_ids {','.join(map(str, gpu_ids))}: only {len(probe.gpus)} GPU(s) visible")
        used = [probe.gpus[i] for i in gpu_ids]
    else:
        used = list(probe.gpus[:num_processes])
    if len(used) < num_processes:
        raise MedsynthError(f"num_processes {num_processes} needs as many GPUs; {len(used)} available")
    small = min(used, key=lambda g: g.total_gib)
    if small.total_gib < min_gpu_gib:
        raise MedsynthError(f"{small.name} has {small.total_gib:.1f} GiB; this preset needs at least "
                            f"{min_gpu_gib:g} GiB (try the low-vram preset)")
    return used


def check_model(value: str, *, offline: bool) -> None:
    path = Path(value).expanduser()
    if path.is_file():
        if path.suffix.lower() not in _MODEL_SUFFIXES:
            raise MedsynthError(f"base model {path}: expected a .safetensors or .ckpt checkpoint")
        return
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise MedsynthError(f"base model {path}: a folder must be a Diffusers model (no model_index.json)")
        return
    if not _HUB_ID.match(value) or path.suffix.lower() in _MODEL_SUFFIXES:
        raise MedsynthError(f"base model {value!r} not found (not a file, a Diffusers folder or a hub id)")
    if offline:
        hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
        cached = hub.expanduser() / ("models--" + value.replace("/", "--"))
        if not cached.is_dir():
            raise MedsynthError(f"offline: base model {value!r} is a hub id and is not in the cache {cached.parent}: "
                                f"give a local file as the base model (pretrained_model_name_or_path)")


def check_tokenizers(cache_dir: Path | None) -> None:
    """sd-scripts reads the two CLIP tokenizers from tokenizer_cache_dir/<hub id with / -> _> when offline."""
    if cache_dir is None:
        raise MedsynthError("offline needs the setting 'tokenizer_cache_dir', a folder holding "
                            + " and ".join(TOKENIZER_FOLDERS))
    for name in TOKENIZER_FOLDERS:
        folder = cache_dir / name
        for file in ("vocab.json", "merges.txt", "tokenizer_config.json"):
            if not (folder / file).is_file():
                raise MedsynthError(f"offline: {folder / file} missing (sd-scripts would try the hub)")
        try:
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MedsynthError(f"{folder / 'tokenizer_config.json'}: unreadable ({exc})") from exc
        if config.get("model_max_length") != 77:
            raise MedsynthError(f"{folder / 'tokenizer_config.json'}: model_max_length must be 77 "
                                f"(got {config.get('model_max_length')!r}); without it tokenizing overflows")


def estimate_disk_bytes(cfg: TrainConfig) -> int:
    """LoRA files kept + state folders kept (weights + optimizer) + logs; a rough upper bound."""
    lora = _LORA_BYTES_DIM128_FP16 * cfg.network_dim / 128 * (2 if cfg.save_precision == "float" else 1)
    saves = cfg.max_train_epochs // cfg.save_every_n_epochs + 1
    kept = min(saves, cfg.save_last_n_epochs or saves)
    params = _LORA_BYTES_DIM128_FP16 * cfg.network_dim / 128 / 2
    optimizer = 2 if "8bit" in cfg.optimizer_type.lower() else 8
    state = params * (4 + optimizer)
    states = (min(saves, (cfg.save_last_n_epochs_state or saves) + 1)) if cfg.save_state else 0
    return int(kept * lora + states * state + 200e6)


# file system types that a cluster's login and compute nodes mount alike (Slurm jobs write their outputs there)
SHARED_FILE_SYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "fuse.beegfs", "ceph", "fuse.ceph-fuse",
    "glusterfs", "fuse.glusterfs", "fuse.sshfs", "panfs", "wekafs", "afs", "orangefs", "pvfs2", "fuse.juicefs"})
_DISK_CHECKED_BY_CALLER = contextvars.ContextVar("medsynth_disk_checked_by_caller", default=False)


def filesystem_type(path: Path, mounts: Path = Path("/proc/self/mounts")) -> str | None:
    """The type of the file system holding `path` (the innermost mount above it), None where it cannot be told."""
    try:
        lines = mounts.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    target, best, kind = path.resolve(), -1, None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        # the kernel writes space, tab, newline and backslash in mount points as octal escapes
        point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1]))
        if (point == target or point in target.parents) and len(point.parts) >= best:  # a later mount hides one
            best, kind = len(point.parts), fields[2]
    return kind


@contextlib.contextmanager
def disk_checked_by_caller() -> Iterator[None]:
    """check_disk refuses nothing inside: for run folders written here and trained elsewhere (sweep --emit
    slurm), whose caller has checked, or warned about, the disk they will train on."""
    token = _DISK_CHECKED_BY_CALLER.set(True)
    try:
        yield
    finally:
        _DISK_CHECKED_BY_CALLER.reset(token)


def check_disk(run_parent: Path, cfg: TrainConfig) -> None:
    run_parent.mkdir(parents=True, exist_ok=True)
    if _DISK_CHECKED_BY_CALLER.get():
        return
    need = estimate_disk_bytes(cfg)
    free = shutil.disk_usage(run_parent).free
    if free < need:
        raise MedsynthError(f"{run_parent}: {free / 1e9:.1f} GB free, the run may write ~{need / 1e9:.1f} GB "
                            f"(LoRA files + state folders): free space or set save_last_n_epochs / "
                            f"save_last_n_epochs_state")


def check_optimizer(cfg: TrainConfig, probe: Probe) -> None:
    # sd-scripts imports bitsandbytes for every *8bit optimizer and for PagedAdamW / PagedAdamW32bit
    name = cfg.optimizer_type.lower()
    if ("8bit" in name or name.startswith("paged")) and not probe.bitsandbytes:
        raise MedsynthError(f"optimizer_type {cfg.optimizer_type} needs bitsandbytes, which {probe.python} cannot "
                            f"import: pip install bitsandbytes, or set optimizer_type = 'AdamW'")
    if not probe.accelerate:
        raise MedsynthError(f"{probe.python} cannot import accelerate: run 'make setup-kohya'")


def check_network(network_module: str, probe: Probe) -> None:
    """LyCORIS in the training interpreter, at the version network_args were validated against (medsynth's)."""
    if network_module != lycoris.MODULE:
        return
    theirs, ours = probe.packages.get("lycoris-lora"), lycoris.installed()
    pin = f"lycoris-lora=={ours.version}" if ours is not None else "lycoris-lora"
    if theirs is None or (ours is not None and theirs != ours.version):
        found = f"has lycoris-lora {theirs}" if theirs else "cannot import lycoris"
        raise MedsynthError(f"network_module {lycoris.MODULE!r}: the training interpreter {probe.python} {found}; "
                            f"network_args were checked against {pin}: {probe.python} -m pip install '{pin}'")


def failed_checks_as_warnings(checks: Sequence[Callable[[], object]]) -> list[str]:
    """Run launch-time checks for a dry run: each failure becomes a warning line instead of an error."""
    warnings = []
    for check in checks:
        try:
            check()
        except MedsynthError as exc:
            warnings.append(f"warning (a launch would stop here): {exc}")
    return warnings
