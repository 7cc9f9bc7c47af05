"""``linear_logprobs``: token log-probs through the lm-head, by Triton or plain PyTorch, behind one API.

The Triton path is registered as ``torch.library`` custom ops (forward and backward) with fake
implementations, so ``torch.compile`` traces through it and ``torch.library.opcheck`` can check it.
"""
from __future__ import annotations

import torch

from sport_fast.backends import kernel_impl
from sport_fast.kernels.linear_logprobs_reference import linear_logprobs_torch

BACKWARD_VARIANTS = ("chunked", "atomic")  # kept equal to linear_logprobs_triton's (imported lazily: triton)


@torch.library.custom_op("sport_fast::linear_logprobs_fwd", mutates_args=())
def _fwd_op(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
            backward_variant: str = "chunked") -> tuple[torch.Tensor, torch.Tensor]:
    """(logp, lse) fp32 (N,); ``backward_variant`` only travels to the backward (see _setup_context)."""
    from sport_fast.kernels import linear_logprobs_triton as tk
    return tk.forward(hidden.contiguous(), weight.contiguous(), targets.contiguous())


@_fwd_op.register_fake
def _fwd_fake(hidden, weight, targets, backward_variant="chunked"):
    n = hidden.shape[0]
    return hidden.new_empty(n, dtype=torch.float32), hidden.new_empty(n, dtype=torch.float32)


@torch.library.custom_op("sport_fast::linear_logprobs_bwd", mutates_args=())
def _bwd_op(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor,
            grad_logp: torch.Tensor, need_d_hidden: bool = True, need_d_weight: bool = True,
            variant: str = "chunked") -> tuple[torch.Tensor, torch.Tensor]:
    """(d_hidden, d_weight); a gradient that is not needed comes back as an empty (0,) tensor, uncomputed."""
    from sport_fast.kernels import linear_logprobs_triton as tk
    d_hidden, d_weight = tk.backward(hidden.contiguous(), weight.contiguous(), targets.contiguous(), lse,
                                     grad_logp, need_d_hidden=need_d_hidden, need_d_weight=need_d_weight,
                                     variant=variant)
    return (d_hidden if need_d_hidden else hidden.new_empty(0),
            d_weight if need_d_weight else weight.new_empty(0))


@_bwd_op.register_fake
def _bwd_fake(hidden, weight, targets, lse, grad_logp, need_d_hidden=True, need_d_weight=True, variant="chunked"):
    return (torch.empty_like(hidden) if need_d_hidden else hidden.new_empty(0),
            torch.empty_like(weight) if need_d_weight else weight.new_empty(0))


def _setup_context(ctx, inputs, output):
    hidden, weight, targets, backward_variant = inputs
    ctx.save_for_backward(hidden, weight, targets, output[1])
    ctx.backward_variant = backward_variant
    ctx.mark_non_differentiable(output[1])  # lse is kept for backward only, never returned to users


def _backward(ctx, grad_logp, _grad_lse):
    """Only the gradients autograd asks for: a frozen lm-head (LoRA) never gets a (V, H) buffer."""
    hidden, weight, targets, lse = ctx.saved_tensors
    need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    d_hidden, d_weight = _bwd_op(hidden, weight, targets, lse, grad_logp, need_h, need_w, ctx.backward_variant)
    return (d_hidden if need_h else None), (d_weight if need_w else None), None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def linear_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                    impl: str = "auto", *, backward_variant: str = "chunked") -> torch.Tensor:
    """log softmax(hidden @ weight.T)[i, targets[i]] as float32 (N,), differentiable in hidden and weight.

    hidden (N, H) and weight (V, H) in bf16/fp16/fp32 (tied embeddings allowed), targets (N,) int64 in
    [0, V) (outside it raises, as torch's gather does). impl: "auto" | "triton" | "torch" (see
    ``sport_fast.backends``). backward_variant (Triton only): "chunked" (default, no atomics, deterministic)
    or "atomic". Gradients are computed only for inputs that require them. Memory O(N H + V H).
    """
    _check(hidden, weight, targets)
    if backward_variant not in BACKWARD_VARIANTS:
        raise ValueError(f"backward_variant must be one of {BACKWARD_VARIANTS}, got {backward_variant!r}")
    if kernel_impl(impl, hidden) == "torch":
        return linear_logprobs_torch(hidden, weight, targets)
    logp, _ = _fwd_op(hidden, weight, targets, backward_variant)
    return logp


def _check(hidden, weight, targets) -> None:
    if hidden.ndim != 2 or weight.ndim != 2 or targets.ndim != 1:
        raise ValueError(f"linear_logprobs: need hidden (N, H), weight (V, H), targets (N,); got "
                         f"{tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(targets.shape)}")
    if hidden.shape[1] != weight.shape[1] or hidden.shape[0] != targets.shape[0]:
        raise ValueError(f"linear_logprobs: shapes disagree: hidden {tuple(hidden.shape)}, "
                         f"weight {tuple(weight.shape)}, targets {tuple(targets.shape)}")
    if targets.dtype != torch.int64:
        raise ValueError(f"linear_logprobs: targets must be int64, got {targets.dtype}")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"linear_logprobs: hidden is {hidden.dtype} but weight is {weight.dtype}")
