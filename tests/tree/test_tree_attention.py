"""The dense mask and the FlexAttention BlockMask both say: a token sees exactly its ancestors and itself."""
import torch
import torch.nn.functional as F

from sport_fast import pack_step_groups
from sport_fast.tree.attention import dense_tree_mask, flex_tree_block_mask, tree_visibility
from tiny_models import random_groups


def ancestors_matrix(parent: torch.Tensor) -> torch.Tensor:
    n = parent.numel()
    out = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        j = i
        while j >= 0:
            out[i, j] = True
            j = int(parent[j])
    return out


def test_visibility_equals_ancestor_walk():
    tree = pack_step_groups(random_groups(3))
    assert torch.equal(tree_visibility(tree.subtree_end), ancestors_matrix(tree.parent))


def test_dense_mask_is_additive_and_in_dtype():
    tree = pack_step_groups(random_groups(4))
    mask = dense_tree_mask(tree.subtree_end, dtype=torch.bfloat16)
    assert mask.shape == (1, 1, tree.num_tokens, tree.num_tokens) and mask.dtype == torch.bfloat16
    assert torch.equal(mask[0, 0] == 0, ancestors_matrix(tree.parent))
    assert torch.all(mask[0, 0][mask[0, 0] != 0] == torch.finfo(torch.bfloat16).min)


def test_flex_block_mask_attention_equals_dense_mask_attention():
    from torch.nn.attention.flex_attention import flex_attention
    tree = pack_step_groups(random_groups(5, n_groups=6, ctx_len=(30, 60)))
    t = tree.num_tokens
    q, k, v = (torch.randn(1, 2, t, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    out = flex_attention(q, k, v, block_mask=flex_tree_block_mask(tree.subtree_end, block_size=16))
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                         attn_mask=ancestors_matrix(tree.parent))
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
