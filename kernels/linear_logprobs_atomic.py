"""Backward of ``linear_logprobs`` in one kernel with fp32 atomics: the previous default, kept to compare.

Grid (row blocks x vocabulary blocks). With upstream gradient g_i,
``dlogits_iv = g_i (1[v = t_i] - exp(logit_iv - lse_i))``. Each program recomputes its logits tile,
forms dlogits in fp32 and, one H slice at a time, adds ``dlogits @ W_tile`` into d_hidden (NEED_DH) and
``dlogits^T @ H_rows`` into d_weight (NEED_DW) with fp32 atomics. One launch and no dlogits buffer, but
one atomic per element per row block (d_weight) and per vocabulary block (d_hidden): 358 GB of
read-modify-write at N = 16,384, H = 1,536, V = 151,936 (see ``linear_logprobs_chunked`` for the
comparison), and the summation order, hence the last bits, depends on scheduling.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from sport_fast.kernels import lm_head_tile
from sport_fast.kernels.linear_logprobs_tiles import arch_of, autotuned, launch_options, tiles_for
from sport_fast.kernels.lm_head_tile import (
    dot_acc,
    ensure_tma_allocator,
    ieee,
    load_tile,
    logits_tile,
    matrix_source,
    tma_ready,
    upcast,
)


@triton.jit
def _atomic_backward_kernel(h_ptr, w_ptr, t_ptr, lse_ptr, g_ptr, dh_ptr, dw_ptr, N, V, H, stride_h, stride_w,
                            stride_dh, stride_dw, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
                            BLOCK_H: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr, TMA: tl.constexpr,
                            NEED_DH: tl.constexpr, NEED_DW: tl.constexpr):
    # 1. this program's (rows, vocabulary tile)
    row0 = tl.program_id(0) * BLOCK_N
    col0 = tl.program_id(1) * BLOCK_V
    rows = row0 + tl.arange(0, BLOCK_N)
    cols = col0 + tl.arange(0, BLOCK_V)
    row_ok = rows < N
    col_ok = cols < V
    targets = tl.load(t_ptr + rows, mask=row_ok, other=-1)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    g = tl.load(g_ptr + rows, mask=row_ok, other=0.0)
    # 2. recompute the logits tile and form dlogits (fp32); padded rows have g = 0, padded columns p = 0
    h_src = matrix_source(h_ptr, N, H, stride_h, BLOCK_N, BLOCK_H, TMA)
    w_src = matrix_source(w_ptr, V, H, stride_w, BLOCK_V, BLOCK_H, TMA)
    logits = logits_tile(h_src, w_src, row0, col0, N, V, H, stride_h, stride_w, BLOCK_N, BLOCK_V, BLOCK_H,
                         IEEE, UPCAST, TMA)
    p = tl.where(col_ok[None, :], tl.exp(logits - lse[:, None]), 0.0)
    onehot = tl.where(cols[None, :] == targets[:, None], 1.0, 0.0)
    dlogits = g[:, None] * (onehot - p)
    dlogits_in = dlogits if UPCAST else dlogits.to(h_ptr.dtype.element_ty)
    # 3. d_hidden[rows] += dlogits @ W[cols]; d_weight[cols] += dlogits^T @ H[rows], one H slice at a time
    dh_rows = dh_ptr + rows.to(tl.int64)[:, None] * stride_dh
    dw_rows = dw_ptr + cols.to(tl.int64)[:, None] * stride_dw
    for h0 in range(0, H, BLOCK_H):
        ks = h0 + tl.arange(0, BLOCK_H)
        k_ok = ks < H
        if NEED_DH:
            w = load_tile(w_src, col0, h0, V, H, stride_w, BLOCK_V, BLOCK_H, UPCAST, TMA)  # (BLOCK_V, BLOCK_H)
            dh = dot_acc(dlogits_in, w, tl.zeros((BLOCK_N, BLOCK_H), dtype=tl.float32), IEEE)
            tl.atomic_add(dh_rows + ks[None, :], dh, mask=row_ok[:, None] & k_ok[None, :])
        if NEED_DW:
            hh = load_tile(h_src, row0, h0, N, H, stride_h, BLOCK_N, BLOCK_H, UPCAST, TMA)  # (BLOCK_N, BLOCK_H)
            dw = dot_acc(tl.trans(dlogits_in), hh, tl.zeros((BLOCK_V, BLOCK_H), dtype=tl.float32), IEEE)
            tl.atomic_add(dw_rows + ks[None, :], dw, mask=col_ok[:, None] & k_ok[None, :])


def backward(hidden, weight, targets, lse, grad_logp, tiles, need_d_hidden: bool, need_d_weight: bool,
             tune: bool):
    """(d_hidden or None, d_weight or None) in the inputs' dtypes, summed by fp32 atomics."""
    n, h = hidden.shape
    v = weight.shape[0]
    d_hidden = lm_head_tile.new_buffer((n, h), torch.float32, hidden.device, zero=True) if need_d_hidden else None
    d_weight = lm_head_tile.new_buffer((v, h), torch.float32, hidden.device, zero=True) if need_d_weight else None
    if n > 0 and (need_d_hidden or need_d_weight):
        _launch(hidden, weight, targets, lse, grad_logp, d_hidden, d_weight, tiles, tune)
    return (d_hidden.to(hidden.dtype) if need_d_hidden else None,
            d_weight.to(weight.dtype) if need_d_weight else None)


def _launch(hidden, weight, targets, lse, grad_logp, d_hidden, d_weight, tiles, tune: bool) -> None:
    n, h = hidden.shape
    v = weight.shape[0]
    cfg = tiles_for("atomic", hidden, tiles)
    tma = bool(cfg["TMA"]) and tma_ready(hidden, weight)
    if tma and hidden.is_cuda:
        ensure_tma_allocator()
    dh = d_hidden if d_hidden is not None else grad_logp  # a skipped gradient's pointer is never touched
    dw = d_weight if d_weight is not None else grad_logp
    args = (hidden, weight, targets, lse, grad_logp, dh, dw, n, v, h, hidden.stride(0), weight.stride(0), h, h)
    flags = {"IEEE": ieee(hidden), "UPCAST": upcast(hidden), "TMA": tma, "NEED_DH": d_hidden is not None,
             "NEED_DW": d_weight is not None}
    if tune:
        zeroed = tuple(name for name, buf in (("dh_ptr", d_hidden), ("dw_ptr", d_weight)) if buf is not None)
        kernel = autotuned(_atomic_backward_kernel, "atomic", arch_of(hidden.device), ("V", "H"),
                           reset_to_zero=zeroed)
        kernel[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(v, meta["BLOCK_V"]))](*args, **flags)
    else:
        grid = (triton.cdiv(n, cfg["BLOCK_N"]), triton.cdiv(v, cfg["BLOCK_V"]))
        _atomic_backward_kernel[grid](*args, **flags, **launch_options(cfg))
