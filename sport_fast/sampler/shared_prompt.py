"""The prompt several trajectories begin with, prefilled once instead of once per trajectory.

Every task of a batch opens with the same system prompt (how to act, the tool list: about 450 of SmolLM2's
480 context tokens on the offline suite), then its own user turn. ``PrefixSampler`` keeps one
``SharedPrompt``: the KV of the longest prefix that the trajectories it last had to prefill all begin with.
A new trajectory that begins with it starts from a copy of that KV and prefills only its own remainder; the
copy is then its own (it grows with the trajectory's steps), so the shared KV is never written after it is
built. The KV belongs to one weight version: after ``load_weights`` it is rebuilt, never reused.
Text-only trajectories only: a vision-language context's images and M-RoPE positions go in one prefill.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

MIN_SHARED = 16  # tokens: below this the copy is not worth it


@dataclass
class SharedPrompt:
    ids: list[int]
    cache: object               # the prefix's KV (batch 1), never written after it is built
    weights_version: int
    unbilled: int = 0           # its prefill's tokens, counted on the first trajectory that uses it

    def serves(self, context_ids: Sequence[int], weights_version: int) -> bool:
        """True if ``context_ids`` begins with this prefix (and has a token of its own) at these weights."""
        n = len(self.ids)
        return (weights_version == self.weights_version and len(context_ids) > n
                and list(context_ids[:n]) == self.ids)

    def copy_cache(self):
        return copy.deepcopy(self.cache)


def shared_length(contexts: Sequence[Sequence[int]]) -> int:
    """Tokens every one of ``contexts`` begins with, leaving each at least one token of its own (the
    trajectory's own prefill gives its next-token logits); 0 for fewer than two contexts."""
    if len(contexts) < 2:
        return 0
    first, n = contexts[0], min(len(c) for c in contexts) - 1
    for other in contexts[1:]:
        i = 0
        while i < n and other[i] == first[i]:
            i += 1
        n = i
    return max(0, n)
