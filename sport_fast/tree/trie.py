"""Trie building by the C++ extension ``sport_fast._C`` or its identical Python twin (``trie_py``).

Which one runs is decided in ``sport_fast.backends.trie_impl`` ("auto": C++ when it was built, the
``SPORT_TRIE_IMPL`` variable first); falling back to Python is announced there, once, with what it costs.
"""
from __future__ import annotations

import numpy as np

from sport_fast import backends
from sport_fast.tree.trie_py import build_trie_py
from sport_fast.tree.trie_types import TrieArrays


def native_available() -> bool:
    """True when the C++ extension was built and imported."""
    return backends.NATIVE_TRIE is not None


def build_trie(tokens, salts, offsets, starts, impl: str = "auto") -> TrieArrays:
    """Preorder token trie of the sequences ``tokens[offsets[i]:offsets[i+1]]`` (see ``trie_py``)."""
    arrays = [np.ascontiguousarray(a, dtype=np.int64) for a in (tokens, salts, offsets, starts)]
    _check_inputs(*arrays)
    if backends.trie_impl(impl) == "cpp":
        return TrieArrays(*backends.NATIVE_TRIE.build_trie(*arrays))
    return build_trie_py(*arrays)


def _check_inputs(tokens, salts, offsets, starts) -> None:
    if len(offsets) != len(starts) + 1 or len(salts) != len(tokens):
        raise ValueError("build_trie: need len(offsets) == len(starts) + 1 and len(salts) == len(tokens)")
    if offsets[0] != 0 or offsets[-1] != len(tokens) or np.any(np.diff(offsets) < 0):
        raise ValueError("build_trie: offsets must rise from 0 to len(tokens)")
    if np.any(starts >= np.arange(len(starts))):
        raise ValueError("build_trie: starts[i] must be -1 or name an earlier sequence")
