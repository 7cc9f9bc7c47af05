"""Shared-prefix tree packing: every distinct prefix of a batch of StepGroups is computed once.

All contexts and candidates of the batch go into one token trie (``sport_fast.tree.trie``): the K candidates
of a step share their context, consecutive steps of one trajectory share everything up to where they
differ, and identical candidate prefixes ("Thought: ...") are shared too. The packed sequence is the trie
in DFS preorder; a token attends to exactly its ancestors, so every hidden state equals the one the same
token gets in its own unpacked sequence.

Scoring: candidate token ``t_j`` (trie node ``n_j``) is predicted by the hidden state at its parent
node, so the last context token predicts the first token of every child candidate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from sport_fast.data.step_group import StepGroup
from sport_fast.tree.trie import build_trie


@dataclass
class PackedTree:
    """One packed batch. T = packed tokens, M = scored tokens, S = scored segments (candidates).

    input_ids (T,); position_ids (T,) depth in the tree, or (3, T) M-RoPE positions for Qwen2-VL;
    parent (T,), -1 at roots; subtree_end (T,): node j's subtree is [j, subtree_end[j]).
    score_positions (M,): packed index whose hidden state predicts each scored token;
    score_targets (M,): that token; score_segments (M,): its segment in [0, S).
    segments: (group index, candidate index) of each segment. image_hashes: the image of each packed
    image run (in packed order). unpacked_tokens: what the sequences would take unpacked, one per candidate.
    """
    input_ids: torch.Tensor
    position_ids: torch.Tensor
    parent: torch.Tensor
    subtree_end: torch.Tensor
    score_positions: torch.Tensor
    score_targets: torch.Tensor
    score_segments: torch.Tensor
    segments: list[tuple[int, int]]
    num_groups: int
    image_hashes: list[str] = field(default_factory=list)
    unpacked_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())

    @property
    def num_segments(self) -> int:
        return len(self.segments)

    def to(self, device) -> "PackedTree":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return PackedTree(**moved)


def pack_step_groups(groups: Sequence[StepGroup], *, candidates: str = "all",
                     image_token_id: int | None = None,
                     context_positions: Sequence[np.ndarray] | None = None,
                     impl: str = "auto") -> PackedTree:
    """Pack ``groups`` into one tree (see module docstring).

    candidates: "all" packs every candidate; "paired" only those in a (chosen, rejected) pair, which
    is all training needs. image_token_id: the placeholder token of image patches; runs of it in a
    context are keyed by the group's image hashes so two different images never share nodes.
    context_positions: per group, (3, len(context)) M-RoPE positions (Qwen2-VL); candidate tokens then
    continue at ``max + 1`` on all three axes, as Qwen2-VL does for text.
    """
    if candidates not in ("all", "paired"):
        raise ValueError(f"candidates must be 'all' or 'paired', got {candidates!r}")
    if not groups:
        raise ValueError("pack_step_groups: no groups to pack")
    seqs = _flatten(groups, candidates, image_token_id)
    trie = build_trie(seqs.tokens, seqs.salts, seqs.offsets, seqs.starts, impl=impl)
    score_pos, score_tgt, score_seg = _scoring(trie.seq_nodes, seqs)
    positions = _positions(trie, seqs, groups, context_positions)
    return PackedTree(
        input_ids=torch.from_numpy(trie.token), position_ids=torch.from_numpy(positions),
        parent=torch.from_numpy(trie.parent), subtree_end=torch.from_numpy(trie.subtree_end),
        score_positions=torch.from_numpy(score_pos), score_targets=torch.from_numpy(score_tgt),
        score_segments=torch.from_numpy(score_seg), segments=seqs.segments, num_groups=len(groups),
        image_hashes=_image_runs(trie, image_token_id, seqs.salt_to_hash),
        unpacked_tokens=seqs.unpacked_tokens)


@dataclass
class _Sequences:
    """Flat trie input: sequence i is tokens[offsets[i]:offsets[i+1]], inserted below sequence starts[i]."""
    tokens: np.ndarray
    salts: np.ndarray
    offsets: np.ndarray
    starts: np.ndarray
    context_seq: list[int]          # per group: its context's sequence index
    segment_seq: list[int]          # per segment: its candidate's sequence index
    segments: list[tuple[int, int]]
    salt_to_hash: dict[int, str]
    unpacked_tokens: int


def _flatten(groups, candidates, image_token_id) -> _Sequences:
    parts, salts, starts, context_seq, segment_seq, segments = [], [], [], [], [], []
    salt_to_hash: dict[int, str] = {}
    unpacked = 0
    for g, group in enumerate(groups):
        context = np.asarray(group.context_ids, dtype=np.int64)
        context_seq.append(len(parts))
        parts.append(context)
        salts.append(_image_salts(context, group, image_token_id, salt_to_hash, g))
        starts.append(-1)
        keep = range(group.num_candidates) if candidates == "all" else [group.chosen, *group.rejected]
        for k in keep:
            cand = np.asarray(group.candidate_ids[k], dtype=np.int64)
            segment_seq.append(len(parts))
            segments.append((g, k))
            parts.append(cand)
            salts.append(np.zeros(len(cand), dtype=np.int64))
            starts.append(context_seq[-1])
            unpacked += len(context) + len(cand)
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return _Sequences(np.concatenate(parts), np.concatenate(salts), offsets,
                      np.asarray(starts, dtype=np.int64), context_seq, segment_seq, segments,
                      salt_to_hash, unpacked)


def _image_salts(context, group, image_token_id, salt_to_hash, g) -> np.ndarray:
    """Salt every image-placeholder run with its image's hash, so different images never merge."""
    salts = np.zeros(len(context), dtype=np.int64)
    if image_token_id is None:
        if group.images:
            raise ValueError(f"group {g} has images; pass image_token_id to pack it")
        return salts
    starts, ends = _runs(context == image_token_id)
    if len(starts) != len(group.images):
        raise ValueError(f"group {g}: {len(starts)} image-token runs in the context for "
                         f"{len(group.images)} images")
    for s, e, h in zip(starts, ends, group.images):
        salt = int(h[:15], 16) + 1  # 60 bits of the sha256: never 0, the text salt
        salt_to_hash[salt] = h
        salts[s:e] = salt
    return salts


def _runs(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end indices of the runs of True in a 1-D bool array."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.diff(padded)
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _scoring(seq_nodes: np.ndarray, seqs: _Sequences):
    """Packed predictor index, target token and segment id of every scored candidate token."""
    pos, tgt, seg = [], [], []
    for s, (q, ctx) in enumerate(zip(seqs.segment_seq, (seqs.context_seq[g] for g, _ in seqs.segments))):
        nodes = seq_nodes[seqs.offsets[q]:seqs.offsets[q + 1]]
        last_context_node = seq_nodes[seqs.offsets[ctx + 1] - 1]
        pos.append(np.concatenate([[last_context_node], nodes[:-1]]))
        tgt.append(seqs.tokens[seqs.offsets[q]:seqs.offsets[q + 1]])
        seg.append(np.full(len(nodes), s, dtype=np.int64))
    return (np.concatenate(pos).astype(np.int64), np.concatenate(tgt).astype(np.int64),
            np.concatenate(seg))


def _positions(trie, seqs: _Sequences, groups, context_positions) -> np.ndarray:
    """Depth for 1-D RoPE; for M-RoPE, each sequence's own (3, L) positions scattered onto its nodes."""
    if context_positions is None:
        return trie.depth.copy()
    if len(context_positions) != len(groups):
        raise ValueError(f"context_positions has {len(context_positions)} entries for {len(groups)} groups")
    out = np.full((3, len(trie.token)), -1, dtype=np.int64)
    for g, pos in enumerate(context_positions):
        pos = np.asarray(pos, dtype=np.int64).reshape(3, -1)
        q = seqs.context_seq[g]
        if pos.shape[1] != seqs.offsets[q + 1] - seqs.offsets[q]:
            raise ValueError(f"context_positions[{g}] has {pos.shape[1]} columns for "
                             f"{seqs.offsets[q + 1] - seqs.offsets[q]} context tokens")
        out[:, trie.seq_nodes[seqs.offsets[q]:seqs.offsets[q + 1]]] = pos
    for s, q in enumerate(seqs.segment_seq):
        base = out[:, trie.seq_nodes[seqs.offsets[seqs.context_seq[seqs.segments[s][0]] + 1] - 1]].max()
        nodes = trie.seq_nodes[seqs.offsets[q]:seqs.offsets[q + 1]]
        out[:, nodes] = base + 1 + np.arange(len(nodes))
    return out


def _image_runs(trie, image_token_id, salt_to_hash) -> list[str]:
    """The image of each run of image-placeholder nodes, in packed order."""
    if image_token_id is None:
        return []
    is_image = trie.token == image_token_id
    idx = np.arange(len(is_image))
    continues = np.zeros_like(is_image)  # same image as the previous packed node, directly below it
    continues[1:] = is_image[:-1] & (trie.parent[1:] == idx[:-1]) & (trie.salt[1:] == trie.salt[:-1])
    starts = np.flatnonzero(is_image & ~continues)
    return [salt_to_hash[int(trie.salt[s])] for s in starts]
