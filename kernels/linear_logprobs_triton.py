"""Fused lm-head + log-softmax + gather in Triton: log p_i = (h_i . w_{t_i}) - logsumexp_v (h_i . w_v).

Never materialises the N x V logits. Inputs bf16/fp16/fp32, accumulation and reductions fp32.

Forward (grid: row blocks x vocabulary splits). Row blocks alone leave most of an H100 idle at N = 4,096
(64 programs for 132 SMs, each streaming the whole weight), so V is also cut into S ranges
(``vocab_splits``: about four waves of programs). Program (r, s) streams its range's tiles
``(BLOCK_N, H) @ (H, BLOCK_V)`` through an online log-sum-exp (running max m, scaled sum e) and writes the
partial ``lse_rs = m + log e`` and the target logit if t_i falls in its range (else 0). A second kernel
merges the (S, N) partials exactly: ``lse_i = M_i + log sum_s exp(lse_is - M_i)`` with ``M_i = max_s lse_is``,
and logp_i = sum_s target_is - lse_i. The total weight traffic is unchanged by the split (every row block
still reads all of W once); it adds 2 S N fp32 partials.

Backward: see ``linear_logprobs_chunked`` (default: no atomics, deterministic) and
``linear_logprobs_atomic`` (the previous single kernel, kept to compare); ``backward`` chooses, and
computes d_hidden / d_weight only when asked (LoRA freezes the lm-head: no (V, H) buffer at all).
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from sport_fast.kernels import linear_logprobs_atomic, linear_logprobs_chunked, lm_head_tile
from sport_fast.kernels.linear_logprobs_tiles import (
    arch_of,
    autotune_wanted,
    autotuned,
    launch_options,
    sm_count,
    tiles_for,
    vocab_splits,
)
from sport_fast.kernels.lm_head_tile import (
    ensure_tma_allocator,
    ieee,
    logits_tile,
    matrix_source,
    tma_ready,
    unit_column_stride,
    upcast,
)

BACKWARD_VARIANTS = ("chunked", "atomic")


@triton.jit
def _forward_partials_kernel(h_ptr, w_ptr, t_ptr, lse_part_ptr, tgt_part_ptr, N, V, H, stride_h, stride_w,
                             stride_part, n_splits, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
                             BLOCK_H: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr, TMA: tl.constexpr):
    # 1. this program's rows, their targets, and its vocabulary range [v_begin, v_end)
    row0 = tl.program_id(0) * BLOCK_N
    split = tl.program_id(1)
    rows = row0 + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    targets = tl.load(t_ptr + rows, mask=row_ok, other=-1)
    split_width = tl.cdiv(tl.cdiv(V, BLOCK_V), n_splits) * BLOCK_V
    v_begin = split * split_width
    v_end = tl.minimum(v_begin + split_width, V)
    h_src = matrix_source(h_ptr, N, H, stride_h, BLOCK_N, BLOCK_H, TMA)
    w_src = matrix_source(w_ptr, V, H, stride_w, BLOCK_V, BLOCK_H, TMA)
    m = tl.full((BLOCK_N,), float("-inf"), dtype=tl.float32)
    e = tl.zeros((BLOCK_N,), dtype=tl.float32)
    target_logit = tl.zeros((BLOCK_N,), dtype=tl.float32)
    # 2. stream the range: online log-sum-exp and the target logit, (BLOCK_N, BLOCK_V) fp32 tiles
    for v0 in range(v_begin, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        logits = logits_tile(h_src, w_src, row0, v0, N, V, H, stride_h, stride_w, BLOCK_N, BLOCK_V, BLOCK_H,
                             IEEE, UPCAST, TMA)
        logits = tl.where((cols < V)[None, :], logits, float("-inf"))
        m_new = tl.maximum(m, tl.max(logits, axis=1))
        e = e * tl.exp(m - m_new) + tl.sum(tl.exp(logits - m_new[:, None]), axis=1)
        m = m_new
        target_logit += tl.sum(tl.where(cols[None, :] == targets[:, None], logits, 0.0), axis=1)
    # 3. partials at [split, rows]. e >= 1 over a non-empty range (its max contributes exp(0)); the floor
    #    only keeps log() finite for an empty range (possible under autotuned tiles), which stores -inf, 0
    part = split.to(tl.int64) * stride_part + rows
    tl.store(lse_part_ptr + part, m + tl.log(tl.maximum(e, 1e-30)), mask=row_ok)
    tl.store(tgt_part_ptr + part, target_logit, mask=row_ok)


@triton.jit
def _merge_partials_kernel(lse_part_ptr, tgt_part_ptr, logp_ptr, lse_ptr, N, n_splits, stride_part,
                           BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr):
    # 1. this program's rows; their partials arrive BLOCK_S splits at a time, (BLOCK_N, BLOCK_S)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    m = tl.full((BLOCK_N,), float("-inf"), dtype=tl.float32)
    e = tl.zeros((BLOCK_N,), dtype=tl.float32)
    target_logit = tl.zeros((BLOCK_N,), dtype=tl.float32)
    # 2. online log-sum-exp of the partial lse's; one split holds each target logit, the others hold 0
    for s0 in range(0, n_splits, BLOCK_S):
        splits = s0 + tl.arange(0, BLOCK_S)
        split_ok = splits < n_splits
        offs = splits.to(tl.int64)[None, :] * stride_part + rows[:, None]
        ok = row_ok[:, None] & split_ok[None, :]
        part = tl.where(split_ok[None, :], tl.load(lse_part_ptr + offs, mask=ok, other=0.0), float("-inf"))
        m_new = tl.maximum(m, tl.max(part, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # every partial -inf: keep exp() NaN-free
        e = e * tl.exp(m - m_safe) + tl.sum(tl.exp(part - m_safe[:, None]), axis=1)
        m = m_new
        target_logit += tl.sum(tl.load(tgt_part_ptr + offs, mask=ok, other=0.0), axis=1)
    # 3. lse and log p
    lse = m + tl.log(e)
    tl.store(lse_ptr + rows, lse, mask=row_ok)
    tl.store(logp_ptr + rows, target_logit - lse, mask=row_ok)


def device_of(x: torch.Tensor):
    """Launch under the tensors' device, not whichever device happens to be current."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def check_targets(targets: torch.Tensor, v: int) -> None:
    """An out-of-range target raises, as torch's gather does: on the host for CPU tensors; on CUDA through
    ``torch._assert_async`` (a device-side assert, no synchronisation in the hot path)."""
    if targets.numel() == 0:
        return
    in_range = ((targets >= 0) & (targets < v)).all()
    if targets.is_cuda:
        torch._assert_async(in_range, f"linear_logprobs: a target is outside [0, {v})")
    elif not bool(in_range):
        bad = targets[(targets < 0) | (targets >= v)][0].item()
        raise IndexError(f"linear_logprobs: target {bad} is out of bounds for a vocabulary of {v}")


def forward(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, tiles: dict | None = None,
            out: tuple[torch.Tensor, torch.Tensor] | None = None, splits: int | None = None,
            autotune: bool | None = None):
    """Host launcher: (logp (N,), lse (N,)) fp32, written into ``out`` when given (tests poison it).

    hidden (N, H), weight (V, H) with unit column stride; targets (N,) int64 in [0, V).
    splits: vocabulary ranges (default ``vocab_splits`` for the device); autotune: see linear_logprobs_tiles.
    """
    hidden, weight, targets = unit_column_stride(hidden), unit_column_stride(weight), targets.contiguous()
    n = hidden.shape[0]
    v = weight.shape[0]
    check_targets(targets, v)
    logp, lse = out if out is not None else (lm_head_tile.new_buffer(n, torch.float32, hidden.device),
                                             lm_head_tile.new_buffer(n, torch.float32, hidden.device))
    if n == 0:
        return logp, lse
    cfg = tiles_for("forward", hidden, tiles)
    s = splits or vocab_splits(n, v, cfg["BLOCK_N"], cfg["BLOCK_V"], sm_count(hidden.device))
    lse_part = lm_head_tile.new_buffer((s, n), torch.float32, hidden.device)  # (S, N): stores are contiguous
    tgt_part = lm_head_tile.new_buffer((s, n), torch.float32, hidden.device)
    with device_of(hidden):
        _launch_partials(hidden, weight, targets, lse_part, tgt_part, cfg, autotune_wanted(hidden, autotune))
        merge = tiles_for("merge", hidden)
        grid = (triton.cdiv(n, merge["BLOCK_N"]),)
        _merge_partials_kernel[grid](lse_part, tgt_part, logp, lse, n, s, lse_part.stride(0),
                                     **launch_options(merge, ("BLOCK_N", "BLOCK_S")))
    return logp, lse


def _launch_partials(hidden, weight, targets, lse_part, tgt_part, cfg, tune: bool) -> None:
    s, n = lse_part.shape
    h, v = hidden.shape[1], weight.shape[0]
    tma = bool(cfg["TMA"]) and tma_ready(hidden, weight)
    if tma and hidden.is_cuda:
        ensure_tma_allocator()
    args = (hidden, weight, targets, lse_part, tgt_part, n, v, h, hidden.stride(0), weight.stride(0),
            lse_part.stride(0), s)
    flags = {"IEEE": ieee(hidden), "UPCAST": upcast(hidden), "TMA": tma}
    if tune:
        kernel = autotuned(_forward_partials_kernel, "forward", arch_of(hidden.device), ("V", "H"))
        kernel[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), s)](*args, **flags)
    else:
        grid = (triton.cdiv(n, cfg["BLOCK_N"]), s)
        _forward_partials_kernel[grid](*args, **flags, **launch_options(cfg))


def backward(hidden, weight, targets, lse, grad_logp, tiles: dict | None = None, *, need_d_hidden: bool = True,
             need_d_weight: bool = True, variant: str = "chunked", chunk_rows: int | None = None,
             autotune: bool | None = None):
    """Host launcher: (d_hidden or None, d_weight or None) in the inputs' dtypes, accumulated in fp32.

    A gradient that is not needed is neither allocated nor computed. variant: "chunked" (default; no
    atomics, deterministic) or "atomic". chunk_rows: rows per chunk of the chunked variant.
    """
    if variant not in BACKWARD_VARIANTS:
        raise ValueError(f"linear_logprobs backward variant must be one of {BACKWARD_VARIANTS}, got {variant!r}")
    grad_logp, lse = grad_logp.contiguous().float(), lse.contiguous()
    hidden, weight, targets = unit_column_stride(hidden), unit_column_stride(weight), targets.contiguous()
    tune = autotune_wanted(hidden, autotune)
    with device_of(hidden):
        if variant == "atomic":
            return linear_logprobs_atomic.backward(hidden, weight, targets, lse, grad_logp, tiles, need_d_hidden,
                                                   need_d_weight, tune)
        return linear_logprobs_chunked.backward(hidden, weight, targets, lse, grad_logp, tiles, need_d_hidden,
                                                need_d_weight, chunk_rows, tune)
