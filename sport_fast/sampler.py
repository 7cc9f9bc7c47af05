"""Prefix-caching step sampler: prefill a trajectory's context once, sample K sibling steps from its KV,
and keep the chosen step's KV so the next step prefills only the observation.

Per step of a trajectory (context of L tokens, K candidates):
1. the context's KV is already cached (batch 1) with the logits of its last token;
2. the cache is copied to K rows in memory (no recomputation) and the K candidates decode in one batch,
   each with its own sampling parameters and seeded generator;
3. ``commit(candidate, observation)`` keeps that candidate's row, crops the rows' unused tail, and
   prefills the candidate's last token plus the observation: 1 + len(observation) tokens.

Token-in, token-out: candidate ids are kept verbatim, so the next context is token-identical to what was
sampled and to what training packs. ``load_weights`` bumps a version; a trajectory whose cache predates
it rebuilds the cache from its own token ids before serving anything: stale KV is never used.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import DynamicCache

from sport_fast.growing_cache import growing_cache
from sport_fast.sampling import Candidate, SamplingParams, sample_token


@dataclass
class StepCounters:
    """Tokens of one step: context length, tokens run through prefill, context tokens served from cache,
    tokens generated (all candidates)."""
    context_tokens: int = 0
    prefilled_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0


@dataclass
class Trajectory:
    """One task's growing context and its cache; create with ``PrefixSampler.start``."""
    context_ids: list[int]
    cache: DynamicCache | None = None
    cached_len: int = 0                 # context tokens whose KV the cache holds (row 0)
    last_logits: torch.Tensor | None = None
    weights_version: int = -1
    pending: list[Candidate] = field(default_factory=list)
    steps: list[StepCounters] = field(default_factory=list)
    prefilled_since_step: int = 0       # tokens prefilled since the last sample (by commit or a rebuild)


class PrefixSampler:
    """Samples K candidate steps per trajectory from one shared prefill (any Hugging Face causal LM)."""

    def __init__(self, model, tokenizer=None, seed: int = 0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.seed = seed
        self.weights_version = 0

    # -- public API ------------------------------------------------------------------------------
    def start(self, context_ids: Sequence[int]) -> Trajectory:
        """A trajectory for ``context_ids``; its prefill happens on first use."""
        if not context_ids:
            raise ValueError("start: context_ids is empty")
        return Trajectory(context_ids=[int(t) for t in context_ids])

    @torch.no_grad()
    def sample(self, traj: Trajectory, params: Sequence[SamplingParams]) -> list[Candidate]:
        """K = len(params) candidates continuing ``traj``'s context, decoded together from its cached KV."""
        if not params:
            raise ValueError("sample: need at least one SamplingParams")
        self._ensure_prefilled(traj)
        counters = StepCounters(context_tokens=len(traj.context_ids), prefilled_tokens=traj.prefilled_since_step,
                                cached_tokens=len(traj.context_ids) - traj.prefilled_since_step)
        traj.prefilled_since_step = 0
        cands = self._decode(traj, params)
        counters.generated_tokens = sum(len(c.token_ids) for c in cands)
        traj.pending, traj.steps = cands, traj.steps + [counters]
        return cands

    @torch.no_grad()
    def commit(self, traj: Trajectory, candidate: int, observation_ids: Sequence[int] = ()) -> None:
        """Continue ``traj`` with pending candidate ``candidate`` and the observation that followed it."""
        if not 0 <= candidate < len(traj.pending):
            raise ValueError(f"commit: no pending candidate {candidate} (have {len(traj.pending)})")
        chosen = traj.pending[candidate].token_ids
        if traj.weights_version == self.weights_version:
            keep = traj.cached_len + len(chosen) - 1  # the last sampled token was never fed
            traj.cache.batch_select_indices(torch.tensor([candidate]))
            traj.cache.crop(keep - traj.cache.get_seq_length())
            traj.cached_len = keep
        traj.context_ids = traj.context_ids + chosen + [int(t) for t in observation_ids]
        traj.pending = []
        if traj.weights_version == self.weights_version:
            traj.last_logits = self._prefill(traj, traj.context_ids[traj.cached_len:])

    @torch.no_grad()
    def fork(self, traj: Trajectory, extra_ids: Sequence[int] = ()) -> Trajectory:
        """A new trajectory whose context is ``traj``'s plus ``extra_ids``: ``traj``'s KV is copied (not
        recomputed) and only ``extra_ids`` are prefilled. ``traj`` itself is left as it was."""
        self._ensure_prefilled(traj)
        child = Trajectory(context_ids=traj.context_ids + [int(t) for t in extra_ids], cache=copy.deepcopy(traj.cache),
                           cached_len=traj.cached_len, last_logits=traj.last_logits,
                           weights_version=traj.weights_version)
        if extra_ids:
            child.last_logits = self._prefill(child, [int(t) for t in extra_ids])
        return child

    def load_weights(self, state_dict: dict | None = None) -> None:
        """After a training step: load ``state_dict`` (full or LoRA, if given) and invalidate every cache."""
        if state_dict is not None:
            missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
            if unexpected:
                raise ValueError(f"load_weights: unknown parameters {unexpected[:3]}")
        self.weights_version += 1

    # -- internals -------------------------------------------------------------------------------
    def _ensure_prefilled(self, traj: Trajectory) -> None:
        if traj.weights_version != self.weights_version:  # new trajectory, or weights changed since
            traj.cache, traj.cached_len = growing_cache(self.model.config), 0
            traj.weights_version = self.weights_version
            traj.prefilled_since_step = 0
            traj.last_logits = self._prefill(traj, traj.context_ids)
        elif traj.cache.get_seq_length() != traj.cached_len or _batch(traj.cache) != 1:
            self._reset_to_prefix(traj)  # sampled again without a commit: back to the context rows

    def _prefill(self, traj: Trajectory, new_ids: list[int]) -> torch.Tensor:
        """Run ``new_ids`` through the model on top of the cache; returns the last position's logits (V,)."""
        device = next(self.model.parameters()).device
        ids = torch.tensor([new_ids], device=device)
        out = self.model(input_ids=ids, past_key_values=traj.cache, use_cache=True, logits_to_keep=1)
        traj.cached_len += len(new_ids)
        traj.prefilled_since_step += len(new_ids)
        return out.logits[0, -1].float()

    def _reset_to_prefix(self, traj: Trajectory) -> None:
        """Back to the context's single row; the candidates' rows are gone, so none can be committed."""
        traj.pending = []
        traj.cache.batch_select_indices(torch.tensor([0]))
        traj.cache.crop(traj.cached_len - traj.cache.get_seq_length())

    def _decode(self, traj: Trajectory, params: Sequence[SamplingParams]) -> list[Candidate]:
        k = len(params)
        gens = [torch.Generator().manual_seed(p.seed if p.seed is not None else self._derived_seed(traj, i))
                for i, p in enumerate(params)]
        cands = [Candidate() for _ in params]
        if k > 1:
            traj.cache.batch_repeat_interleave(k)  # K copies of the prefix KV: a copy, not a prefill
        logits = traj.last_logits.expand(k, -1)
        device = next(self.model.parameters()).device
        for _ in range(max(p.max_new_tokens for p in params)):
            active = [i for i, c in enumerate(cands) if c.finish_reason is None]
            if not active:
                break
            feed = torch.zeros(k, 1, dtype=torch.long, device=device)
            for i in active:
                token, logp = sample_token(logits[i], params[i], traj.context_ids + cands[i].token_ids, gens[i])
                cands[i].token_ids.append(token)
                cands[i].logprobs.append(logp)
                feed[i, 0] = token
                self._maybe_finish(cands[i], params[i])
            if all(c.finish_reason is not None for c in cands):
                break
            logits = self.model(input_ids=feed, past_key_values=traj.cache, use_cache=True).logits[:, -1].float()
        for c in cands:
            c.text = self.tokenizer.decode(c.token_ids) if self.tokenizer is not None else None
        return cands

    def _maybe_finish(self, cand: Candidate, params: SamplingParams) -> None:
        if cand.token_ids[-1] in params.stop_token_ids:
            cand.finish_reason = "stop"
        elif params.stop and self.tokenizer is not None and _ends_with_stop(self.tokenizer, cand, params.stop):
            cand.finish_reason = "stop"
        elif len(cand.token_ids) >= params.max_new_tokens:
            cand.finish_reason = "length"

    def _derived_seed(self, traj: Trajectory, index: int) -> int:
        """Reproducible per (sampler seed, context, step, candidate) when no seed is given."""
        return hash((self.seed, len(traj.context_ids), tuple(traj.context_ids[-8:]), len(traj.steps), index)) % 2**62


def _ends_with_stop(tokenizer, cand: Candidate, stops: tuple[str, ...]) -> bool:
    tail = tokenizer.decode(cand.token_ids[-16:])
    return any(s in tail for s in stops)


def _batch(cache: DynamicCache) -> int:
    layer = cache.layers[0]
    return 0 if layer.keys is None else layer.keys.shape[0]
