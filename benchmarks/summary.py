"""The table ``gpu_check.sh`` ends with: every row under the output folder (``common.results_dir``), the checks
first (ok / FAIL / - for a reported figure), then W1, W2, W3 in a line per row.

    python benchmarks/summary.py        # (gpu_check.py summary) exit status 1 if a check failed or a section did not finish
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import results_dir  # noqa: E402

# the stamp's fields, left out of the checks' figures
_STAMP = {"device", "torch", "cuda", "triton", "transformers", "liger_kernel", "cut_cross_entropy", "peft", "commit",
          "date", "smoke", "workload", "seconds"}


def summary() -> int:
    """Print every section's rows under the output folder; 1 if a check failed or a section did not finish."""
    out = results_dir()
    rows = {name: _read(out / f"{name}.jsonl") for name in ("checks", "w1", "w2", "w3")}
    failed = _checks(rows["checks"])
    _w1(rows["w1"])
    _w2(rows["w2"])
    _w3(rows["w3"])
    print(f"\n{failed} failed check(s) or unfinished section(s); rows in {out}")
    return 1 if failed else 0


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _checks(rows) -> int:
    print(f"{'section':10s} {'check':52s} {'ok':>5s}  figures")
    failed = 0
    for r in rows:
        keep = {k: v for k, v in r.items() if k not in _STAMP and k not in ("section", "check", "ok", "traceback")}
        ok = {True: "ok", False: "FAIL", None: "-"}[r.get("ok")]
        failed += r.get("ok") is False
        print(f"{r['section']:10s} {r['check'][:52]:52s} {ok:>5s}  {_figures(keep)}")
    return failed


def _figures(d: dict) -> str:
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    return ", ".join(f"{k}={fmt(v)}" for k, v in d.items())[:160]


def _w1(rows) -> None:
    if rows:
        print("\nW1 (ms fwd+bwd; x = time over sport_fast (chunked))")
    for r in rows:
        figs = r.get("error") or f"{r['fwd_bwd_ms']:.2f} ms, {_pct(r)} x{_num(r.get('time_vs_sport_fast'))}"
        print(f"  {r['peer']:26s} {r['weight']:9s} N={r['N']:<6d} H={r['H']:<5d} {figs}")


def _num(x, f: str = ".2f") -> str:
    return format(x, f) if x is not None else "-"


def _pct(r) -> str:
    return f"{r['pct_matmul']:.0f}% of matmul," if r.get("pct_matmul") else ""


def _w2(rows) -> None:
    if rows:
        print("\nW2 (s per optimizer step; x = time over (d); loss0 - (d)'s)")
    for r in rows:
        figs = r.get("error") or (f"{r['median_s']:.3f} s, {r['pairs_per_s']:.2f} pairs/s, MFU {_num(r.get('mfu'), '.1%')}, "
                                  f"{_num(r.get('peak_mem_gib'), '.1f')} GiB, x{_num(r.get('time_vs_sport_fast'))}, "
                                  f"loss0 {_num(r.get('loss_step0'), '.6f')} ({_num(r.get('loss_step0_minus_sport_fast'), '+.1e')})")
        print(f"  {r['model']:18s} {r['variant']:11s} {r['peer']:40s} {figs}")


def _w3(rows) -> None:
    if rows:
        print("\nW3 (s per exploration step; x = time over the batched sampler)")
    for r in rows:
        print(f"  {r['peer']:52s} {r['seconds_per_step']:.3f} s, {r['generated_tokens_per_s']:.1f} tok/s, "
              f"prefill/ctx {r['prefilled_per_context_token']:.3f}, x{_num(r.get('time_ratio_vs_sport_fast'))}")


if __name__ == "__main__":
    sys.exit(summary())
