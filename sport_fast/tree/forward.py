"""The model body over a packed tree: every shared prefix computed once, each token attending to exactly
its ancestors (``attention``), so every hidden state equals the one it gets in its own unpacked sequence."""
from __future__ import annotations

import torch

from sport_fast.backends import tree_attention
from sport_fast.model.introspect import compute_dtype, decoder_of, model_device
from sport_fast.tree.attention import dense_tree_mask, flex_tree_block_mask
from sport_fast.tree.batch import TreeBatch


def tree_hidden_states(model, batch: TreeBatch, *, attn: str = "auto") -> torch.Tensor:
    """(T, H) last hidden states of the packed tree; the model body only, no lm-head.
    ``attn``: the tree attention (``backends.tree_attention``: auto, flex or dense)."""
    tree = batch.tree
    device = model_device(model)
    kwargs = {}
    if batch.pixel_values is not None:
        kwargs = {"pixel_values": batch.pixel_values.to(device), "image_grid_thw": batch.image_grid_thw.to(device)}
    position_ids = tree.position_ids.to(device)
    position_ids = position_ids[:, None, :] if position_ids.ndim == 2 else position_ids[None, :]
    out = decoder_of(model)(input_ids=tree.input_ids[None].to(device), position_ids=position_ids,
                            attention_mask=tree_mask(model, tree.subtree_end.to(device), attn),
                            use_cache=False, **kwargs)
    return out.last_hidden_state[0]


def tree_mask(model, subtree_end: torch.Tensor, attn: str = "auto"):
    """The tree rule as the model's attention takes it: a FlexAttention BlockMask or a dense additive mask."""
    if tree_attention(model, subtree_end.device, attn) == "flex":
        return flex_tree_block_mask(subtree_end)
    return dense_tree_mask(subtree_end, dtype=compute_dtype(model))
