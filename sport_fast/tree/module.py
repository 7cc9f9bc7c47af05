"""What a training step over tree-packed groups holds, whatever its loss: the policy, the resolved backends, and
how its groups are packed (ahead of time, in the trainer's thread). ``dpo.module.TreeDPOModule`` (the
preference step) and ``warmstart.loss.TreeSFTModule`` (the supervised step) add their ``forward``.

Under ZeRO-3 every parameter lives in shards and DeepSpeed gathers a module's own parameters around its
forward (and again for its backward). The fused kernel reads the lm-head weight outside the head's own
forward, so the weight is registered as an external parameter of the step: DeepSpeed then gathers it for the
whole forward and again before the backward reaches the kernel.
"""
from __future__ import annotations

import torch

from sport_fast.model.introspect import lm_head_weight
from sport_fast.tree.batch import make_tree_batch


class TreeStepModule(torch.nn.Module):
    candidates = "paired"  # which candidates of each group are packed (``tree.batch.make_tree_batch``)

    def __init__(self, policy, cfg, images=None, backends=None):
        """``policy``: the causal LM (peft or plain); ``cfg``: the step's config section; ``images``: a
        ``model.vision.ImageInputs`` when the groups show images; ``backends``: the run's resolved
        ``sport_fast.backends.Backends`` (None: each call resolves ``auto``)."""
        super().__init__()
        self.policy, self.images, self.cfg = policy, images, cfg
        self.kernel, self.attn, self.trie = (backends.kernel, backends.tree_attention, backends.trie) \
            if backends is not None else ("auto", "auto", "auto")

    def register_head_for_zero3(self) -> None:
        import deepspeed
        deepspeed.zero.register_external_parameter(self, lm_head_weight(self.policy))

    def pack(self, groups):
        """The packed tree of ``groups`` (run ahead, in a thread, by the trainer)."""
        return make_tree_batch(self.policy, groups, candidates=self.candidates, images=self.images,
                               trie_impl=self.trie)
