"""The step-DPO loss: one path, which training and the kernel benchmark (W1) both call.

    hidden states at scoring positions -> lm-head log-probs of the scored tokens, fused (the N x V logits
    never exist; ``sport_fast.kernels``) -> per-candidate sums (segments) -> DPO over (chosen, rejected)
    pairs against the reference sums (``loss.dpo_loss``)

A segment shared by several pairs (SPORT's chosen step against up to four rejected) is computed once and
used by index; a (position, target) pair asked for by several candidates (a shared prefix) goes through the
lm-head once. The backward of the loss reaches the kernel as one upstream gradient per distinct pair.
``tree_step_dpo_loss`` is the training step's forward: the model body runs once over a packed tree and
only its scoring positions reach the head.

Demonstrations (``train.demonstration_weight``): a group with no rejected candidate in a training batch is a
verified demonstration step, packed beside the pairs; its candidate adds w x its NLL per token
(``loss = DPO over the pairs + w x NLL over the demonstrations' tokens``), through the same head pass. A batch
of demonstrations alone is their NLL.
"""
from __future__ import annotations

from typing import Sequence

import torch

from sport_fast.data.step_group import StepGroup
from sport_fast.dpo.loss import dpo_loss
from sport_fast.dpo.pairs import demonstration_segments, pair_indices, segment_lengths, segment_ref_logps
from sport_fast.kernels import segment_logps
from sport_fast.model.introspect import lm_head_weight
from sport_fast.tree.batch import TreeBatch
from sport_fast.tree.forward import tree_hidden_states


def step_dpo_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, segment_ids: torch.Tensor,
                  chosen: torch.Tensor, rejected: torch.Tensor, ref_logps: torch.Tensor, beta: float = 0.1,
                  impl: str = "auto", positions: torch.Tensor | None = None,
                  demonstrations: torch.Tensor | None = None, demonstration_weight: float = 0.0, **dpo_kwargs):
    """Mean step-DPO loss over pairs (+ w x the demonstrations' NLL per token) and its metrics (``loss.dpo_loss``).

    hidden (N, H), weight (V, H), targets (M,) int64; segment_ids (M,) int64, -1 for unscored tokens;
    positions (M,): the row of ``hidden`` that predicts each token (default: row m); chosen, rejected (P,)
    segment indices (P may be 0 when there are demonstrations); ref_logps (S,) reference sums per segment;
    demonstrations (D,) segment indices of demonstration steps (``lengths`` (S,) in ``dpo_kwargs`` then).
    """
    sums = segment_logps(hidden, weight, targets, segment_ids, ref_logps.numel(), positions, impl)
    device = sums.device
    if chosen.numel():
        loss, metrics = dpo_loss(sums, ref_logps.to(device), chosen.to(device), rejected.to(device), beta=beta,
                                 **dpo_kwargs)
    elif demonstrations is None or not demonstrations.numel():
        raise ValueError("step_dpo_loss needs at least one (chosen, rejected) pair or one demonstration")
    else:
        loss, metrics = sums.sum() * 0.0, {}
    if demonstrations is not None and demonstrations.numel():
        shown = demonstrations.to(device)
        tokens = dpo_kwargs["lengths"].to(device)[shown].sum().clamp(min=1)
        nll = -sums[shown].to(torch.promote_types(sums.dtype, torch.float32)).sum() / tokens
        loss = loss + demonstration_weight * nll
        metrics["nll/demonstrations"] = nll.detach()
    return loss, metrics


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
                         lengths=segment_lengths(groups, tree.segments).to(device),
                         demonstrations=demonstration_segments(groups, tree.segments), **dpo_kwargs)
