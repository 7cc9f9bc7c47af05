"""The training step's forward as a module: the policy, and ``forward(groups)`` = the step-DPO loss of one
tree-packed batch. It is what the optimizer side (one process, or a DeepSpeed engine) calls.

Under ZeRO-3 every parameter lives in shards and DeepSpeed gathers a module's own parameters around its
forward (and again for its backward). The fused kernel reads the lm-head weight outside the head's own
forward, so the weight is registered as an external parameter of this module: DeepSpeed then gathers it
for the whole step-DPO forward and again before the backward reaches the kernel.
"""
from __future__ import annotations

import torch

from sport_fast.model.introspect import lm_head_weight
from sport_fast.tree.batch import make_tree_batch
from sport_fast.dpo.step_loss import tree_step_dpo_loss


class TreeDPOModule(torch.nn.Module):
    def __init__(self, policy, cfg, images=None, backends=None):
        """``policy``: the causal LM (peft or plain); ``cfg``: a ``TrainSection`` (beta, loss type);
        ``images``: a ``model.vision.ImageInputs`` when the groups show images; ``backends``: the run's
        resolved ``sport_fast.backends.Backends`` (None: each call resolves ``auto``)."""
        super().__init__()
        self.policy, self.images, self.cfg = policy, images, cfg
        self.kernel, self.attn, self.trie = (backends.kernel, backends.tree_attention, backends.trie) \
            if backends is not None else ("auto", "auto", "auto")

    def register_head_for_zero3(self) -> None:
        import deepspeed
        deepspeed.zero.register_external_parameter(self, lm_head_weight(self.policy))

    def pack(self, groups):
        """The packed tree of ``groups``' pairs (run ahead, in a thread, by the trainer)."""
        return make_tree_batch(self.policy, groups, candidates="paired", images=self.images, trie_impl=self.trie)

    def forward(self, groups, batch=None) -> tuple[torch.Tensor, dict]:
        """(mean loss over the batch's pairs, a record: loss, acc, margin as device tensors, packed tokens)."""
        batch = batch if batch is not None else self.pack(groups)
        loss, metrics = tree_step_dpo_loss(self.policy, batch, groups, beta=self.cfg.beta,
                                           loss_type=self.cfg.loss_type, attn=self.attn, kernel_impl=self.kernel)
        return loss, {"loss": loss.detach(), "acc": metrics["rewards/accuracies"],
                      "margin": metrics["rewards/margins"], "tokens": batch.tree.num_tokens}
