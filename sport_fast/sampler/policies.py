"""One trajectory interface over both samplers: ``start(context_ids) -> handle``, ``sample(handle, params)``,
``commit(handle, index, observation_ids)``.

``PrefixSampler`` (embedded) already has it. ``ServerPolicy`` gives it to ``OpenAIStepSampler``: it keeps
the growing context's token ids and sends them whole each step; the server's prefix cache (ours, vLLM's
``--enable-prefix-caching``, SGLang's radix cache) is what makes that cheap.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

from sport_fast.sampler.sampling import Candidate, SamplingParams


@dataclass
class ServerTrajectory:
    context_ids: list[int]
    pending: list[Candidate] = field(default_factory=list)


class ServerPolicy:
    def __init__(self, step_sampler):
        self.step_sampler = step_sampler

    def start(self, context_ids: Sequence[int]) -> ServerTrajectory:
        return ServerTrajectory(context_ids=[int(t) for t in context_ids])

    def sample(self, traj: ServerTrajectory, params: Sequence[SamplingParams]) -> list[Candidate]:
        traj.pending = self.step_sampler.sample(traj.context_ids, params)
        return traj.pending

    def sample_many(self, requests) -> list[list[Candidate]]:
        """One request per trajectory, all in flight together so that the server can batch them."""
        with ThreadPoolExecutor(max_workers=max(1, len(requests))) as pool:
            return list(pool.map(lambda r: self.sample(*r), requests))

    def commit(self, traj: ServerTrajectory, candidate: int, observation_ids: Sequence[int] = ()) -> None:
        if not 0 <= candidate < len(traj.pending):
            raise ValueError(f"commit: no pending candidate {candidate} (have {len(traj.pending)})")
        traj.context_ids = traj.context_ids + traj.pending[candidate].token_ids + [int(t) for t in observation_ids]
        traj.pending = []
