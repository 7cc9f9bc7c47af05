"""The step-DPO loss: one path, which training and the kernel benchmark (W1) both call.

    hidden states at scoring positions -> lm-head log-probs of the scored tokens, fused (the N x V logits
    never exist; ``sport_fast.kernels``) -> per-candidate sums (segments) -> DPO over (chosen, rejected)
    pairs against the reference sums (``loss.dpo_loss``)

A segment shared by several pairs (SPORT's chosen step against up to four rejected) is computed once and
used by index; a (position, target) pair asked for by several candidates (a shared prefix) goes through the
lm-head once. The backward of the loss reaches the kernel as one upstream gradient per distinct pair.
``tree_step_dpo_loss`` is the training step's forward: the model body runs once over a packed tree and
only its scoring positions reach the head.
"""
from __future__ import annotations

from typing import Sequence

import torch

from sport_fast.data.step_group import StepGroup
from sport_fast.dpo.loss import dpo_loss
from sport_fast.dpo.pairs import pair_indices, segment_lengths, segment_ref_logps
from sport_fast.kernels import linear_logprobs
from sport_fast.model.introspect import lm_head_weight
from sport_fast.tree.batch import TreeBatch
from sport_fast.tree.forward import tree_hidden_states


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


def step_dpo_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, segment_ids: torch.Tensor,
                  chosen: torch.Tensor, rejected: torch.Tensor, ref_logps: torch.Tensor, beta: float = 0.1,
                  impl: str = "auto", positions: torch.Tensor | None = None, **dpo_kwargs):
    """Mean step-DPO loss over pairs and its metrics (``loss.dpo_loss``).

    hidden (N, H), weight (V, H), targets (M,) int64; segment_ids (M,) int64, -1 for unscored tokens;
    positions (M,): the row of ``hidden`` that predicts each token (default: row m); chosen, rejected (P,)
    segment indices; ref_logps (S,) reference sums per segment.
    """
    sums = segment_logps(hidden, weight, targets, segment_ids, ref_logps.numel(), positions, impl)
    return dpo_loss(sums, ref_logps.to(sums.device), chosen.to(sums.device), rejected.to(sums.device), beta=beta,
                    **dpo_kwargs)


def tree_step_dpo_loss(model, batch: TreeBatch, groups: Sequence[StepGroup], *, beta: float = 0.1,
                       attn: str = "auto", kernel_impl: str = "auto", **dpo_kwargs):
    """Mean step-DPO loss over every (chosen, rejected) pair of ``groups`` packed in ``batch``, and metrics."""
    tree = batch.tree
    hidden = tree_hidden_states(model, batch, attn=attn)           # (T, H)
    device = hidden.device
    chosen, rejected = pair_indices(groups, tree.segments)
    return step_dpo_loss(hidden, lm_head_weight(model), tree.score_targets.to(device),
                         tree.score_segments.to(device), chosen, rejected, segment_ref_logps(groups, tree.segments),
                         beta=beta, impl=kernel_impl, positions=tree.score_positions.to(device),
                         lengths=segment_lengths(groups, tree.segments).to(device), **dpo_kwargs)
