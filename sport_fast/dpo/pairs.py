"""From StepGroups and a packed tree's segment order to the index tensors the loss takes."""
from __future__ import annotations

from typing import Sequence

import torch

from sport_fast.data.step_group import StepGroup


def pair_indices(groups: Sequence[StepGroup], segments: Sequence[tuple[int, int]] | None = None):
    """(chosen, rejected) (P,) int64 tensors of segment indices, one pair per rejected candidate.

    segments: (group, candidate) of each segment, as ``PackedTree.segments``; default: every candidate
    of every group in order (the layout of ``branch_logps`` concatenated).
    """
    index = {seg: i for i, seg in enumerate(segments or _all_segments(groups))}
    chosen, rejected = [], []
    for g, group in enumerate(groups):
        for c, r in group.pairs:
            if (g, c) not in index or (g, r) not in index:
                raise ValueError(f"group {g}: pair ({c}, {r}) has a candidate that was not packed")
            chosen.append(index[(g, c)])
            rejected.append(index[(g, r)])
    return torch.tensor(chosen, dtype=torch.long), torch.tensor(rejected, dtype=torch.long)


def segment_ref_logps(groups: Sequence[StepGroup], segments: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(S,) float32 reference sums in segment order; every group in a pair must have its ref_logps (a
    demonstration's segment, in no pair, takes 0: its reference is never read)."""
    missing = [g for g, _ in segments if groups[g].rejected and groups[g].ref_logps is None]
    if missing:
        raise ValueError(f"group {missing[0]} has no ref_logps; run compute_ref_logps first")
    return torch.tensor([groups[g].ref_logps[k] if groups[g].rejected else 0.0 for g, k in segments],
                        dtype=torch.float32)


def demonstration_segments(groups: Sequence[StepGroup], segments: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(D,) int64 indices of the segments of groups with nothing rejected: demonstrations, trained by NLL."""
    return torch.tensor([i for i, (g, _) in enumerate(segments) if not groups[g].rejected], dtype=torch.long)


def segment_lengths(groups: Sequence[StepGroup], segments: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(S,) token count of each segment's candidate."""
    return torch.tensor([len(groups[g].candidate_ids[k]) for g, k in segments], dtype=torch.long)


def _all_segments(groups):
    return [(g, k) for g, group in enumerate(groups) for k in range(group.num_candidates)]
