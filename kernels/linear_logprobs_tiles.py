"""Tiles per architecture, the forward's vocabulary split, the backward's row chunk, and opt-in autotuning.

Every kernel works on a (rows, vocabulary, hidden) iteration space, so one naming covers all of them:
BLOCK_N rows, BLOCK_V vocabulary entries, BLOCK_H hidden units; which of the three is the reduction
depends on the kernel (H for the logits, V for d_hidden, rows for d_weight). ``tiles=`` overrides from a
caller apply to every kernel of the call.

The defaults were chosen by compiling for each target with no GPU at hand
(tests/kernels/test_compile_targets.py, Triton 3.9.0; a scratch run with Triton 3.6.0, the GPU image's,
agreed): bf16 tiles lower to mma (sm_80) and wgmma (sm_90), shared memory stays inside the
architecture's limit, ptxas reports no spills, and registers keep a margin below 255. Among those, the
largest output tiles won (more FLOPs per byte loaded). They are not measured: speed on a real GPU is the
opt-in autotuner's job (SPORT_KERNEL_AUTOTUNE=1 or ``autotune=True``) over the small ``AUTOTUNE_EXTRA``
sets. TMA (sm_90+) is opt-in too (SPORT_KERNEL_TMA=1 or ``tiles={"TMA": True}``): it compiles, but
nobody has timed it. GPUs past sm_90 get the sm_90 tables, unchecked.
"""
from __future__ import annotations

import functools
import os
import warnings

import torch
import triton

SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}  # usable shared memory per block: A100, H100


def _cfg(n, v, h, warps, stages):
    return {"BLOCK_N": n, "BLOCK_V": v, "BLOCK_H": h, "num_warps": warps, "num_stages": stages}


# arch -> "16bit" (bf16/fp16) | "fp32" -> kernel -> tiles and launch options. Registers at these tiles
# (ptxas via Triton 3.9.0, bf16, heaviest flags): sm_90 forward 180, dlogits 128, d_hidden 199,
# d_weight 186, atomic 133; sm_80 forward 174, dlogits 160, d_hidden 160, d_weight 186, atomic 160.
# fp32 is exact fp32 (FMA, no tensor cores): small tiles, 8 warps.
_FP32 = {"forward": _cfg(32, 64, 32, 8, 2), "dlogits": _cfg(32, 64, 32, 8, 2), "d_hidden": _cfg(64, 32, 64, 8, 2),
         "d_weight": _cfg(32, 64, 32, 8, 2), "atomic": _cfg(32, 64, 16, 8, 2)}
TILES = {
    80: {
        "16bit": {"forward": _cfg(64, 128, 64, 8, 3), "dlogits": _cfg(128, 128, 32, 8, 4),
                  "d_hidden": _cfg(128, 64, 128, 8, 3), "d_weight": _cfg(32, 128, 128, 8, 4),
                  "atomic": _cfg(64, 128, 32, 8, 2)},
        "fp32": _FP32,
    },
    90: {
        "16bit": {"forward": _cfg(128, 128, 64, 8, 3), "dlogits": _cfg(128, 128, 64, 8, 3),
                  "d_hidden": _cfg(128, 64, 256, 8, 3), "d_weight": _cfg(64, 128, 128, 8, 3),
                  "atomic": _cfg(64, 128, 64, 8, 2)},
        "fp32": _FP32,
    },
}
MERGE_TILES = {"BLOCK_N": 64, "BLOCK_S": 32, "num_warps": 4, "num_stages": 1}

# Small opt-in autotune sets (16-bit inputs): the default tiles plus these, every one compile-checked
# like the defaults (no spills, shared memory within the limit).
AUTOTUNE_EXTRA = {
    80: {"forward": [_cfg(64, 128, 64, 8, 4), _cfg(128, 128, 32, 8, 4)],
         "dlogits": [_cfg(128, 128, 64, 8, 4), _cfg(64, 128, 64, 8, 4)],
         "d_hidden": [_cfg(128, 64, 128, 8, 4), _cfg(64, 64, 256, 8, 3)],
         "d_weight": [_cfg(64, 128, 64, 8, 3), _cfg(64, 128, 128, 8, 3)],
         "atomic": [_cfg(64, 128, 32, 8, 3), _cfg(64, 64, 64, 8, 2)]},
    90: {"forward": [_cfg(128, 128, 64, 8, 4), _cfg(64, 256, 64, 8, 3)],
         "dlogits": [_cfg(128, 128, 64, 8, 4), _cfg(64, 128, 64, 8, 4)],
         "d_hidden": [_cfg(128, 64, 128, 8, 4), _cfg(64, 64, 256, 8, 3)],
         "d_weight": [_cfg(64, 128, 128, 8, 4), _cfg(64, 128, 64, 8, 3)],
         "atomic": [_cfg(64, 128, 32, 8, 3), _cfg(64, 64, 64, 4, 3)]},
}
CPU_SM_COUNT = 132  # the interpreter has no device to ask; an H100 SXM's count keeps splits realistic


def arch_of(device: torch.device) -> int:
    """80 (Ampere/Ada tables) or 90 (Hopper and later); CPU (the interpreter) uses the sm_90 tables."""
    if device.type != "cuda":
        return 90
    major, _ = torch.cuda.get_device_capability(device)
    return 90 if major >= 9 else 80


def precision_of(dtype: torch.dtype) -> str:
    return "fp32" if dtype == torch.float32 else "16bit"


def tiles_for(kernel: str, x: torch.Tensor, override: dict | None = None) -> dict:
    """Default tiles and launch options of ``kernel`` for tensors like ``x``, with ``override`` applied."""
    base = MERGE_TILES if kernel == "merge" else TILES[arch_of(x.device)][precision_of(x.dtype)][kernel]
    tma = os.environ.get("SPORT_KERNEL_TMA", "0") == "1" and arch_of(x.device) >= 90 and x.is_cuda
    return {**base, "TMA": tma, **(override or {})}


def launch_options(cfg: dict, blocks: tuple[str, ...] = ("BLOCK_N", "BLOCK_V", "BLOCK_H")) -> dict:
    """The constexpr tiles a kernel takes plus num_warps / num_stages, out of a ``tiles_for`` dict."""
    return {**{k: cfg[k] for k in blocks}, "num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}


@functools.cache
def sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return CPU_SM_COUNT
    return torch.cuda.get_device_properties(device).multi_processor_count


def vocab_splits(n: int, v: int, block_n: int, block_v: int, sms: int, waves: int = 4,
                 min_tiles_per_split: int = 8) -> int:
    """How many vocabulary ranges the forward splits V into, so rows x splits programs fill ``waves`` waves.

    Row blocks alone leave an H100 mostly idle at N = 4,096 (64 programs on 132 SMs). Each split keeps at
    least ``min_tiles_per_split`` vocabulary tiles so its fixed cost (targets, partial stores) stays small;
    splits never exceed the tile count, and none is empty. Deterministic in its arguments.
    """
    row_blocks = triton.cdiv(n, block_n)
    v_tiles = triton.cdiv(v, block_v)
    wanted = triton.cdiv(waves * sms, row_blocks)
    splits = max(1, min(wanted, v_tiles // min_tiles_per_split, v_tiles))
    return triton.cdiv(v_tiles, triton.cdiv(v_tiles, splits))  # drop splits that the rounding left empty


def chunk_rows_for(n: int, v: int, elem_bytes: int, budget_bytes: int | None = None) -> int:
    """Rows of dlogits the chunked backward holds at once: (rows, V) in the input dtype within the budget.

    Default budget SPORT_KERNEL_CHUNK_BYTES or 1 GiB; rows a multiple of 256 (every BLOCK_N divides it),
    at least 256, at most N.
    """
    budget = budget_bytes or int(os.environ.get("SPORT_KERNEL_CHUNK_BYTES", str(2 ** 30)))
    rows = max(256, budget // max(1, v * elem_bytes) // 256 * 256)
    return max(1, min(n, rows))


def autotune_wanted(x: torch.Tensor, autotune: bool | None) -> bool:
    """``autotune`` if given, else SPORT_KERNEL_AUTOTUNE=1; refused (with a warning) off the GPU and for fp32."""
    wanted = autotune if autotune is not None else os.environ.get("SPORT_KERNEL_AUTOTUNE", "0") == "1"
    if wanted and (not x.is_cuda or x.dtype == torch.float32):
        _warn_once(f"sport_fast kernels: autotuning needs CUDA bf16/fp16 tensors (got {x.device}, {x.dtype}); "
                   "using the default tiles")
        return False
    return wanted


def autotune_set(kernel: str, arch: int) -> list[dict]:
    return [TILES[arch]["16bit"][kernel], *AUTOTUNE_EXTRA[arch][kernel]]


@functools.cache
def autotuned(kernel_fn, kernel: str, arch: int, key: tuple[str, ...], restore_value: tuple[str, ...] = (),
              reset_to_zero: tuple[str, ...] = ()):
    """``kernel_fn`` wrapped in ``triton.autotune`` over ``autotune_set(kernel, arch)``, built once.

    Timing runs happen on the first launch per key (V, H and the argument dtypes). ``restore_value`` /
    ``reset_to_zero`` name outputs that a timing run would otherwise corrupt (an accumulator read and
    written in place: restoring it copies it once; atomics into zeroed buffers).
    """
    configs = [triton.Config({k: c[k] for k in ("BLOCK_N", "BLOCK_V", "BLOCK_H")}, num_warps=c["num_warps"],
                             num_stages=c["num_stages"]) for c in autotune_set(kernel, arch)]
    return triton.autotune(configs=configs, key=list(key), restore_value=list(restore_value),
                           reset_to_zero=list(reset_to_zero))(kernel_fn)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)
