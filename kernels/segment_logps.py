"""Per-branch sums through the fused lm-head: what the step-DPO loss and the warm start's loss both score.

Each scored token m (segment id >= 0) adds ``log_softmax(weight @ hidden[positions[m]])[targets[m]]`` to its
segment (a candidate step); unscored tokens (-1) never reach the lm-head, and each distinct (position,
target) pair goes through it once (candidates that share a prefix ask the same position for the same token).
The backward reaches the kernel as one upstream gradient per distinct pair.
"""
from __future__ import annotations

import torch

from sport_fast.kernels.linear_logprobs import linear_logprobs


def segment_logps(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, segment_ids: torch.Tensor,
                  num_segments: int, positions: torch.Tensor | None = None, impl: str = "auto") -> torch.Tensor:
    """(S,) float32 sums (float64 for float64 inputs): scored token m adds
    ``log_softmax(weight @ hidden[positions[m]])[targets[m]]`` to segment ``segment_ids[m]``; tokens of
    segment -1 never reach the lm-head. ``positions`` defaults to the token's own row."""
    if segment_ids.shape != targets.shape or (positions is not None and positions.shape != targets.shape):
        raise ValueError(f"segment_ids {tuple(segment_ids.shape)} and positions must match targets "
                         f"{tuple(targets.shape)}")
    _check_segments(segment_ids, num_segments)
    scored = (segment_ids >= 0).nonzero().squeeze(1)
    rows = scored if positions is None else positions[scored]
    pairs, pair_of_token = torch.unique(torch.stack([rows, targets[scored]]), dim=1, return_inverse=True)
    logp = linear_logprobs(hidden[pairs[0]], weight, pairs[1], impl=impl)[pair_of_token]  # (M,)
    sums = torch.zeros(num_segments, dtype=logp.dtype, device=logp.device)
    return sums.index_add(0, segment_ids[scored], logp)


def _check_segments(segment_ids: torch.Tensor, num_segments: int) -> None:
    """Every segment id < S. On the GPU the check is queued on the device (no synchronisation)."""
    if not segment_ids.numel():
        return
    if segment_ids.is_cuda:
        torch._assert_async(segment_ids.max() < num_segments, "a segment id is >= the number of segments")
    elif int(segment_ids.max()) >= num_segments:
        raise ValueError(f"segment id {int(segment_ids.max())} >= {num_segments} segments (len(ref_logps))")
