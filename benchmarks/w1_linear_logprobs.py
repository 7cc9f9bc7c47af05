"""W1 (BENCHMARKS.md): fused lm-head + log-softmax + gather, forward and backward, against its peers.

V = 151,936 (Qwen2); H in {896, 1536, 3584}; N in {4,096, 16,384, 65,536}; bf16 hidden and weight. Every peer
returns per-token log-probs (CE losses negated) and is measured twice per shape: with a trainable lm-head
(gradients for hidden and weight) and with a frozen one (LoRA: no d_weight, what training runs).
  torch                     bf16 matmul -> float -> log_softmax -> gather
  torch.compile (chunked)   the same per 4,096-token chunk, the chunk compiled (inductor, fullgraph: a
                            fallback to eager or a hit recompile limit is an error row, never a silent one);
                            compiled afresh for each H (``torch._dynamo.reset``), graphs counted per row
  liger FLCE                liger-kernel fused linear cross-entropy, reduction="none"
  cut-cross-entropy         linear_cross_entropy(impl="cce"), reduction="none"
  sport_fast (chunked)      linear_logprobs(impl="triton", backward_variant="chunked"), the default
  sport_fast (atomic)       the same with backward_variant="atomic"
and the DPO loss itself per H: liger's fused linear DPO loss against sport_fast's step_dpo_loss over the same
pairs of 512-token sequences (loss values compared). A peer that cannot run is a row saying why.

FLOPs are the workload's, the same for every peer whatever it computes: 6·N·H·V for forward + backward
(2 N H V each for logits, d_hidden, d_weight), 4·N·H·V with a frozen weight. The fused kernels recompute the
logits in their backward, so they do more than they are credited with. Reports median ms (forward,
backward = both - forward, both), TF/s, percent of the bf16 matmul rate measured at the start of this run
(8192^3), peak memory above the inputs, |logp - fp32 reference|, and every peer's time over sport_fast's.

    python benchmarks/w1_linear_logprobs.py                        # CUDA: the full grid
    python benchmarks/w1_linear_logprobs.py --h 1536 --n 4096 16384  # a part of it (fits a time budget)
    python benchmarks/w1_linear_logprobs.py --smoke                # CPU, tiny shapes, Triton interpreter
Rows are appended per shape (a run cut short keeps what it measured) to results/w1.jsonl (common.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from common import append_rows, matmul_tflops, median_ms, peak_gib, reset_peak, stamp  # noqa: E402

from sport_fast.dpo.step_loss import step_dpo_loss  # noqa: E402
from sport_fast.kernels import linear_logprobs  # noqa: E402

V_QWEN2 = 151_936
FULL = {"V": V_QWEN2, "H": [896, 1536, 3584], "N": [4096, 16384, 65536]}
SMOKE = {"V": 300, "H": [32], "N": [64]}  # one call per path: the interpreter is slow
CHUNK = 4096
DPO_SEQ = 512
OURS = "sport_fast (chunked)"


# -- peers -----------------------------------------------------------------------------------------
def plain(h, w, t):
    return (h @ w.T).float().log_softmax(-1).gather(1, t[:, None]).squeeze(1)


class CompiledChunks:
    """torch.compile of one chunk of ``plain``; the loop over chunks runs eagerly. ``fresh()`` per H."""

    def __init__(self):
        self.fn = None

    def fresh(self) -> None:
        import torch._dynamo
        torch._dynamo.reset()
        if hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"):  # else fullgraph=True raises anyway
            torch._dynamo.config.fail_on_recompile_limit_hit = True
        self.fn = torch.compile(plain, fullgraph=True, dynamic=False)

    def __call__(self, h, w, t):
        return torch.cat([self.fn(h[i:i + CHUNK], w, t[i:i + CHUNK]) for i in range(0, h.shape[0], CHUNK)])


def peers() -> dict:
    """name -> fn(hidden, weight, targets) -> (N,) log-probs, or the exception that makes it unavailable."""
    out = {"torch": plain, "torch.compile (chunked)": CompiledChunks(), "liger FLCE": _liger_flce(),
           "cut-cross-entropy": _cce()}
    for variant in ("chunked", "atomic"):
        out[f"sport_fast ({variant})"] = lambda h, w, t, v=variant: linear_logprobs(h, w, t, impl="triton",
                                                                                   backward_variant=v)
    return out


def _liger_flce():
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy as lfce
    except ImportError as err:
        return err
    return lambda h, w, t: -lfce(h, w, t, reduction="none")


def _cce():
    try:
        from cut_cross_entropy import linear_cross_entropy as cce
    except ImportError as err:
        return err
    return lambda h, w, t: -cce(h, w, t, reduction="none", impl="cce")


# -- measuring -------------------------------------------------------------------------------------
def measure(fn, h, w, t, cuda: bool) -> dict:
    """Forward, backward (= both - forward) and both, in ms; peak memory above the inputs (GiB, CUDA)."""
    grad = torch.randn(h.shape[0], device=h.device)

    def fwd():
        return fn(h, w, t)

    def both():  # per-token outputs get a random upstream gradient, a scalar loss none
        out = fwd()
        out.backward(grad if out.ndim else None)
        h.grad = w.grad = None

    # liger computes its gradients inside the forward and compiled graphs refuse retain_graph, so the
    # backward is (both - forward) for every peer alike
    timing = {"budget_ms": 150.0} if cuda else {"runs": (1, 1), "warmup": 0}  # CPU smoke: each path once
    fwd_ms, both_ms = median_ms(fwd, cuda, **timing), median_ms(both, cuda, **timing)
    base = reset_peak(cuda)
    both()
    return {"fwd_ms": fwd_ms, "bwd_ms": both_ms - fwd_ms, "fwd_bwd_ms": both_ms, "peak_mem_gib": peak_gib(cuda, base)}


def reference_logp(h, w, t) -> torch.Tensor:
    """fp32 log-probs, chunked over tokens (the (N, V) fp32 logits never exist at once)."""
    with torch.no_grad():
        w32 = w.float()
        return torch.cat([plain(h[i:i + CHUNK].float(), w32, t[i:i + CHUNK]) for i in range(0, h.shape[0], CHUNK)])


def inputs(n, h, v, device, dtype):
    """Random hidden (N, H), weight (V, H) scaled so logits are O(1), targets (N,); never zeros. Drawn on the
    device (the CPU's generator takes seconds for a (151,936, 3,584) weight)."""
    g = torch.Generator(device=device).manual_seed(n + h)
    hidden = (torch.randn(n, h, generator=g, device=device) / h ** 0.25).to(dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g, device=device) / h ** 0.25).to(dtype).requires_grad_()
    return hidden, weight, torch.randint(0, v, (n,), generator=g, device=device)


def run_peer(name, fn, hidden, weight, targets, want, cuda) -> dict:
    """One row: timings, or why the peer did not run."""
    if isinstance(fn, Exception):
        return {"error": f"unavailable: {type(fn).__name__}: {fn}"}
    graphs = _graph_count()
    try:
        with torch.no_grad():
            got = fn(hidden, weight, targets)
        row = {"max_abs_diff_vs_fp32": (got.float() - want).abs().max().item(), **measure(fn, hidden, weight, targets, cuda)}
    except torch.cuda.OutOfMemoryError:
        row = {"error": "out of memory"}
    except Exception as err:  # noqa: BLE001 - a failing peer is reported, never hidden
        row = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"}
    hidden.grad = weight.grad = None
    if isinstance(fn, CompiledChunks):
        row["graphs_compiled"] = _graph_count() - graphs
    if cuda:
        torch.cuda.empty_cache()
    return row


def _graph_count() -> int:
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"]


def run_shape(n, h, v, table, device, cuda, peak) -> list[dict]:
    """Every peer on the same inputs, with the weight trainable and then frozen."""
    hidden, weight, targets = inputs(n, h, v, device, torch.bfloat16 if cuda else torch.float32)
    want = reference_logp(hidden, weight, targets)
    rows = []
    for frozen in (False, True):
        weight.requires_grad_(not frozen)
        for name, fn in table.items():
            row = {"peer": name, "weight": "frozen" if frozen else "trainable", "N": n, "H": h, "V": v}
            row.update(run_peer(name, fn, hidden, weight, targets, want, cuda))
            rows.append(_rates(row, peak))
    return _ratios(rows)


def _rates(row: dict, peak: float | None) -> dict:
    if "fwd_bwd_ms" not in row:
        return row
    factor = 4 if row["weight"] == "frozen" else 6
    row["flops_counted"] = f"{factor}NHV"
    row["tflops"] = factor * row["N"] * row["H"] * row["V"] / (row["fwd_bwd_ms"] * 1e-3) / 1e12
    row["pct_matmul"] = 100 * row["tflops"] / peak if peak else None
    return row


def _ratios(rows: list[dict]) -> list[dict]:
    """Every peer's fwd+bwd time over sport_fast's (chunked) of the same weight mode: > 1 means ours is faster."""
    for weight in ("trainable", "frozen"):
        same = [r for r in rows if r["weight"] == weight]
        ours = next((r for r in same if r["peer"] == OURS and "fwd_bwd_ms" in r), None)
        for r in same:
            if ours and "fwd_bwd_ms" in r:
                r["time_vs_sport_fast"] = r["fwd_bwd_ms"] / ours["fwd_bwd_ms"]
    return rows


# -- the DPO loss ----------------------------------------------------------------------------------
def dpo_rows(n, h, v, device, cuda, peak) -> list[dict]:
    """liger's fused linear DPO loss vs step_dpo_loss over the same 2P sequences of DPO_SEQ tokens (chosen
    first), reference log-probs zero for both; trainable and frozen weight."""
    seq = min(DPO_SEQ, n // 2)
    pairs = n // (2 * seq)
    hidden, weight, targets = inputs(2 * pairs * seq, h, v, device, torch.bfloat16 if cuda else torch.float32)
    table, rows = _dpo_peers(pairs, seq, h, device, cuda), []
    for frozen in (False, True):
        weight.requires_grad_(not frozen)
        same = [_rates({"peer": name, "weight": "frozen" if frozen else "trainable", "N": hidden.shape[0], "H": h,
                        "V": v, "pairs": pairs, "seq": seq, **_dpo_measure(fn, hidden, weight, targets, cuda)}, peak)
                for name, fn in table.items()]
        rows += _dpo_ratios(same)
    return rows


def _dpo_measure(fn, hidden, weight, targets, cuda) -> dict:
    if isinstance(fn, Exception):
        return {"error": f"unavailable: {type(fn).__name__}: {fn}"}
    try:
        with torch.no_grad():
            loss = fn(hidden, weight, targets).item()
        return {"loss": loss, **measure(fn, hidden, weight, targets, cuda)}
    except Exception as err:  # noqa: BLE001 - a failing peer is reported, never hidden
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"}


def _dpo_ratios(rows: list[dict]) -> list[dict]:
    """Loss difference and time ratio of each row to sport_fast's (the last)."""
    ours = rows[-1]
    for r in rows:
        if "loss" in r and "loss" in ours and r is not ours:
            r["loss_diff_vs_sport_fast"] = abs(r["loss"] - ours["loss"])
        if "fwd_bwd_ms" in r and "fwd_bwd_ms" in ours:
            r["time_vs_sport_fast"] = r["fwd_bwd_ms"] / ours["fwd_bwd_ms"]
    return rows


def _dpo_peers(pairs, seq, h, device, cuda) -> dict:
    segment_ids = torch.arange(2 * pairs, device=device).repeat_interleave(seq)
    chosen = torch.arange(pairs, device=device)
    ref = torch.zeros(2 * pairs, device=device)
    ours = lambda hh, ww, tt: step_dpo_loss(hh, ww, tt, segment_ids, chosen, chosen + pairs, ref,  # noqa: E731
                                            impl="triton")[0]
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss
    except ImportError as err:
        return {"liger fused linear DPO": err, "sport_fast step_dpo_loss": ours}
    liger = LigerFusedLinearDPOLoss(beta=0.1, use_ref_model=False, compiled=cuda)
    return {"liger fused linear DPO": lambda hh, ww, tt: liger(ww, hh.view(2 * pairs, seq, h),
                                                               tt.view(2 * pairs, seq))[0],
            "sport_fast step_dpo_loss": ours}


# -- the run ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run of every code path")
    parser.add_argument("--h", type=int, nargs="+", help=f"hidden sizes (default {FULL['H']})")
    parser.add_argument("--n", type=int, nargs="+", help=f"token counts (default {FULL['N']})")
    parser.add_argument("--no-dpo", action="store_true", help="skip the DPO-loss rows")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        raise SystemExit("W1 needs a CUDA GPU; use --smoke for a CPU check of the script")
    grid = SMOKE if args.smoke else FULL
    device, v = ("cuda" if cuda else "cpu"), grid["V"]
    hs, ns = args.h or grid["H"], args.n or grid["N"]
    base = {**stamp(), "workload": "W1", "dtype": "bf16" if cuda else "fp32", "smoke": args.smoke}
    base["matmul_tflops_8192"] = peak = matmul_tflops(cuda)
    print(f"bf16 matmul 8192^3: {peak:.1f} TF/s" if peak else "(no GPU: no matmul reference, no TF/s share)")
    table, rows = peers(), []
    for h in hs:
        table["torch.compile (chunked)"].fresh()
        for n in ns:
            rows += _emit(base, run_shape(n, h, v, table, device, cuda, peak))
        if not args.no_dpo:
            rows += _emit(base, dpo_rows(min(ns), h, v, device, cuda, peak))
    print_table(rows)


def _emit(base: dict, rows: list[dict]) -> list[dict]:
    path = append_rows("w1", [{**base, **r} for r in rows])
    print(f"{len(rows)} rows appended to {path}", flush=True)
    return rows


def print_table(rows) -> None:
    print("TF/s count 6NHV per forward + backward (4NHV with a frozen weight); x ours = time / sport_fast (chunked)'s")
    print(f"{'peer':26s} {'weight':9s} {'N':>6s} {'H':>5s} {'fwd ms':>9s} {'bwd ms':>9s} {'both ms':>9s} "
          f"{'TF/s':>7s} {'%mm':>5s} {'GiB':>6s} {'x ours':>6s} {'|d| vs fp32':>11s}")
    fmt = lambda r, k, f: format(r[k], f) if r.get(k) is not None else "-"  # noqa: E731
    for r in rows:
        head = f"{r['peer']:26s} {r['weight']:9s} {r['N']:6d} {r['H']:5d}"
        if "error" in r:
            print(f"{head}  {r['error']}")
            continue
        print(f"{head} {r['fwd_ms']:9.2f} {r['bwd_ms']:9.2f} {r['fwd_bwd_ms']:9.2f} {fmt(r, 'tflops', '7.1f'):>7s} "
              f"{fmt(r, 'pct_matmul', '5.1f'):>5s} {fmt(r, 'peak_mem_gib', '6.2f'):>6s} "
              f"{fmt(r, 'time_vs_sport_fast', '6.2f'):>6s} {fmt(r, 'max_abs_diff_vs_fp32', '11.2e'):>11s}"
              + (f"  loss {r['loss']:.6f}" if "loss" in r else ""))


if __name__ == "__main__":
    main()
