"""The policy behind servers: sampling from OpenAI-compatible servers (this project's ``sport_fast.serve``,
vLLM with ``--enable-prefix-caching``, SGLang), behind the same interface as the embedded ``PrefixSampler``.

``OpenAIStepSampler.sample(prompt_ids, params)`` asks one server for K candidates; ``ServerPolicy`` gives
one or several of them (replicas) the agent's trajectory interface (``start(context_ids) -> handle``,
``sample(handle, params)``, ``sample_many``, ``commit``).

Token-in, token-out: prompts go as token ids and candidates come back as token ids (``token_ids`` in each
choice: this project's server always sends them, vLLM does when asked with ``return_token_ids``). A server
that sends only text is refused rather than silently re-tokenised. Each candidate keeps its own sampling
parameters and seed: candidates that share parameters and have consecutive seeds go in one request with
``n`` (the server gives choice i the seed ``seed + i``), the others in requests of their own, all in flight
at once. Every request has an explicit timeout and a bounded number of retries (the client's defaults can
block for many minutes).

Prefix affinity: a trajectory is pinned to one replica, chosen by a hash of its initial context, so every
step's request (the whole growing context) lands where the earlier steps' KV is cached. Weight versions:
``ServerPolicy.version`` names what it asks for (``names(version)``: the base model, or a hot-loaded
adapter); every candidate carries that version, and a reply for any other model is refused.
"""
from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

from sport_fast.sampler.sampling import Candidate, SamplingParams


class OpenAIStepSampler:
    def __init__(self, base_url: str, model: str, api_key: str = "EMPTY", timeout_s: float = 60.0,
                 max_retries: int = 2):
        from openai import OpenAI
        if timeout_s <= 0 or max_retries < 0:
            raise ValueError("timeout_s must be > 0 and max_retries >= 0")
        self.model, self.base_url = model, base_url
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    def sample(self, prompt_ids: Sequence[int], params: Sequence[SamplingParams],
               model: str | None = None) -> list[Candidate]:
        """One candidate per entry of ``params``, in order; ``model``: the served name to ask (default: the
        sampler's)."""
        runs = seed_runs(params)
        prompt = [int(t) for t in prompt_ids]
        with ThreadPoolExecutor(max_workers=len(runs)) as pool:
            replies = list(pool.map(lambda run: self._request(prompt, params[run[0]], len(run), model or self.model),
                                    runs))
        out: list[Candidate | None] = [None] * len(params)
        for run, cands in zip(runs, replies):
            for i, cand in zip(run, cands):
                out[i] = cand
        return out

    def _request(self, prompt_ids: list[int], p: SamplingParams, n: int, model: str) -> list[Candidate]:
        reply = self.client.completions.create(
            model=model, prompt=prompt_ids, n=n, temperature=p.temperature, top_p=p.top_p,
            max_tokens=p.max_new_tokens, stop=list(p.stop) or None, logprobs=1, seed=p.seed,
            extra_body={"top_k": p.top_k, "repetition_penalty": p.repetition_penalty, "return_token_ids": True})
        served = getattr(reply, "model", None)
        if served not in (None, model) and not model.startswith(f"{served}:"):  # SGLang may name only the base
            raise RuntimeError(f"{self.base_url} answered a request for model {model!r} with {reply.model!r} "
                               f"(other weights than asked for)")
        return [_candidate(choice) for choice in sorted(reply.choices, key=lambda c: c.index)]


def seed_runs(params: Sequence[SamplingParams]) -> list[list[int]]:
    """Candidate indices grouped into requests: equal parameters apart from the seed, and seeds s, s+1, ...
    (or no seeds at all), so that ``n`` with ``seed=s`` gives each candidate exactly its own seed."""
    runs: list[list[int]] = []
    for i, p in enumerate(params):
        for run in runs:
            last = params[run[-1]]
            consecutive = (p.seed is None and last.seed is None) or \
                (p.seed is not None and last.seed is not None and p.seed == last.seed + 1)
            if _group_key(p) == _group_key(last) and consecutive:
                run.append(i)
                break
        else:
            runs.append([i])
    return runs


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
    """A trajectory's growing context as token ids; the server it is pinned to holds its KV."""
    context_ids: list[int]
    replica: int = 0
    pending: list[Candidate] = field(default_factory=list)


class ServerPolicy:
    """The agent's policy interface over one or several ``OpenAIStepSampler`` replicas: the whole context goes
    each step to the trajectory's own replica, whose prefix cache (ours, vLLM's ``--enable-prefix-caching``,
    SGLang's radix cache) makes that cheap."""

    def __init__(self, replicas, names: Callable[[int], str] | None = None):
        """``replicas``: an ``OpenAIStepSampler`` or a list of them; ``names(version)``: the served model name
        of a weight version (default: the sampler's own name, whatever the version)."""
        self.replicas = list(replicas) if isinstance(replicas, (list, tuple)) else [replicas]
        if not self.replicas:
            raise ValueError("ServerPolicy needs at least one server")
        self.names = names or (lambda version: self.replicas[0].model)
        self.version = 0

    def set_version(self, version: int) -> None:
        """Ask for weight version ``version`` from now on (the servers must hold it: ``run.policy.publish``)."""
        self.version = version

    def start(self, context_ids: Sequence[int], images: Sequence = ()) -> RemoteContext:
        if images:
            raise ValueError("a server policy takes text-only contexts (token ids); images are not sent")
        ids = [int(t) for t in context_ids]
        replica = zlib.crc32(",".join(map(str, ids)).encode()) % len(self.replicas)
        return RemoteContext(context_ids=ids, replica=replica)

    def sample(self, traj: RemoteContext, params: Sequence[SamplingParams]) -> list[Candidate]:
        version = self.version
        cands = self.replicas[traj.replica].sample(traj.context_ids, params, model=self.names(version))
        for cand in cands:
            cand.weight_version = version
        traj.pending = cands
        return cands

    def sample_many(self, requests) -> list[list[Candidate]]:
        """One request (or a few) per trajectory, all in flight together so that the servers can batch them."""
        with ThreadPoolExecutor(max_workers=max(1, len(requests))) as pool:
            return list(pool.map(lambda r: self.sample(*r), requests))

    def commit(self, traj: RemoteContext, candidate: int, observation_ids: Sequence[int] = ()) -> None:
        if not 0 <= candidate < len(traj.pending):
            raise ValueError(f"commit: no pending candidate {candidate} (have {len(traj.pending)})")
        traj.context_ids = traj.context_ids + traj.pending[candidate].token_ids + [int(t) for t in observation_ids]
        traj.pending = []
