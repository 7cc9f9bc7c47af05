"""Shared by the benchmark scripts: stamped JSON rows, medians (CUDA events on the GPU), the bf16 matmul rate,
peak memory.

Rows go to ``benchmarks/results/<workload>.jsonl``, or to ``$SPORT_BENCH_OUT/<workload>.jsonl`` when that
variable names a folder (``gpu_check.sh`` points it at its output folder).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
PEER_PACKAGES = ("liger_kernel", "cut_cross_entropy", "peft")


def stamp() -> dict:
    """Device, versions, commit and date: call it before measuring, so the commit is the code that ran.
    Without git (a copied checkout) the commit is ``$SPORT_BENCH_COMMIT`` or None; nothing else is lost."""
    import transformers
    return {"device": device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "triton": _version("triton"), "transformers": transformers.__version__,
            **{name: _version(name) for name in PEER_PACKAGES}, "commit": git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def git_commit() -> str | None:
    """Short commit of this checkout, '+uncommitted' when tracked files differ from it; None without git."""
    here = Path(__file__).parent

    def git(*args) -> str:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=here, timeout=30)
        except (OSError, subprocess.SubprocessError):  # no git binary, or it hung
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or os.environ.get("SPORT_BENCH_COMMIT") or None
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "+uncommitted"  # the measured code is not exactly that commit
    return commit


def _version(module: str) -> str | None:
    """The installed distribution's version (liger_kernel has no ``__version__``), None when absent."""
    from importlib import metadata
    try:
        return metadata.version(module.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None


def results_dir() -> Path:
    return Path(os.environ["SPORT_BENCH_OUT"]) if os.environ.get("SPORT_BENCH_OUT") else RESULTS


def append_rows(workload: str, rows: list[dict]) -> Path:
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{workload}.jsonl"
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
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


def median_ms(fn, cuda: bool, budget_ms: float = 300.0, runs: tuple[int, int] = (3, 50), warmup: int = 1) -> float:
    """Median milliseconds of ``fn()`` after ``warmup`` calls. CUDA: events around each call, as many calls
    as fit in ``budget_ms`` (within ``runs``); CPU: ``runs[0]`` calls on the host clock."""
    for _ in range(warmup):
        fn()
    if not cuda:
        return 1e3 * median_seconds(fn, warmup=0, runs=runs[0])
    torch.cuda.synchronize()
    first = _event_ms(fn)
    count = max(runs[0], min(runs[1], int(budget_ms / max(first, 1e-3))))
    return statistics.median([_event_ms(fn) for _ in range(count)])


def _event_ms(fn) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def matmul_tflops(cuda: bool, size: int = 8192) -> float | None:
    """The device's bf16 matmul rate (TF/s) on random inputs, measured now: the 100% of every MFU figure."""
    if not cuda:
        return None
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    ms = median_ms(lambda: a @ b, cuda, budget_ms=500.0)
    return 2 * size**3 / (ms * 1e-3) / 1e12


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak(cuda: bool) -> int:
    """Start a peak-memory window; returns the bytes allocated now (the inputs), 0 on the CPU."""
    if not cuda:
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def peak_gib(cuda: bool, base: int = 0) -> float | None:
    """Peak CUDA memory since ``reset_peak`` above ``base`` bytes (GiB); None on the CPU."""
    if not cuda:
        return None
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30
