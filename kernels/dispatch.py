"""The one place that chooses how the kernels run.

impl="triton": the Triton kernels (CUDA; CPU tensors only under TRITON_INTERPRET=1, which is how CI tests
them). impl="torch": the plain-PyTorch reference (chunked, checkpointed): the oracle and the CPU path.
impl="auto": triton for CUDA bf16/fp16/fp32 tensors, torch otherwise. SPORT_KERNEL_IMPL overrides "auto".
A CUDA tensor that cannot use Triton falls back to torch with one loud warning.
"""
from __future__ import annotations

import importlib.util
import os
import warnings

import torch

IMPLS = ("auto", "triton", "torch")
TRITON_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
_warned: set[str] = set()


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_kernel_impl(impl: str, x: torch.Tensor) -> str:
    """"triton" or "torch" for a call with ``impl`` on tensors like ``x``; refuses what cannot work."""
    if impl == "auto":
        impl = os.environ.get("SPORT_KERNEL_IMPL", "auto")
    if impl not in IMPLS:
        raise ValueError(f"kernel impl must be one of {IMPLS}, got {impl!r}")
    if impl == "torch":
        return impl
    problem = _triton_problem(x)
    if impl == "triton":
        if problem:
            raise ValueError(f"impl='triton' cannot run here: {problem}")
        return impl
    if problem and x.is_cuda:
        _warn_once(f"sport_fast kernels: falling back to the plain-PyTorch path ({problem}); "
                   "slower, and it materialises a (chunk, V) float32 logits tile")
    return "torch" if problem or not x.is_cuda else "triton"


def _triton_problem(x: torch.Tensor) -> str | None:
    if not triton_available():
        return "triton is not installed"
    if x.dtype not in TRITON_DTYPES:
        return f"dtype {x.dtype} (Triton path takes bf16/fp16/fp32)"
    if not x.is_cuda and not interpreting():
        return "tensors are on the CPU and TRITON_INTERPRET=1 is not set"
    return None


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)
