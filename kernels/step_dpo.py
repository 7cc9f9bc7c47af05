"""``step_dpo_loss``: lm-head log-probs of scored tokens -> per-branch sums -> step-DPO loss.

Only scored tokens (segment id >= 0) go through the lm-head; a segment shared by several pairs
(SPORT's chosen step against up to four rejected) is computed once and used by index. The backward of
the loss reaches the kernel as one upstream gradient per token: d loss / d sum of its segment.
"""
from __future__ import annotations

import torch

from sport_fast.dpo.loss import dpo_loss
from sport_fast.kernels.linear_logprobs import linear_logprobs


def step_dpo_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, segment_ids: torch.Tensor,
                  chosen: torch.Tensor, rejected: torch.Tensor, ref_logps: torch.Tensor, beta: float = 0.1,
                  impl: str = "auto", **dpo_kwargs):
    """Mean step-DPO loss over pairs and its metrics (see ``sport_fast.dpo.loss.dpo_loss``).

    hidden (N, H), weight (V, H), targets (N,) int64; segment_ids (N,) int64, -1 for unscored tokens;
    chosen, rejected (P,) segment indices; ref_logps (S,) reference sums per segment.
    """
    sums = segment_logps(hidden, weight, targets, segment_ids, ref_logps.numel(), impl=impl)
    return dpo_loss(sums, ref_logps, chosen, rejected, beta=beta, **dpo_kwargs)


def segment_logps(hidden, weight, targets, segment_ids, num_segments: int, impl: str = "auto") -> torch.Tensor:
    """(S,) float32 sums of token log-probs per segment; unscored tokens (-1) never reach the lm-head."""
    if segment_ids.shape != targets.shape:
        raise ValueError(f"segment_ids {tuple(segment_ids.shape)} must match targets {tuple(targets.shape)}")
    if segment_ids.numel() and int(segment_ids.max()) >= num_segments:
        raise ValueError(f"segment id {int(segment_ids.max())} >= {num_segments} segments (len(ref_logps))")
    scored = (segment_ids >= 0).nonzero().squeeze(1)
    logp = linear_logprobs(hidden[scored], weight, targets[scored], impl=impl)
    sums = torch.zeros(num_segments, dtype=logp.dtype, device=logp.device)
    return sums.index_add(0, segment_ids[scored], logp)
