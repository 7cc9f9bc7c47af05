"""Per-candidate log-prob sums from one tree-packed forward pass.

The body of the model runs once over the packed tree (every shared prefix once); the lm-head runs only
on the distinct positions that predict a candidate token (never on the rest of the context), and
``log p(candidate | context) = sum_j log_softmax(W h_{parent(n_j)})[t_j]`` is summed per segment.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch

from sport_fast.kernels import linear_logprobs
from sport_fast.data.step_group import StepGroup
from sport_fast.tree.attention import dense_tree_mask, flex_tree_block_mask
from sport_fast.tree.batch import TreeBatch, decoder_of, make_tree_batch
from sport_fast.model.vision import ImageInputs

_ATTN = ("auto", "dense", "flex")


def branch_logps(model, groups: Sequence[StepGroup], *, images: ImageInputs | None = None,
                 attn: str = "auto", trie_impl: str = "auto", kernel_impl: str = "auto") -> list[torch.Tensor]:
    """One float32 tensor of K log-prob sums per group, differentiable in the model's parameters.

    kernel_impl picks the lm-head log-prob path ("auto", "triton", "torch"; see sport_fast.kernels).
    """
    batch = make_tree_batch(model, groups, candidates="all", images=images, trie_impl=trie_impl)
    flat = packed_branch_logps(model, batch, attn=attn, kernel_impl=kernel_impl)
    return list(flat.split([g.num_candidates for g in groups]))


def packed_branch_logps(model, batch: TreeBatch, *, attn: str = "auto", kernel_impl: str = "auto") -> torch.Tensor:
    """(S,) log-prob sums (float32; float64 for a float64 model) of the batch's segments, in ``batch.tree.segments`` order."""
    tree = batch.tree
    hidden = tree_hidden_states(model, batch, attn=attn)          # (T, H)
    positions, inverse = torch.unique(tree.score_positions.to(hidden.device), return_inverse=True)
    head = lm_head_weight(model)
    token_logps = _scored_logprobs(hidden[positions], head, inverse, tree.score_targets.to(hidden.device),
                                   kernel_impl)
    sums = torch.zeros(tree.num_segments, dtype=token_logps.dtype, device=hidden.device)
    return sums.index_add(0, tree.score_segments.to(hidden.device), token_logps)


def _scored_logprobs(hidden_u: torch.Tensor, weight: torch.Tensor, inverse: torch.Tensor,
                     targets: torch.Tensor, kernel_impl: str) -> torch.Tensor:
    """Log-probs of M scored tokens from U <= M distinct predicting positions.

    Two candidates that share a prefix ask the same position for the same target; each distinct
    (position, target) pair goes through the lm-head once.
    """
    pairs, pair_of_token = torch.unique(torch.stack([inverse, targets]), dim=1, return_inverse=True)
    logps = linear_logprobs(hidden_u[pairs[0]], weight, pairs[1], impl=kernel_impl)
    return logps[pair_of_token]


def tree_hidden_states(model, batch: TreeBatch, *, attn: str = "auto") -> torch.Tensor:
    """(T, H) last hidden states of the packed tree; the model body only, no lm-head."""
    tree = batch.tree
    device = next(model.parameters()).device
    kwargs = {}
    if batch.pixel_values is not None:
        kwargs = {"pixel_values": batch.pixel_values.to(device), "image_grid_thw": batch.image_grid_thw.to(device)}
    position_ids = tree.position_ids.to(device)
    position_ids = position_ids[:, None, :] if position_ids.ndim == 2 else position_ids[None, :]
    out = decoder_of(model)(input_ids=tree.input_ids[None].to(device), position_ids=position_ids,
                            attention_mask=_tree_mask(model, tree.subtree_end.to(device), attn),
                            use_cache=False, **kwargs)
    return out.last_hidden_state[0]


def _tree_mask(model, subtree_end: torch.Tensor, attn: str):
    kind = resolve_attn(model, subtree_end.device, attn)
    if kind == "flex":
        return flex_tree_block_mask(subtree_end)
    return dense_tree_mask(subtree_end, dtype=_compute_dtype(model))


def resolve_attn(model, device: torch.device, attn: str = "auto") -> str:
    """"flex" when the model runs FlexAttention on CUDA, else "dense"; SPORT_TREE_ATTN overrides."""
    if attn == "auto":
        attn = os.environ.get("SPORT_TREE_ATTN", "auto")
    if attn not in _ATTN:
        raise ValueError(f"attn must be one of {_ATTN}, got {attn!r}")
    uses_flex = getattr(model.config, "_attn_implementation", None) == "flex_attention"
    if attn == "auto":
        return "flex" if uses_flex and device.type == "cuda" else "dense"
    if attn == "flex" and not uses_flex:
        raise ValueError("attn='flex' needs a model loaded with attn_implementation='flex_attention'")
    return attn


def lm_head_weight(model) -> torch.Tensor:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        if getattr(config, name, None) not in (None, 1, 1.0):
            raise NotImplementedError(f"{type(base).__name__} transforms its logits ({name}); "
                                      "branch_logps supports plain lm-head logits only")
    head = base.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise NotImplementedError(f"{type(base).__name__}'s lm-head has a bias; not supported")
    return head.weight


def _compute_dtype(model) -> torch.dtype:
    return next(p.dtype for p in model.parameters() if p.is_floating_point())
