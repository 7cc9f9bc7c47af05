"""Fused lm-head + log-softmax + gather in Triton: log p_i = (h_i . w_{t_i}) - logsumexp_v (h_i . w_v).

Never materialises the N x V logits. Inputs bf16/fp16/fp32, accumulation and reductions fp32.

Forward (grid: row blocks). Each program streams vocabulary tiles ``(BLOCK_N, H) @ (H, BLOCK_V)`` through an
online log-sum-exp (running max m and scaled sum s) and picks up the target logit when its tile passes;
it writes logp and lse (kept for backward): O(N) outputs.

Backward (grid: row blocks x vocabulary blocks). With upstream gradient g_i,
``dlogits_iv = g_i (1[v = t_i] - exp(logit_iv - lse_i))``. Each program recomputes its logits tile,
forms dlogits in fp32, and adds ``dlogits @ W_tile`` into d_hidden and ``dlogits^T @ H_rows`` into d_weight
with fp32 atomics: memory O(N H + V H), one recomputation of the logits.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# Default tiles, one set for every architecture until they are measured: no GPU has been available to
# tune them, and there is no autotuning yet. Every size is a power of two >= 16, as tl.dot requires.
DEFAULT_TILES = {"BLOCK_N": 64, "BLOCK_V": 128, "BLOCK_H": 64}


@triton.jit
def _logits_tile(h_ptr, w_ptr, rows, cols, row_ok, col_ok, H, stride_h, stride_w,
                 BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, IEEE: tl.constexpr,
                 UPCAST: tl.constexpr):
    """(BLOCK_N, BLOCK_V) fp32 tile of hidden @ weight.T, reduced over H in BLOCK_H steps."""
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        ks = h0 + tl.arange(0, BLOCK_H)
        k_ok = ks < H
        a = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(w_ptr + cols[:, None] * stride_w + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if IEEE:
            acc = tl.dot(a, tl.trans(b), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, tl.trans(b), acc)
    return acc


@triton.jit
def _forward_kernel(h_ptr, w_ptr, t_ptr, logp_ptr, lse_ptr, N, V, H, stride_h, stride_w,
                    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, IEEE: tl.constexpr,
                    UPCAST: tl.constexpr):
    # 1. this program's rows and their targets
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    targets = tl.load(t_ptr + rows, mask=row_ok, other=-1)
    m = tl.full((BLOCK_N,), float("-inf"), dtype=tl.float32)
    s = tl.zeros((BLOCK_N,), dtype=tl.float32)
    target_logit = tl.zeros((BLOCK_N,), dtype=tl.float32)
    # 2. stream the vocabulary: online log-sum-exp and the target logit
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_ok = cols < V
        logits = _logits_tile(h_ptr, w_ptr, rows, cols, row_ok, col_ok, H, stride_h, stride_w,
                              BLOCK_N, BLOCK_V, BLOCK_H, IEEE, UPCAST)
        logits = tl.where(col_ok[None, :], logits, float("-inf"))
        m_new = tl.maximum(m, tl.max(logits, axis=1))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(logits - m_new[:, None]), axis=1)
        m = m_new
        target_logit += tl.sum(tl.where(cols[None, :] == targets[:, None], logits, 0.0), axis=1)
    # 3. write log p and lse
    lse = m + tl.log(s)
    tl.store(logp_ptr + rows, target_logit - lse, mask=row_ok)
    tl.store(lse_ptr + rows, lse, mask=row_ok)


@triton.jit
def _backward_kernel(h_ptr, w_ptr, t_ptr, lse_ptr, g_ptr, dh_ptr, dw_ptr, N, V, H, stride_h, stride_w,
                     BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, IEEE: tl.constexpr,
                     UPCAST: tl.constexpr):
    # 1. this program's (rows, vocabulary tile)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok = rows < N
    col_ok = cols < V
    targets = tl.load(t_ptr + rows, mask=row_ok, other=-1)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    g = tl.load(g_ptr + rows, mask=row_ok, other=0.0)
    # 2. recompute the logits tile and form dlogits (fp32); padded rows have g = 0, padded columns p = 0
    logits = _logits_tile(h_ptr, w_ptr, rows, cols, row_ok, col_ok, H, stride_h, stride_w,
                          BLOCK_N, BLOCK_V, BLOCK_H, IEEE, UPCAST)
    p = tl.where(col_ok[None, :], tl.exp(logits - lse[:, None]), 0.0)
    onehot = tl.where(cols[None, :] == targets[:, None], 1.0, 0.0)
    dlogits = g[:, None] * (onehot - p)
    dlogits_in = dlogits if UPCAST else dlogits.to(h_ptr.dtype.element_ty)
    # 3. d_hidden[rows] += dlogits @ W[cols]; d_weight[cols] += dlogits^T @ H[rows], one H slice at a time
    for h0 in range(0, H, BLOCK_H):
        ks = h0 + tl.arange(0, BLOCK_H)
        k_ok = ks < H
        w = tl.load(w_ptr + cols[:, None] * stride_w + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        hh = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        if UPCAST:
            w = w.to(tl.float32)
            hh = hh.to(tl.float32)
        if IEEE:
            dh = tl.dot(dlogits_in, w, input_precision="ieee")
            dw = tl.dot(tl.trans(dlogits_in), hh, input_precision="ieee")
        else:
            dh = tl.dot(dlogits_in, w)
            dw = tl.dot(tl.trans(dlogits_in), hh)
        tl.atomic_add(dh_ptr + rows[:, None] * H + ks[None, :], dh, mask=row_ok[:, None] & k_ok[None, :])
        tl.atomic_add(dw_ptr + cols[:, None] * H + ks[None, :], dw, mask=col_ok[:, None] & k_ok[None, :])


def _tiles(tiles: dict | None) -> dict:
    return {**DEFAULT_TILES, **(tiles or {})}


def _ieee(x: torch.Tensor) -> bool:
    """fp32 inputs: exact fp32 products (no TF32)."""
    return x.dtype == torch.float32


def _upcast(x: torch.Tensor) -> bool:
    """Triton 3.9.0's interpreter returns garbage from tl.dot on bf16 tiles (fp16 and fp32 are exact), so
    under the interpreter bf16 tiles are multiplied in fp32. Compiled GPU code never takes this branch."""
    return x.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET", "0") == "1"


def forward(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, tiles: dict | None = None,
            out: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Host launcher: (logp (N,), lse (N,)) fp32, written into ``out`` when given (tests poison it)."""
    t = _tiles(tiles)
    n, h = hidden.shape
    v = weight.shape[0]
    logp, lse = out if out is not None else (torch.empty(n, dtype=torch.float32, device=hidden.device),
                                             torch.empty(n, dtype=torch.float32, device=hidden.device))
    if n == 0:
        return logp, lse
    grid = (triton.cdiv(n, t["BLOCK_N"]),)
    _forward_kernel[grid](hidden, weight, targets, logp, lse, n, v, h, hidden.stride(0), weight.stride(0),
                          IEEE=_ieee(hidden), UPCAST=_upcast(hidden), **t)
    return logp, lse


def backward(hidden, weight, targets, lse, grad_logp, tiles: dict | None = None):
    """Host launcher: (d_hidden, d_weight) in the inputs' dtypes, accumulated in fp32."""
    t = _tiles(tiles)
    n, h = hidden.shape
    v = weight.shape[0]
    d_hidden = torch.zeros(n, h, dtype=torch.float32, device=hidden.device)
    d_weight = torch.zeros(v, h, dtype=torch.float32, device=hidden.device)
    if n > 0:
        grid = (triton.cdiv(n, t["BLOCK_N"]), triton.cdiv(v, t["BLOCK_V"]))
        _backward_kernel[grid](hidden, weight, targets, lse, grad_logp.contiguous().float(), d_hidden, d_weight,
                               n, v, h, hidden.stride(0), weight.stride(0), IEEE=_ieee(hidden),
                               UPCAST=_upcast(hidden), **t)
    return d_hidden.to(hidden.dtype), d_weight.to(weight.dtype)
