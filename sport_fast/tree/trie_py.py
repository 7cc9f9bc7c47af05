"""Pure-Python twin of the C++ trie builder in ``csrc/tree_pack.cpp``.

Both take the same flat input and must return identical arrays (``tests/test_trie_twins.py`` checks
this with hypothesis). The algorithm, shared by both:

1. Insert each sequence ``i`` (tokens ``tokens[offsets[i]:offsets[i+1]]``) into a token trie, starting at
   the root when ``starts[i] == -1`` and otherwise at the last node of sequence ``starts[i] < i`` (so a
   candidate step is inserted once below its context's end instead of re-walking the context).
   A node is keyed by ``(parent, token, salt)``; the salt tells apart equal token ids whose content differs
   (the placeholder tokens of two different images).
2. Number the nodes in DFS preorder, roots and children in order of creation. In preorder the subtree of
   node ``j`` is the contiguous range ``[j, subtree_end[j])``, so "j is an ancestor of i or i itself" is
   ``j <= i < subtree_end[j]``: the whole tree-attention rule in two comparisons.
"""
from __future__ import annotations

import numpy as np

from sport_fast.tree.trie_types import TrieArrays


def build_trie_py(tokens: np.ndarray, salts: np.ndarray, offsets: np.ndarray,
                  starts: np.ndarray) -> TrieArrays:
    """Build the preorder trie of ``len(offsets) - 1`` sequences. All inputs int64, see module doc."""
    parent, token, salt, creation_of_token = _insert_all(tokens, salts, offsets, starts)
    pre, subtree_end = _preorder(parent)
    order = np.empty(len(pre), dtype=np.int64)
    order[pre] = np.arange(len(pre), dtype=np.int64)  # preorder position -> creation index
    parent = np.asarray(parent, dtype=np.int64)
    pre_parent = np.where(parent[order] >= 0, pre[np.maximum(parent[order], 0)], -1)
    depth = _depths(pre_parent)
    seq_nodes = pre[np.asarray(creation_of_token, dtype=np.int64)] if len(creation_of_token) else \
        np.zeros(0, dtype=np.int64)
    return TrieArrays(
        token=np.asarray(token, dtype=np.int64)[order], salt=np.asarray(salt, dtype=np.int64)[order],
        parent=pre_parent.astype(np.int64), depth=depth, subtree_end=subtree_end[order],
        seq_nodes=seq_nodes.astype(np.int64))


def _insert_all(tokens, salts, offsets, starts):
    """Step 1: walk/extend the trie for every sequence; returns creation-ordered node arrays."""
    children: dict[tuple[int, int, int], int] = {}
    parent: list[int] = []
    token: list[int] = []
    salt: list[int] = []
    node_of_token: list[int] = [0] * len(tokens)
    end_node: list[int] = []
    for i in range(len(offsets) - 1):
        node = -1 if starts[i] < 0 else end_node[starts[i]]
        for p in range(int(offsets[i]), int(offsets[i + 1])):
            key = (node, int(tokens[p]), int(salts[p]))
            child = children.get(key)
            if child is None:
                child = len(parent)
                children[key] = child
                parent.append(node)
                token.append(key[1])
                salt.append(key[2])
            node_of_token[p] = node = child
        end_node.append(node)
    return parent, token, salt, node_of_token


def _preorder(parent: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Step 2: preorder index and exclusive subtree end for each creation-ordered node.

    Children are created after their parent, so a reverse sweep gives subtree sizes and a forward sweep
    places each child right after its earlier siblings' subtrees.
    """
    n = len(parent)
    size = [1] * n
    for c in range(n - 1, -1, -1):
        if parent[c] >= 0:
            size[parent[c]] += size[c]
    pre = [0] * n
    next_free = [0] * n  # next preorder slot inside each node's subtree
    next_root = 0
    for c in range(n):
        p = parent[c]
        if p < 0:
            pre[c], next_root = next_root, next_root + size[c]
        else:
            pre[c] = next_free[p]
        next_free[c] = pre[c] + 1
        if p >= 0:
            next_free[p] += size[c]
    pre_arr = np.asarray(pre, dtype=np.int64)
    return pre_arr, pre_arr + np.asarray(size, dtype=np.int64)


def _depths(pre_parent: np.ndarray) -> np.ndarray:
    """Depth of each preorder node; a parent always precedes its children in preorder."""
    depth = np.zeros(len(pre_parent), dtype=np.int64)
    for i, p in enumerate(pre_parent.tolist()):
        if p >= 0:
            depth[i] = depth[p] + 1
    return depth
