"""Attention over a packed tree, from its DFS intervals: query i sees key j iff j <= i < subtree_end[j].

Two forms of the same rule: a dense additive (1, 1, T, T) mask for SDPA/eager attention (CPU, tests,
small batches; O(T^2) memory), and a FlexAttention ``BlockMask`` built once per batch on CUDA, whose
fully-masked tiles are skipped. Hugging Face models take either as ``attention_mask`` unchanged.
"""
from __future__ import annotations

import torch


def dense_tree_mask(subtree_end: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask (1, 1, T, T): 0 where a query sees a key, the dtype's minimum elsewhere."""
    allowed = tree_visibility(subtree_end)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=subtree_end.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def tree_visibility(subtree_end: torch.Tensor) -> torch.Tensor:
    """Boolean (T, T): [i, j] is True iff key j is query i's ancestor or i itself."""
    idx = torch.arange(subtree_end.numel(), device=subtree_end.device)
    return (idx[None, :] <= idx[:, None]) & (idx[:, None] < subtree_end[None, :])


def flex_tree_block_mask(subtree_end: torch.Tensor, block_size: int = 128):
    """FlexAttention BlockMask for the tree; build it once per batch on the device that will use it."""
    from torch.nn.attention.flex_attention import create_block_mask

    end = subtree_end.contiguous()

    def tree_mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx < end[kv_idx])

    t = end.numel()
    return create_block_mask(tree_mask_mod, B=None, H=None, Q_LEN=t, KV_LEN=t, device=end.device,
                             BLOCK_SIZE=block_size)
