"""Prefix reuse across requests: an LRU of trajectories keyed by their context token ids.

A new prompt reuses the longest cached context that is a prefix of it: equal -> the same trajectory;
shorter -> a fork that copies its KV and prefills only the rest; none -> a fresh prefill. This is what lets
a SPORT client that resends the growing conversation every step pay only for the new tokens.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from sport_fast.sampler.prefix_sampler import PrefixSampler, CachedContext


class PrefixCache:
    def __init__(self, sampler: PrefixSampler, max_entries: int = 32):
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.sampler = sampler
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, ...], CachedContext] = OrderedDict()

    def trajectory_for(self, prompt_ids: Sequence[int]) -> tuple[CachedContext, int]:
        """(trajectory for ``prompt_ids``, how many of its tokens came from cache)."""
        key = tuple(int(t) for t in prompt_ids)
        best = self._longest_prefix(key)
        stale = best is not None and self._entries[best].weights_version != self.sampler.weights_version
        if best is None:
            traj, cached = self.sampler.start(key), 0
        elif len(best) == len(key):
            traj, cached = self._entries[best], len(key)
        else:
            traj, cached = self.sampler.fork(self._entries[best], key[len(best):]), len(best)
        if stale:
            cached = 0  # its KV predates the weights: it is rebuilt, nothing is served from it
        self._entries[key] = traj
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return traj, cached

    def _longest_prefix(self, key: tuple[int, ...]) -> tuple[int, ...] | None:
        best = None
        for ctx in self._entries:
            if len(ctx) <= len(key) and key[:len(ctx)] == ctx and (best is None or len(ctx) > len(best)):
                best = ctx
        return best
