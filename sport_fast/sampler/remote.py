"""A step sampler that talks to any OpenAI-compatible server (this project's ``sport_fast.serve``, vLLM with
``--enable-prefix-caching``, SGLang), behind the same ``sample(prompt_ids, params)`` shape as the embedded one.

Token-in, token-out: prompts go as token ids and candidates come back as token ids (``token_ids`` in each
choice: this project's server always sends them, vLLM does when asked with ``return_token_ids``). A server
that sends only text is refused rather than silently re-tokenised. Candidates that share sampling
parameters go in one request with ``n``; the server gives candidate i of a request the seed ``seed + i``.
Every request has an explicit timeout and a bounded number of retries (the client's defaults can block for
many minutes).
"""
from __future__ import annotations

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
