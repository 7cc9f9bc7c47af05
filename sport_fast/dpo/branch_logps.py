"""Per-candidate log-prob sums from one tree-packed forward pass (reference sums, tests, scoring).

The body of the model runs once over the packed tree (every shared prefix once); the lm-head runs only
on the distinct positions that predict a candidate token (never on the rest of the context), and
``log p(candidate | context) = sum_j log_softmax(W h_{parent(n_j)})[t_j]`` is summed per segment.
"""
from __future__ import annotations

from typing import Sequence

import torch

from sport_fast.data.step_group import StepGroup
from sport_fast.kernels import segment_logps
from sport_fast.model.introspect import lm_head_weight
from sport_fast.model.vision import ImageInputs
from sport_fast.tree.batch import TreeBatch, make_tree_batch
from sport_fast.tree.forward import tree_hidden_states


def branch_logps(model, groups: Sequence[StepGroup], *, images: ImageInputs | None = None,
                 attn: str = "auto", trie_impl: str = "auto", kernel_impl: str = "auto") -> list[torch.Tensor]:
    """One float32 tensor of K log-prob sums per group, differentiable in the model's parameters.

    kernel_impl picks the lm-head log-prob path ("auto", "triton", "torch"; see ``sport_fast.backends``).
    """
    batch = make_tree_batch(model, groups, candidates="all", images=images, trie_impl=trie_impl)
    flat = packed_branch_logps(model, batch, attn=attn, kernel_impl=kernel_impl)
    return list(flat.split([g.num_candidates for g in groups]))


def packed_branch_logps(model, batch: TreeBatch, *, attn: str = "auto", kernel_impl: str = "auto") -> torch.Tensor:
    """(S,) log-prob sums (float32; float64 for a float64 model) of the batch's segments, in
    ``batch.tree.segments`` order."""
    tree = batch.tree
    hidden = tree_hidden_states(model, batch, attn=attn)          # (T, H)
    device = hidden.device
    return segment_logps(hidden, lm_head_weight(model), tree.score_targets.to(device), tree.score_segments.to(device),
                         tree.num_segments, positions=tree.score_positions.to(device), impl=kernel_impl)
