"""One step-DPO loss over a tree-packed batch: the training step's forward.

The model body runs once over the packed tree; only the hidden states at scoring positions reach the
lm-head kernel (``sport_fast.kernels``); reference sums come precomputed from the groups.
"""
from __future__ import annotations

from typing import Sequence

from sport_fast.dpo.branch_logps import packed_branch_logps
from sport_fast.dpo.loss import dpo_loss
from sport_fast.dpo.pairs import pair_indices, segment_lengths, segment_ref_logps
from sport_fast.data.step_group import StepGroup
from sport_fast.tree.batch import TreeBatch


def tree_step_dpo_loss(model, batch: TreeBatch, groups: Sequence[StepGroup], *, beta: float = 0.1,
                       attn: str = "auto", kernel_impl: str = "auto", **dpo_kwargs):
    """Mean step-DPO loss over every (chosen, rejected) pair of ``groups`` packed in ``batch``, and metrics."""
    sums = packed_branch_logps(model, batch, attn=attn, kernel_impl=kernel_impl)
    segments = batch.tree.segments
    chosen, rejected = pair_indices(groups, segments)
    ref = segment_ref_logps(groups, segments).to(sums.device)
    lengths = segment_lengths(groups, segments).to(sums.device)
    return dpo_loss(sums, ref, chosen.to(sums.device), rejected.to(sums.device), beta=beta, lengths=lengths,
                    **dpo_kwargs)
