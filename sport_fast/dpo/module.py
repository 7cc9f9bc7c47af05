"""The preference step as a module: ``forward(groups)`` = the step-DPO loss of one tree-packed batch of pairs.
It is what the optimizer side (one process, or a DeepSpeed engine) calls; what it holds and how it packs are
``tree.module.TreeStepModule``'s.
"""
from __future__ import annotations

import torch

from sport_fast.dpo.step_loss import tree_step_dpo_loss
from sport_fast.tree.module import TreeStepModule


class TreeDPOModule(TreeStepModule):
    candidates = "paired"  # the chosen and rejected candidates of each group's pairs

    def forward(self, groups, batch=None) -> tuple[torch.Tensor, dict]:
        """(mean loss over the batch's pairs, plus its demonstrations' weighted NLL when the round trains them;
        a record: loss, acc, margin, chosen reward as device tensors, packed tokens)."""
        batch = batch if batch is not None else self.pack(groups)
        loss, metrics = tree_step_dpo_loss(self.policy, batch, groups, beta=self.cfg.beta,
                                           loss_type=self.cfg.loss_type, sft_weight=self.cfg.sft_weight,
                                           demonstration_weight=self.cfg.demonstration_weight,
                                           attn=self.attn, kernel_impl=self.kernel)
        # a batch of demonstrations alone has no pair: no accuracy, margin or reward
        return loss, {"loss": loss.detach(), "acc": metrics.get("rewards/accuracies"),
                      "margin": metrics.get("rewards/margins"), "chosen": metrics.get("rewards/chosen"),
                      "tokens": batch.tree.num_tokens}
