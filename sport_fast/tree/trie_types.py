"""The arrays a trie builder returns; one contract for the C++ extension and its Python twin."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrieArrays:
    """A token forest in DFS preorder (all int64).

    token, salt, parent, depth, subtree_end: one entry per node; parent is -1 for a root and the subtree of
    node j is ``[j, subtree_end[j])``. seq_nodes: for every input token, the node that holds it.
    """
    token: np.ndarray
    salt: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    subtree_end: np.ndarray
    seq_nodes: np.ndarray

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrieArrays):
            return NotImplemented
        return all(np.array_equal(getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__)
