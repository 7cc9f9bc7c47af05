"""Reference token log-probs through the lm-head, in plain PyTorch: the oracle and CPU path of the kernels.

``linear_logprobs_torch(hidden, weight, targets)`` = log_softmax(hidden @ weight.T)[i, targets[i]]:
inputs in the model's dtype, the (rows, V) logits tile cast to float32 before the log-sum-exp. Rows are
processed in chunks under activation checkpointing, so at most one (chunk, V) float32 tile is alive at a
time in forward and backward instead of the full N x V logits.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def linear_logprobs_torch(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          chunk_rows: int = 2048) -> torch.Tensor:
    """hidden (N, H), weight (V, H), targets (N,) int64 -> (N,) log-probs, differentiable.

    Float32 for bf16/fp16/fp32 inputs; float64 inputs stay float64 (the test oracle's precision).
    """
    if hidden.shape[0] != targets.shape[0]:
        raise ValueError(f"hidden has {hidden.shape[0]} rows for {targets.shape[0]} targets")
    if hidden.shape[-1] != weight.shape[-1]:
        raise ValueError(f"hidden size {hidden.shape[-1]} does not match weight's {weight.shape[-1]}")
    pieces = []
    for start in range(0, hidden.shape[0], chunk_rows):
        h, t = hidden[start:start + chunk_rows], targets[start:start + chunk_rows]
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            pieces.append(checkpoint(_chunk_logprobs, h, weight, t, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(h, weight, t))
    if not pieces:
        return hidden.new_zeros(0, dtype=torch.promote_types(hidden.dtype, torch.float32))
    return torch.cat(pieces)


def _chunk_logprobs(h: torch.Tensor, weight: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    logits = h @ weight.T  # (n, H) @ (H, V) -> (n, V) tile
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 (float64 stays float64)
    return logits.gather(1, t[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)
