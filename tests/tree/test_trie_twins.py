"""The C++ trie and its Python twin give identical output, and that output is a correct trie."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sport_fast.tree.trie import build_trie, native_available

needs_native = pytest.mark.skipif(not native_available(), reason="sport_fast._C was not built")


@st.composite
def sequence_sets(draw):
    """Sequences over a tiny alphabet (so prefixes collide), each below the root or an earlier one."""
    n = draw(st.integers(1, 12))
    seqs, starts, salts = [], [], []
    for i in range(n):
        seq = draw(st.lists(st.integers(0, 3), min_size=0, max_size=8))
        seqs.append(seq)
        salts.append([draw(st.sampled_from([0, 0, 0, 7])) for _ in seq])
        starts.append(draw(st.integers(-1, i - 1)) if i else -1)
    return seqs, salts, starts


def flat(seqs, salts, starts):
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    tokens = np.array([t for s in seqs for t in s], dtype=np.int64)
    salt = np.array([t for s in salts for t in s], dtype=np.int64)
    return tokens, salt, offsets, np.array(starts, dtype=np.int64)


@needs_native
@settings(max_examples=300, deadline=None)
@given(sequence_sets())
def test_cpp_and_python_twins_are_identical(data):
    args = flat(*data)
    assert build_trie(*args, impl="cpp") == build_trie(*args, impl="python")


@settings(max_examples=200, deadline=None)
@given(sequence_sets(), st.sampled_from(["python", "cpp"] if native_available() else ["python"]))
def test_trie_is_a_correct_preorder_trie(data, impl):
    seqs, salts, starts = data
    trie = build_trie(*flat(seqs, salts, starts), impl=impl)
    n = len(trie.token)
    # every node's parent precedes it; depth = parent's depth + 1; subtree intervals nest
    for i in range(n):
        p = trie.parent[i]
        assert p < i, f"node {i}: parent {p} does not precede it"
        assert trie.depth[i] == (0 if p < 0 else trie.depth[p] + 1), f"node {i}: wrong depth"
        if p >= 0:
            assert p < i < trie.subtree_end[p] and trie.subtree_end[i] <= trie.subtree_end[p]
    # no two siblings share (token, salt): every shared prefix is stored once
    keys = list(zip(trie.parent.tolist(), trie.token.tolist(), trie.salt.tolist()))
    assert len(set(keys)) == n, "duplicate sibling: a prefix was stored twice"
    # every input token maps to a node holding it, chained through parents from the sequence's start
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    end_node = []
    for i, seq in enumerate(seqs):
        prev = -1 if starts[i] < 0 else end_node[starts[i]]
        for j, tok in enumerate(seq):
            node = trie.seq_nodes[offsets[i] + j]
            assert trie.token[node] == tok and trie.salt[node] == salts[i][j]
            assert trie.parent[node] == prev, f"seq {i} token {j}: not a child of the previous token's node"
            prev = node
        end_node.append(prev)


def test_sharing_counts_on_a_known_example():
    # two candidates below one context, one of which extends the other's first token
    trie = build_trie(*flat([[1, 2, 3], [4, 5], [4, 6]], [[0] * 3, [0] * 2, [0] * 2], [-1, 0, 0]))
    assert trie.token.tolist() == [1, 2, 3, 4, 5, 6]
    assert trie.parent.tolist() == [-1, 0, 1, 2, 3, 3]
    assert trie.subtree_end.tolist() == [6, 6, 6, 6, 5, 6]


def test_salt_keeps_equal_tokens_apart():
    trie = build_trie(*flat([[9, 9], [9, 9]], [[1, 1], [2, 2]], [-1, -1]))
    assert len(trie.token) == 4


@pytest.mark.parametrize("impl", ["python", pytest.param("cpp", marks=needs_native)])
def test_bad_input_is_refused(impl):
    with pytest.raises(ValueError, match="starts"):
        build_trie(np.array([1, 2]), np.zeros(2), np.array([0, 1, 2]), np.array([-1, 1]), impl=impl)
    with pytest.raises(ValueError, match="offsets"):
        build_trie(np.array([1, 2]), np.zeros(2), np.array([0, 3]), np.array([-1]), impl=impl)


def test_unknown_impl_is_refused():
    with pytest.raises(ValueError, match="impl"):
        build_trie(np.array([1]), np.zeros(1), np.array([0, 1]), np.array([-1]), impl="rust")
