"""The policy behind a server: sampling from any OpenAI-compatible server (this project's ``sport_fast.serve``,
vLLM with ``--enable-prefix-caching``, SGLang), behind the same interface as the embedded ``PrefixSampler``.

``OpenAIStepSampler.sample(prompt_ids, params)`` asks for K candidates; ``ServerPolicy`` gives it the agent's
trajectory interface (``start(context_ids) -> handle``, ``sample(handle, params)``, ``commit``).

Token-in, token-out: prompts go as token ids and candidates come back as token ids (``token_ids`` in each
choice: this project's server always sends them, vLLM does when asked with ``return_token_ids``). A server
that sends only text is refused rather than silently re-tokenised. Candidates that share sampling
parameters go in one request with ``n``; the server gives candidate i of a request the seed ``seed + i``.
Every request has an explicit timeout and a bounded number of retries (the client's defaults can block for
many minutes).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from typing import Sequence

from sport_fast.sampler.sampling import Candidate, SamplingParams


class OpenAIStepSampler:
    def __init__(self, base_url: str, model: str, api_key: str = "EMPTY", timeout_s: float = 60.0,
                 max_retries: int = 2):
        from openai import OpenAI
        if timeout_s <= 0 or max_retries < 0:
            raise ValueError("timeout_s must be > 0 and max_retries >= 0")
        self.model = model
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    def sample(self, prompt_ids: Sequence[int], params: Sequence[SamplingParams]) -> list[Candidate]:
        """One candidate per entry of ``params``, in order."""
        out: list[Candidate | None] = [None] * len(params)
        order = sorted(range(len(params)), key=lambda i: _group_key(params[i]))
        for _, members in groupby(order, key=lambda i: _group_key(params[i])):
            members = list(members)
            for i, cand in zip(members, self._request(list(prompt_ids), params[members[0]], len(members))):
                out[i] = cand
        return out

    def _request(self, prompt_ids: list[int], p: SamplingParams, n: int) -> list[Candidate]:
        reply = self.client.completions.create(
            model=self.model, prompt=prompt_ids, n=n, temperature=p.temperature, top_p=p.top_p,
            max_tokens=p.max_new_tokens, stop=list(p.stop) or None, logprobs=1, seed=p.seed,
            extra_body={"top_k": p.top_k, "repetition_penalty": p.repetition_penalty, "return_token_ids": True})
        return [_candidate(choice) for choice in sorted(reply.choices, key=lambda c: c.index)]


def _group_key(p: SamplingParams) -> tuple:
    return (p.temperature, p.top_p, p.top_k, p.repetition_penalty, p.max_new_tokens, p.stop, p.stop_token_ids)


def _candidate(choice) -> Candidate:
    extra = choice.model_dump()
    ids = extra.get("token_ids")
    if ids is None:
        raise RuntimeError("the server returned text without token ids; re-tokenising would drift from what was "
                           "sampled (for vLLM, use a version that honours return_token_ids)")
    logprobs = (extra.get("logprobs") or {}).get("token_logprobs") or []
    return Candidate(token_ids=list(ids), logprobs=list(logprobs), finish_reason=choice.finish_reason,
                     text=choice.text)


@dataclass
class RemoteContext:
    """A trajectory's growing context as token ids; the server holds its KV (prefix caching)."""
    context_ids: list[int]
    pending: list[Candidate] = field(default_factory=list)


class ServerPolicy:
    """The agent's policy interface (``start``, ``sample``, ``commit``) over an ``OpenAIStepSampler``: the whole
    context goes each step, and the server's prefix cache (ours, vLLM's ``--enable-prefix-caching``, SGLang's
    radix cache) is what makes that cheap."""

    def __init__(self, step_sampler):
        self.step_sampler = step_sampler

    def start(self, context_ids: Sequence[int]) -> RemoteContext:
        return RemoteContext(context_ids=[int(t) for t in context_ids])

    def sample(self, traj: RemoteContext, params: Sequence[SamplingParams]) -> list[Candidate]:
        traj.pending = self.step_sampler.sample(traj.context_ids, params)
        return traj.pending

    def sample_many(self, requests) -> list[list[Candidate]]:
        """One request per trajectory, all in flight together so that the server can batch them."""
        with ThreadPoolExecutor(max_workers=max(1, len(requests))) as pool:
            return list(pool.map(lambda r: self.sample(*r), requests))

    def commit(self, traj: RemoteContext, candidate: int, observation_ids: Sequence[int] = ()) -> None:
        if not 0 <= candidate < len(traj.pending):
            raise ValueError(f"commit: no pending candidate {candidate} (have {len(traj.pending)})")
        traj.context_ids = traj.context_ids + traj.pending[candidate].token_ids + [int(t) for t in observation_ids]
        traj.pending = []
