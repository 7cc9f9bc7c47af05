"""Backward of ``linear_logprobs`` without atomics: rows in chunks, dlogits per chunk, two GEMMs (the default).

Math. Upstream gradient g_i, p_iv = exp(logit_iv - lse_i):
  dlogits_iv = g_i (1[v = t_i] - p_iv)          (N, V), never whole: C rows at a time
  d_hidden   = dlogits @ W                      (C, V) @ (V, H) -> (C, H) per chunk
  d_weight   = sum over chunks dlogits^T @ h    (V, C) @ (C, H) -> (V, H), fp32 across chunks
Per chunk of C rows (``chunk_rows_for``: (C, V) in the input dtype within 1 GiB):
  1. _dlogits_kernel   grid (C/BLOCK_N, V/BLOCK_V): recompute the logits tile (reduce over H), form
     dlogits in fp32, store it in the input dtype (bf16 rounding, as the product's input, like before).
  2. _d_hidden_kernel  grid (H/BLOCK_H, C/BLOCK_N): reduce over V in registers; one program owns each
     d_hidden tile and writes it once. Skipped when hidden needs no gradient.
  3. _d_weight_kernel  grid (H/BLOCK_H, V/BLOCK_V): reduce over the chunk's rows in registers, add the
     earlier chunks' fp32 sum that the same program wrote (ACCUMULATE), store; the last chunk stores in
     the weight's dtype. Skipped when the weight needs no gradient (LoRA: no (V, H) buffer is allocated).
No atomics anywhere, and every sum runs in a fixed order: the gradients are deterministic.
The H tile is the fastest grid axis in 2 and 3, so programs running together share a dlogits slab in L2.

On paper, at N = 16,384, H = 1,536, V = 151,936 (bf16; no GPU was available to measure any of this):
  FLOPs       both variants: recompute 2NVH + d_hidden 2NVH + d_weight 2NVH = 6NVH = 22.9 TFLOP
              (LoRA, no d_weight: 4NVH = 15.3 TFLOP); the forward is 2NVH = 7.6 TFLOP.
  atomics     "atomic": one fp32 atomic per element per row block into d_weight, (N/64) V H = 6.0e10
              (239 GB), and per vocabulary block into d_hidden, (V/128) N H = 3.0e10 (119 GB): 358 GB of
              read-modify-write resolved in L2. "chunked": none.
  bytes       "chunked": dlogits written once and read twice, 3 N V x 2 B = 14.9 GB; the fp32 d_weight
              accumulator read and written per chunk, (2 x 5 - 1) V H x 4 B = 8.4 GB at C = 3,328
              (5 chunks); plus weight and hidden re-reads that L2 mostly absorbs. Against 358 GB of atomics.
  memory      "chunked": the (C, V) dlogits chunk (1 GiB budget, SPORT_KERNEL_CHUNK_BYTES), d_hidden,
              and when the weight trains an fp32 (V, H) accumulator (0.93 GB here; 2.2 GB at 7B, H = 3,584)
              only if there is more than one chunk. "atomic": fp32 (N, H) and (V, H) buffers.
  launches    "chunked": 2-3 per chunk; "atomic": one. At small N the atomic kernel's traffic is small
              and it may win; that crossover is unmeasured.
Rejected: a d_weight pass over (V tiles x H tiles) that loops over all rows and recomputes the logits
tile per row block. A logit needs all of H, so each of the H/BLOCK_H hidden tiles would recompute it:
2NVH x H/BLOCK_H extra (12x the forward at H = 1,536, BLOCK_H = 128). Not yet tried: cuBLAS for steps 2
and 3 (Liger-Kernel's fused_linear_cross_entropy uses torch.mm/addmm per chunk); torch.mm's
out_dtype=float32 for bf16 inputs is CUDA-only, so d_weight's fp32 accumulation would need that path.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from sport_fast.kernels import lm_head_tile
from sport_fast.kernels.linear_logprobs_tiles import arch_of, autotuned, chunk_rows_for, launch_options, tiles_for
from sport_fast.kernels.lm_head_tile import (
    dot_acc,
    ensure_tma_allocator,
    ieee,
    load_tile,
    logits_tile,
    matrix_source,
    store_tile,
    tma_ready,
    upcast,
)


@triton.jit
def _dlogits_kernel(h_ptr, w_ptr, t_ptr, lse_ptr, g_ptr, dl_ptr, C, V, H, stride_h, stride_w, stride_dl,
                    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, IEEE: tl.constexpr,
                    UPCAST: tl.constexpr, TMA: tl.constexpr):
    # 1. this program's (rows, vocabulary tile) and the rows' targets, lse and upstream gradient
    row0 = tl.program_id(0) * BLOCK_N
    col0 = tl.program_id(1) * BLOCK_V
    rows = row0 + tl.arange(0, BLOCK_N)
    cols = col0 + tl.arange(0, BLOCK_V)
    row_ok = rows < C
    targets = tl.load(t_ptr + rows, mask=row_ok, other=-1)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    g = tl.load(g_ptr + rows, mask=row_ok, other=0.0)
    # 2. recompute the (BLOCK_N, BLOCK_V) logits tile in fp32
    h_src = matrix_source(h_ptr, C, H, stride_h, BLOCK_N, BLOCK_H, TMA)
    w_src = matrix_source(w_ptr, V, H, stride_w, BLOCK_V, BLOCK_H, TMA)
    logits = logits_tile(h_src, w_src, row0, col0, C, V, H, stride_h, stride_w, BLOCK_N, BLOCK_V, BLOCK_H,
                         IEEE, UPCAST, TMA)
    # 3. dlogits = g (onehot - p) in fp32, stored in dl's dtype; padded rows and columns are masked out
    p = tl.exp(logits - lse[:, None])
    onehot = tl.where(cols[None, :] == targets[:, None], 1.0, 0.0)
    store_tile(dl_ptr, g[:, None] * (onehot - p), row0, col0, C, V, stride_dl, BLOCK_N, BLOCK_V, UPCAST)


@triton.jit
def _d_hidden_kernel(dl_ptr, w_ptr, dh_ptr, C, V, H, stride_dl, stride_w, stride_dh, BLOCK_N: tl.constexpr,
                     BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    # 1. this program's d_hidden tile [rows, hidden units]; H tiles vary fastest so a wave shares dl rows
    h0 = tl.program_id(0) * BLOCK_H
    row0 = tl.program_id(1) * BLOCK_N
    acc = tl.zeros((BLOCK_N, BLOCK_H), dtype=tl.float32)
    # 2. reduce over the vocabulary: (BLOCK_N, BLOCK_V) @ (BLOCK_V, BLOCK_H)
    for v0 in range(0, V, BLOCK_V):
        dl = load_tile(dl_ptr, row0, v0, C, V, stride_dl, BLOCK_N, BLOCK_V, UPCAST, False)
        w = load_tile(w_ptr, v0, h0, V, H, stride_w, BLOCK_V, BLOCK_H, UPCAST, False)
        acc = dot_acc(dl, w, acc, IEEE)
    # 3. one store per element, in d_hidden's dtype
    store_tile(dh_ptr, acc, row0, h0, C, H, stride_dh, BLOCK_N, BLOCK_H, UPCAST)


@triton.jit
def _d_weight_kernel(dl_ptr, h_ptr, acc_ptr, dw_ptr, C, V, H, stride_dl, stride_h, stride_dw,
                     BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, IEEE: tl.constexpr,
                     UPCAST: tl.constexpr, ACCUMULATE: tl.constexpr):
    # 1. this program's d_weight tile [vocabulary, hidden units]; H tiles vary fastest (shared dl columns)
    h0 = tl.program_id(0) * BLOCK_H
    v0 = tl.program_id(1) * BLOCK_V
    acc = tl.zeros((BLOCK_V, BLOCK_H), dtype=tl.float32)
    # 2. reduce over the chunk's rows: (BLOCK_V, BLOCK_N) @ (BLOCK_N, BLOCK_H)
    for r0 in range(0, C, BLOCK_N):
        dl = load_tile(dl_ptr, r0, v0, C, V, stride_dl, BLOCK_N, BLOCK_V, UPCAST, False)
        h = load_tile(h_ptr, r0, h0, C, H, stride_h, BLOCK_N, BLOCK_H, UPCAST, False)
        acc = dot_acc(tl.trans(dl), h, acc, IEEE)
    # 3. add the earlier chunks' fp32 sum (written by this same program: no race), store in dw's dtype
    if ACCUMULATE:
        acc += load_tile(acc_ptr, v0, h0, V, H, stride_dw, BLOCK_V, BLOCK_H, False, False)
    store_tile(dw_ptr, acc, v0, h0, V, H, stride_dw, BLOCK_V, BLOCK_H, UPCAST)


def backward(hidden, weight, targets, lse, grad_logp, tiles, need_d_hidden: bool, need_d_weight: bool,
             chunk_rows: int | None, tune: bool):
    """(d_hidden or None, d_weight or None): hidden (N, H), weight (V, H), targets/lse/grad_logp (N,)."""
    n, h = hidden.shape
    v = weight.shape[0]
    d_hidden = lm_head_tile.new_buffer((n, h), hidden.dtype, hidden.device) if need_d_hidden else None
    d_weight = lm_head_tile.new_buffer((v, h), weight.dtype, weight.device) if need_d_weight else None
    if n == 0:
        return d_hidden, (d_weight.zero_() if need_d_weight else None)
    c = chunk_rows or chunk_rows_for(n, v, hidden.element_size())
    acc = _d_weight_accumulator(d_weight, n, c)
    dl = _dlogits_buffer(min(c, n), v, hidden)
    for r0 in range(0, n, c):
        rows = slice(r0, min(r0 + c, n))
        dl_c = dl[:rows.stop - r0]
        _launch_dlogits(hidden[rows], weight, targets[rows], lse[rows], grad_logp[rows], dl_c, tiles, tune)
        if d_hidden is not None:
            _launch_d_hidden(dl_c, weight, d_hidden[rows], tiles, tune)
        if d_weight is not None:  # the last chunk stores in d_weight's dtype
            out = d_weight if rows.stop == n else acc
            _launch_d_weight(dl_c, hidden[rows], acc, out, r0 > 0, tiles, tune)
    return d_hidden, d_weight


def _d_weight_accumulator(d_weight, n: int, c: int):
    """Where the chunks sum d_weight in fp32: d_weight itself when it is fp32 or one chunk covers N."""
    if d_weight is None or d_weight.dtype == torch.float32 or n <= c:
        return d_weight
    return lm_head_tile.new_buffer(d_weight.shape, torch.float32, d_weight.device)


def _dlogits_buffer(c: int, v: int, like: torch.Tensor) -> torch.Tensor:
    """(c, V) in the input dtype, rows padded to 16 elements so every row starts 16-byte aligned."""
    padded = triton.cdiv(v, 16) * 16
    return lm_head_tile.new_buffer((c, padded), like.dtype, like.device)[:, :v]


def _launch_dlogits(h_c, weight, t_c, lse_c, g_c, dl_c, tiles, tune: bool) -> None:
    c, h = h_c.shape
    v = weight.shape[0]
    cfg = tiles_for("dlogits", h_c, tiles)
    tma = bool(cfg["TMA"]) and tma_ready(h_c, weight)
    if tma and h_c.is_cuda:
        ensure_tma_allocator()
    args = (h_c, weight, t_c, lse_c, g_c, dl_c, c, v, h, h_c.stride(0), weight.stride(0), dl_c.stride(0))
    flags = {"IEEE": ieee(h_c), "UPCAST": upcast(h_c), "TMA": tma}
    if tune:
        kernel = autotuned(_dlogits_kernel, "dlogits", arch_of(h_c.device), ("V", "H"))
        kernel[lambda meta: (triton.cdiv(c, meta["BLOCK_N"]), triton.cdiv(v, meta["BLOCK_V"]))](*args, **flags)
    else:
        grid = (triton.cdiv(c, cfg["BLOCK_N"]), triton.cdiv(v, cfg["BLOCK_V"]))
        _dlogits_kernel[grid](*args, **flags, **launch_options(cfg))


def _launch_d_hidden(dl_c, weight, dh_c, tiles, tune: bool) -> None:
    c, v = dl_c.shape
    h = weight.shape[1]
    cfg = tiles_for("d_hidden", dl_c, tiles)
    args = (dl_c, weight, dh_c, c, v, h, dl_c.stride(0), weight.stride(0), dh_c.stride(0))
    flags = {"IEEE": ieee(dl_c), "UPCAST": upcast(dl_c)}
    if tune:
        kernel = autotuned(_d_hidden_kernel, "d_hidden", arch_of(dl_c.device), ("V", "H"))
        kernel[lambda meta: (triton.cdiv(h, meta["BLOCK_H"]), triton.cdiv(c, meta["BLOCK_N"]))](*args, **flags)
    else:
        grid = (triton.cdiv(h, cfg["BLOCK_H"]), triton.cdiv(c, cfg["BLOCK_N"]))
        _d_hidden_kernel[grid](*args, **flags, **launch_options(cfg))


def _launch_d_weight(dl_c, h_c, acc, out, accumulate: bool, tiles, tune: bool) -> None:
    c, v = dl_c.shape
    h = h_c.shape[1]
    cfg = tiles_for("d_weight", dl_c, tiles)
    args = (dl_c, h_c, acc, out, c, v, h, dl_c.stride(0), h_c.stride(0), out.stride(0))
    flags = {"IEEE": ieee(dl_c), "UPCAST": upcast(dl_c), "ACCUMULATE": accumulate}
    if tune:  # a timing run must not add into the accumulator twice: restore it between runs
        kernel = autotuned(_d_weight_kernel, "d_weight", arch_of(dl_c.device), ("V", "H"),
                           restore_value=("dw_ptr",))
        kernel[lambda meta: (triton.cdiv(h, meta["BLOCK_H"]), triton.cdiv(v, meta["BLOCK_V"]))](*args, **flags)
    else:
        grid = (triton.cdiv(h, cfg["BLOCK_H"]), triton.cdiv(v, cfg["BLOCK_V"]))
        _d_weight_kernel[grid](*args, **flags, **launch_options(cfg))
