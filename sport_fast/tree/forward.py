"""The model body over a packed tree: every shared prefix computed once, each token attending to exactly
its ancestors (``attention``), so every hidden state equals the one it gets in its own unpacked sequence.

With FlexAttention the packed length is padded up to a multiple of ``FLEX_BUCKET``: the compiled attention
kernel then sees a few lengths, not a new one per batch (each costs seconds of compilation). A pad token is
a root of its own (it sees itself, nothing sees it), at position 0: no real token's hidden state changes."""
from __future__ import annotations

import torch

from sport_fast.backends import tree_attention
from sport_fast.model.introspect import compute_dtype, decoder_of, model_device
from sport_fast.tree.attention import dense_tree_mask, flex_tree_block_mask
from sport_fast.tree.batch import TreeBatch


FLEX_BUCKET = 512


def tree_hidden_states(model, batch: TreeBatch, *, attn: str = "auto") -> torch.Tensor:
    """(T, H) last hidden states of the packed tree; the model body only, no lm-head.
    ``attn``: the tree attention (``backends.tree_attention``: auto, flex or dense)."""
    tree = batch.tree
    device = model_device(model)
    kwargs = {}
    if batch.pixel_values is not None:
        kwargs = {"pixel_values": batch.pixel_values.to(device), "image_grid_thw": batch.image_grid_thw.to(device)}
    flex = tree_attention(model, device, attn) == "flex"
    ids, positions, ends = _padded(tree, FLEX_BUCKET if flex else 1, device)
    positions = positions[:, None, :] if positions.ndim == 2 else positions[None, :]
    mask = flex_tree_block_mask(ends) if flex else dense_tree_mask(ends, dtype=compute_dtype(model))
    out = decoder_of(model)(input_ids=ids[None], position_ids=positions, attention_mask=mask, use_cache=False,
                            **kwargs)
    return out.last_hidden_state[0, :tree.num_tokens]


def _padded(tree, multiple: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids, positions, subtree ends) on ``device``, padded with self-contained roots to ``multiple``."""
    t = tree.num_tokens
    pad = -t % multiple
    ids, positions, ends = tree.input_ids.to(device), tree.position_ids.to(device), tree.subtree_end.to(device)
    if pad:
        ids = torch.cat([ids, ids.new_zeros(pad)])
        positions = torch.cat([positions, positions.new_zeros(*positions.shape[:-1], pad)], dim=-1)
        ends = torch.cat([ends, torch.arange(t + 1, t + pad + 1, device=device, dtype=ends.dtype)])
    return ids, positions, ends
