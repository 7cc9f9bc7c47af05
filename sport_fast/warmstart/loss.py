"""The supervised loss of a tree-packed batch of demonstrations: the mean negative log-likelihood of the
agent's own tokens (every group's candidate), nothing of the contexts (the task, the observations).

A demonstration of n steps is n groups: step i's context is the task, the steps before it and their
observations, its one candidate the step's tokens. Packed together, step i's tokens are both the candidate of
group i and a prefix of group i+1's context: one trie node each, computed once.
"""
from __future__ import annotations

from typing import Sequence

import torch

from sport_fast.data.step_group import StepGroup
from sport_fast.kernels import segment_logps
from sport_fast.model.introspect import lm_head_weight
from sport_fast.tree.batch import TreeBatch, make_tree_batch
from sport_fast.tree.forward import tree_hidden_states


def tree_sft_loss(model, batch: TreeBatch, *, attn: str = "auto", kernel_impl: str = "auto"):
    """(mean NLL per scored token, metrics) over every candidate of the packed batch."""
    tree = batch.tree
    hidden = tree_hidden_states(model, batch, attn=attn)           # (T, H)
    device = hidden.device
    sums = segment_logps(hidden, lm_head_weight(model), tree.score_targets.to(device), tree.score_segments.to(device),
                         tree.num_segments, positions=tree.score_positions.to(device), impl=kernel_impl)
    tokens = tree.score_targets.numel()
    loss = -sums.sum() / max(1, tokens)
    return loss, {"tokens/scored": torch.tensor(tokens), "logps/step": sums.detach().mean()}


class TreeSFTModule(torch.nn.Module):
    """The supervised step as a module, as ``dpo.module.TreeDPOModule`` is the preference step: what the
    optimizer or a DeepSpeed engine calls, with the same records (``acc`` and ``margin`` are not defined)."""

    def __init__(self, policy, cfg, images=None, backends=None):
        super().__init__()
        self.policy, self.images, self.cfg = policy, images, cfg
        self.kernel, self.attn, self.trie = (backends.kernel, backends.tree_attention, backends.trie) \
            if backends is not None else ("auto", "auto", "auto")

    def register_head_for_zero3(self) -> None:
        import deepspeed
        deepspeed.zero.register_external_parameter(self, lm_head_weight(self.policy))

    def pack(self, groups: Sequence[StepGroup]):
        return make_tree_batch(self.policy, groups, candidates="all", images=self.images, trie_impl=self.trie)

    def forward(self, groups: Sequence[StepGroup], batch=None) -> tuple[torch.Tensor, dict]:
        batch = batch if batch is not None else self.pack(groups)
        loss, _ = tree_sft_loss(self.policy, batch, attn=self.attn, kernel_impl=self.kernel)
        return loss, {"loss": loss.detach(), "acc": None, "margin": None, "tokens": batch.tree.num_tokens}
