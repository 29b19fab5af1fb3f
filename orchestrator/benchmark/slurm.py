"""`medsynth benchmark --emit slurm`: an sbatch array script (templates/benchmark.slurm.j2), one task per arm and
seed, each running `medsynth benchmark <the same options> --task N` and writing its own result file; the same
command without --task then gathers them. Paths are made absolute: the tasks may start in another folder."""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.common import paths
from orchestrator.common.atomic import write_atomic
from orchestrator.sweep.slurm import check_options, log_option, shell_environment

TEMPLATE = "benchmark.slurm.j2"
SCRIPT = "benchmark.slurm"


def benchmark_args(s) -> list[str]:
    """The command-line options that make the same benchmark (BenchSettings -> flags)."""
    args: list[str] = []
    for flag, values in (("--csv", s.csv), ("--images", s.images)):
        for value in values:
            args += [flag, str(Path(value).resolve())]
    optional = {"--synthetic": s.synthetic, "--split": s.split_file, "--weights": s.weights, "--format": s.fmt}
    for flag, value in optional.items():
        if value is not None:
            args += [flag, str(Path(value).resolve()) if isinstance(value, Path) else value]
    args += ["--out", str(Path(s.out).resolve()), "--folds", str(s.folds), "--test-fold", str(s.test_fold),
             "--split-seed", str(s.split_seed), "--ratios", ",".join(f"{r:g}" for r in s.ratios),
             "--seeds", str(s.seeds), "--image-size", str(s.image_size), "--epochs", str(s.epochs),
             "--model", s.model, "--batch-size", str(s.batch_size), "--learning-rate", f"{s.learning_rate:g}",
             "--rare-share", f"{s.rare_share:g}", "--n-boot", str(s.n_boot), "--workers", str(s.workers)]
    return args


def write_script(s, *, tasks: int, gpus: int, time: str | None, partition: str | None,
                 account: str | None) -> Path:
    check_options(time=time, partition=partition, account=account)
    script = Path(s.out).resolve() / SCRIPT
    args = benchmark_args(s)
    python = sys.executable
    text = shell_environment().get_template(TEMPLATE).render(
        name="medsynth-benchmark", tasks=tasks, script=str(script), out=str(Path(s.out).resolve()), gpus=gpus,
        time=time, partition=partition, account=account, python=python,
        repo=str(paths.SOURCE_ROOT or Path.cwd()), args=args, output=log_option(script))
    script.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(script, text)
    script.chmod(0o755)
    return script
