"""Reference log-prob sums: a forward-only pass over tree-packed batches, once per round.

For a LoRA policy the reference is the same network with its adapters disabled, so no second copy of
the weights is held. Groups that already carry ``ref_logps`` are skipped; with a StepStore the sums are
appended to it, so a resumed round does not pay twice.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from sport_fast.dpo.branch_logps import packed_branch_logps
from sport_fast.data.step_group import StepGroup
from sport_fast.data.store import StepStore
from sport_fast.tree.batch import make_tree_batch
from sport_fast.tree.batching import token_budget_batches
from sport_fast.model.vision import ImageInputs


@torch.no_grad()
def compute_ref_logps(model, groups: Sequence[StepGroup], *, store: StepStore | None = None,
                      images: ImageInputs | None = None, max_tokens: int = 16384, attn: str = "auto",
                      force: bool = False, adapters: bool = False, kernel_impl: str = "auto",
                      trie_impl: str = "auto") -> int:
    """Fill ``ref_logps`` of every group lacking them (all with force=True); returns how many were computed.
    adapters=True keeps LoRA adapters on (reference = the policy as it is now, e.g. at a round's start).
    attn, kernel_impl, trie_impl: the backends (``sport_fast.backends``), the same as training's."""
    todo = [g for g in groups if force or g.ref_logps is None]
    with reference_mode(model, adapters):
        for batch_groups in token_budget_batches(todo, max_tokens):
            batch = make_tree_batch(model, batch_groups, candidates="all", images=images, trie_impl=trie_impl)
            sums = packed_branch_logps(model, batch, attn=attn, kernel_impl=kernel_impl).float().cpu()
            for group, values in zip(batch_groups, sums.split([g.num_candidates for g in batch_groups])):
                group.ref_logps = values.tolist()
                if store is not None:
                    store.set_ref_logps(group.content_hash(), group.ref_logps)
    return len(todo)


@contextlib.contextmanager
def reference_mode(model, adapters: bool = False):
    """Eval mode, and adapters disabled when ``model`` is a peft model (unless ``adapters``); restored on exit."""
    was_training = model.training
    model.eval()
    adapters_off = model.disable_adapter() if hasattr(model, "disable_adapter") and not adapters \
        else contextlib.nullcontext()
    try:
        with adapters_off:
            yield model
    finally:
        model.train(was_training)
