"""W1 (BENCHMARKS.md): fused lm-head + log-softmax + gather, forward and backward, against its peers.

V = 151,936 (Qwen2); H in {896, 1536, 3584}; N in {4,096, 16,384, 65,536}; bf16 hidden and weight.
Peers, each returning per-token log-probs (CE losses negated), gradients for hidden and weight:
  torch            bf16 matmul -> float -> log_softmax -> gather
  torch.compile    the same, chunked over tokens, compiled
  liger FLCE       liger-kernel fused linear cross-entropy, reduction="none"
  cut-cross-entropy  linear_cross_entropy, reduction="none"
  sport_fast       linear_logprobs(impl="triton")
and, for the DPO loss itself, liger's fused linear DPO loss against sport_fast's step_dpo_loss on the same
tokens (pairs of 512-token sequences). Reports median ms (forward, backward, both), TF/s counting 6 N H V,
percent of the bf16 matmul rate measured in the same run (8192^3), and peak memory above the inputs.
Backward ms is (forward + backward) - forward for every peer.

    python benchmarks/w1_linear_logprobs.py            # CUDA: the full grid, rows to results/w1.jsonl
    python benchmarks/w1_linear_logprobs.py --smoke    # CPU, tiny shapes, Triton via the interpreter; no rows
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from common import append_rows, stamp  # noqa: E402

from sport_fast.dpo.step_loss import step_dpo_loss  # noqa: E402
from sport_fast.kernels import linear_logprobs  # noqa: E402

V_QWEN2 = 151_936
FULL = {"V": [V_QWEN2], "H": [896, 1536, 3584], "N": [4096, 16384, 65536]}
SMOKE = {"V": [1000], "H": [64], "N": [256]}
DPO_SEQ = 512


def plain(h, w, t):
    return (h @ w.T).float().log_softmax(-1).gather(1, t[:, None]).squeeze(1)


def chunked(h, w, t, chunk=4096):
    return torch.cat([plain(h[i:i + chunk], w, t[i:i + chunk]) for i in range(0, h.shape[0], chunk)])


def peers() -> dict:
    out = {"torch": plain, "torch.compile (chunked)": torch.compile(chunked, dynamic=False),
           "sport_fast": lambda h, w, t: linear_logprobs(h, w, t, impl="triton")}
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy as lfce
        out["liger FLCE"] = lambda h, w, t: -lfce(h, w, t, reduction="none")
    except ImportError as err:
        out["liger FLCE"] = err
    try:
        from cut_cross_entropy import linear_cross_entropy as cce
        out["cut-cross-entropy"] = lambda h, w, t: -cce(h, w, t, reduction="none")
    except ImportError as err:
        out["cut-cross-entropy"] = err
    return out


def timer(fn, cuda: bool) -> float:
    """Median milliseconds: triton.testing.do_bench on CUDA, perf_counter on the CPU (smoke)."""
    if cuda:
        import triton
        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure(fn, h, w, t, cuda: bool) -> dict:
    """Forward, backward and both (ms), and peak memory above the inputs (GiB, CUDA only)."""
    grad = torch.randn(h.shape[0], device=h.device)

    def fwd():
        return fn(h, w, t)

    def both():  # per-token outputs get a random upstream gradient, a scalar loss none
        out = fwd()
        out.backward(grad if out.ndim else None)
        h.grad = w.grad = None

    both()  # compile / autotune / allocate outside the timings
    fwd_ms, both_ms = timer(fwd, cuda), timer(both, cuda)
    peak = None
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        both()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    # backward = both - forward for every peer alike: liger computes its gradients inside the forward, and
    # compiled graphs refuse retain_graph, so a separately timed backward would not compare like with like
    return {"fwd_ms": fwd_ms, "bwd_ms": both_ms - fwd_ms, "fwd_bwd_ms": both_ms, "peak_mem_gib": peak}


def matmul_tflops(device, cuda: bool) -> float | None:
    if not cuda:
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    return 2 * 8192**3 / (timer(lambda: a @ b, cuda) * 1e-3) / 1e12


def inputs(n, h, v, device, dtype):
    g = torch.Generator(device="cpu").manual_seed(n + h)
    hidden = (torch.randn(n, h, generator=g) / h ** 0.25).to(device, dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g) / h ** 0.25).to(device, dtype).requires_grad_()
    return hidden, weight, torch.randint(0, v, (n,), generator=g).to(device)


def run_shape(n, h, v, device, cuda, peak_tflops, table) -> list[dict]:
    hidden, weight, targets = inputs(n, h, v, device, torch.bfloat16 if cuda else torch.float32)
    with torch.no_grad():
        want = plain(hidden, weight, targets)
    rows = []
    for name, fn in table.items():
        row = {"peer": name, "N": n, "H": h, "V": v}
        if isinstance(fn, Exception):
            row["error"] = f"unavailable: {fn}"
        else:
            try:
                with torch.no_grad():
                    row["max_abs_diff_vs_torch"] = (fn(hidden, weight, targets).float() - want).abs().max().item()
                row.update(measure(fn, hidden, weight, targets, cuda))
                row["tflops"] = 6 * n * h * v / (row["fwd_bwd_ms"] * 1e-3) / 1e12
                row["pct_matmul"] = 100 * row["tflops"] / peak_tflops if peak_tflops else None
            except torch.cuda.OutOfMemoryError:
                row["error"] = "out of memory"
                torch.cuda.empty_cache()
            except Exception as err:  # noqa: BLE001 - a failing peer is reported, never hidden
                row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
        rows.append(row)
    return _ratios(rows)


def _ratios(rows: list[dict]) -> list[dict]:
    """sport_fast's fwd+bwd speed-up over the fastest fused peer (liger, CCE) measured in the same run."""
    ours = next(r for r in rows if r["peer"] == "sport_fast")
    fused = [r["fwd_bwd_ms"] for r in rows if r["peer"] in ("liger FLCE", "cut-cross-entropy") and "fwd_bwd_ms" in r]
    if fused and "fwd_bwd_ms" in ours:
        ours["speedup_vs_fastest_fused_peer"] = min(fused) / ours["fwd_bwd_ms"]
    return rows


def dpo_rows(n, h, v, device, cuda) -> list[dict]:
    """liger's fused linear DPO loss vs step_dpo_loss over the same 2B sequences of DPO_SEQ tokens."""
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss
    except ImportError as err:
        return [{"peer": "liger fused linear DPO", "error": f"unavailable: {err}"}]
    seq = min(DPO_SEQ, n // 2)
    pairs = n // (2 * seq)
    hidden, weight, targets = inputs(2 * pairs * seq, h, v, device, torch.bfloat16 if cuda else torch.float32)
    liger = LigerFusedLinearDPOLoss(beta=0.1, use_ref_model=False)
    segment_ids = torch.arange(2 * pairs, device=device).repeat_interleave(seq)
    chosen = torch.arange(pairs, device=device)
    ref = torch.zeros(2 * pairs, device=device)
    fns = {"liger fused linear DPO": lambda hh, ww, tt: liger(ww, hh.view(2 * pairs, seq, h), tt.view(2 * pairs, seq))[0],
           "sport_fast step_dpo_loss": lambda hh, ww, tt: step_dpo_loss(hh, ww, tt, segment_ids, chosen,
                                                                        chosen + pairs, ref, impl="triton")[0]}
    rows = []
    for name, fn in fns.items():
        row = {"peer": name, "N": hidden.shape[0], "H": h, "V": v, "pairs": pairs, "seq": seq}
        try:
            row.update(measure(fn, hidden, weight, targets, cuda))
        except Exception as err:  # noqa: BLE001
            row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run of every code path; writes no rows")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        raise SystemExit("W1 needs a CUDA GPU; use --smoke for a CPU check of the script")
    device = "cuda" if cuda else "cpu"
    grid = SMOKE if args.smoke else FULL
    table, peak = peers(), matmul_tflops(device, cuda)
    rows = []
    for v in grid["V"]:
        for h in grid["H"]:
            for n in grid["N"]:
                rows += run_shape(n, h, v, device, cuda, peak, table)
            rows += dpo_rows(grid["N"][0], h, v, device, cuda)
    print_table(rows, peak)
    if not args.smoke:
        base = {**stamp(), "workload": "W1", "dtype": "bf16", "matmul_tflops_8192": peak}
        print(f"rows appended to {append_rows('w1', [{**base, **r} for r in rows])}")


def print_table(rows, peak) -> None:
    print(f"bf16 matmul 8192^3: {peak:.1f} TF/s" if peak else "(smoke run: no matmul reference)")
    print(f"{'peer':28s} {'N':>6s} {'H':>5s} {'fwd ms':>9s} {'bwd ms':>9s} {'both ms':>9s} {'TF/s':>7s} {'%mm':>5s} "
          f"{'peak GiB':>8s} {'|d| vs torch':>12s}")
    for r in rows:
        if "error" in r:
            print(f"{r['peer']:28s} {r['N'] if 'N' in r else '':>6} {r.get('H', ''):>5}  {r['error']}")
            continue
        fmt = lambda x, f: format(x, f) if x is not None else "-"  # noqa: E731
        print(f"{r['peer']:28s} {r['N']:6d} {r['H']:5d} {r['fwd_ms']:9.2f} {r['bwd_ms']:9.2f} {r['fwd_bwd_ms']:9.2f} "
              f"{fmt(r.get('tflops'), '7.1f'):>7s} {fmt(r.get('pct_matmul'), '5.1f'):>5s} "
              f"{fmt(r.get('peak_mem_gib'), '8.2f'):>8s} {fmt(r.get('max_abs_diff_vs_torch'), '12.2e'):>12s}")


if __name__ == "__main__":
    main()
