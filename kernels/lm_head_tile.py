"""The tile loads and products every lm-head kernel shares, and the precision flags they take.

A kernel sees three matrices by row: hidden (N, H), weight (V, H) and the dlogits chunk (C, V). Each is
read through ``matrix_source`` (the pointer, or a Hopper TMA descriptor when ``TMA``) and ``load_tile``,
which returns a zero-padded (BLOCK_R, BLOCK_K) tile. Row offsets are formed in int64: row * stride
passes 2**31 once V * H does (V = 151,936 at H >= 14,134), and a TMA descriptor carries int64 strides.

Flags (all ``tl.constexpr``, decided by the host launchers):
  IEEE    fp32 inputs: exact fp32 products (no TF32).
  UPCAST  bf16 under TRITON_INTERPRET=1 only, working around two bugs of Triton 3.9.0's interpreter:
          tl.dot is wrong on bf16 tiles (fp16 and fp32 are exact), so tiles are multiplied in fp32;
          and fp32 -> bf16 casts truncate, so bf16 stores round by hand. Compiled GPU code never sets it.
  TMA     tiles arrive by tensor descriptor (``tl.make_tensor_descriptor``; sm_90+); out-of-range rows
          and columns are zero-filled by the copy engine instead of masked loads.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def matrix_source(ptr, n_rows, n_cols, stride, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, TMA: tl.constexpr):
    """What ``load_tile`` reads a row-major (n_rows, n_cols) matrix through: a TMA descriptor, or ``ptr``."""
    if TMA:
        return tl.make_tensor_descriptor(ptr, shape=[n_rows, n_cols], strides=[stride, 1],
                                         block_shape=[BLOCK_R, BLOCK_K])
    else:
        return ptr


@triton.jit
def load_tile(src, row0, k0, n_rows, n_cols, stride, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
              UPCAST: tl.constexpr, TMA: tl.constexpr):
    """(BLOCK_R, BLOCK_K) tile at [row0:, k0:] of a row-major (n_rows, n_cols) matrix, zeros outside it."""
    if TMA:
        tile = src.load([row0, k0])
    else:
        rows = row0 + tl.arange(0, BLOCK_R)
        ks = k0 + tl.arange(0, BLOCK_K)
        ptrs = src + rows.to(tl.int64)[:, None] * stride + ks[None, :]  # int64: rows * stride may pass 2**31
        tile = tl.load(ptrs, mask=(rows < n_rows)[:, None] & (ks < n_cols)[None, :], other=0.0)
    if UPCAST:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def store_tile(ptr, tile, row0, k0, n_rows, n_cols, stride, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
               UPCAST: tl.constexpr):
    """Store a (BLOCK_R, BLOCK_K) fp32 tile at [row0:, k0:] of a row-major (n_rows, n_cols) matrix, in its
    dtype, rounded to nearest even."""
    rows = row0 + tl.arange(0, BLOCK_R)
    ks = k0 + tl.arange(0, BLOCK_K)
    ptrs = ptr + rows.to(tl.int64)[:, None] * stride + ks[None, :]
    if UPCAST and ptr.dtype.element_ty == tl.bfloat16:
        out = _bf16_round_by_hand(tile)
    else:
        out = tile.to(ptr.dtype.element_ty)
    tl.store(ptrs, out, mask=(rows < n_rows)[:, None] & (ks < n_cols)[None, :])


@triton.jit
def _bf16_round_by_hand(x):
    """fp32 -> bf16, round to nearest even, in integer arithmetic: Triton 3.9.0's interpreter truncates
    fp32 -> bf16 (a GPU rounds), which biases every stored dlogit toward zero. Interpreter only."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = bits + 0x7FFF + ((bits >> 16) & 1)
    return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def dot_acc(a, b, acc, IEEE: tl.constexpr):
    """acc + a @ b, accumulated in fp32; exact fp32 products when IEEE."""
    if IEEE:
        return tl.dot(a, b, acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def logits_tile(h_src, w_src, row0, col0, N, V, H, stride_h, stride_w, BLOCK_N: tl.constexpr,
                BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
                TMA: tl.constexpr):
    """(BLOCK_N, BLOCK_V) fp32 tile of hidden @ weight.T at [row0:, col0:], reduced over H in BLOCK_H steps.

    Padded rows and columns come out 0; callers mask them (-inf before a max, 0 in a gradient).
    """
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        a = load_tile(h_src, row0, h0, N, H, stride_h, BLOCK_N, BLOCK_H, UPCAST, TMA)  # (BLOCK_N, BLOCK_H)
        b = load_tile(w_src, col0, h0, V, H, stride_w, BLOCK_V, BLOCK_H, UPCAST, TMA)  # (BLOCK_V, BLOCK_H)
        acc = dot_acc(a, tl.trans(b), acc, IEEE)  # (BLOCK_N, BLOCK_H) @ (BLOCK_H, BLOCK_V)
    return acc


def new_buffer(shape, dtype: torch.dtype, device, zero: bool = False) -> torch.Tensor:
    """Every buffer the launchers allocate comes from here (called through the module), so a test can
    poison each one with NaN and see which were allocated: an unwritten element, or a (V, H) buffer for a
    frozen weight, then shows."""
    return torch.zeros(shape, dtype=dtype, device=device) if zero else torch.empty(shape, dtype=dtype, device=device)


def unit_column_stride(x: torch.Tensor) -> torch.Tensor:
    """Row-major with any row stride is what the kernels read; copy only when columns are strided."""
    return x if x.stride(-1) == 1 else x.contiguous()


def ieee(x: torch.Tensor) -> bool:
    """fp32 inputs: exact fp32 products (no TF32)."""
    return x.dtype == torch.float32


def upcast(x: torch.Tensor) -> bool:
    """bf16 under the interpreter: multiply in fp32 (Triton 3.9.0's interpreter tl.dot is wrong on bf16)."""
    return x.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET", "0") == "1"


def tma_ready(*matrices: torch.Tensor) -> bool:
    """TMA needs a 16-byte aligned base, 16-byte aligned row strides and contiguous rows."""
    return all(m.stride(-1) == 1 and m.data_ptr() % 16 == 0 and (m.stride(0) * m.element_size()) % 16 == 0
               for m in matrices)


_allocator_set = False


def ensure_tma_allocator() -> None:
    """Device-side descriptors need scratch global memory (128 bytes a program) from ``triton.set_allocator``.

    Set once, process-wide, and only when a TMA launch is about to run on a GPU.
    """
    global _allocator_set
    if not _allocator_set:
        triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
        _allocator_set = True
