"""Allocator peaks of every process that used CUDA, for `make gpu-smoke` (bench only, never on the product path).

Python imports `sitecustomize` at start-up from sys.path, so putting this folder on PYTHONPATH reaches the training
process that `accelerate launch` starts, without touching sd-scripts. At exit, a process that initialised CUDA
writes $MEDSYNTH_CUDA_PEAK_DIR/<pid>.json: torch's max_memory_reserved/allocated (what the process itself held,
exact, unaffected by other processes on the card; nvidia-smi's figure adds the CUDA context and whatever else
runs) and its command line, which names the run's train.toml. A process killed by a signal writes nothing.
"""

import atexit
import json
import os
import sys

_DIR = os.environ.get("MEDSYNTH_CUDA_PEAK_DIR")


def _report() -> None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    peaks = {"pid": os.getpid(), "argv": sys.argv,
             "devices": [{"index": i, "name": torch.cuda.get_device_name(i),
                          "max_reserved_mib": round(torch.cuda.max_memory_reserved(i) / 2**20, 1),
                          "max_allocated_mib": round(torch.cuda.max_memory_allocated(i) / 2**20, 1)}
                         for i in range(torch.cuda.device_count())]}
    path = os.path.join(_DIR, f"{os.getpid()}.json")
    with open(path + ".partial", "w") as f:
        json.dump(peaks, f)
    os.replace(path + ".partial", path)


if _DIR:
    atexit.register(_report)
