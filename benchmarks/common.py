"""Shared by the benchmark scripts: stamped JSON rows, medians, peak memory."""
from __future__ import annotations

import datetime
import json
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def stamp() -> dict:
    """Device, versions, commit and date for every row."""
    import transformers
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=Path(__file__).parent).stdout.strip()
    if commit and dirty:
        commit += "+uncommitted"  # the measured code is not exactly that commit
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
    return {"device": device, "torch": torch.__version__, "triton": triton_version,
            "transformers": transformers.__version__, "commit": commit,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def append_rows(workload: str, rows: list[dict]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{workload}.jsonl"
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def median_seconds(fn, warmup: int = 2, runs: int = 7) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
