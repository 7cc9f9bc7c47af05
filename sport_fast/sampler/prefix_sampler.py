"""Prefix-caching step sampler: prefill a trajectory's context once, sample K sibling steps that all read
that one copy of its KV, and keep the chosen step's KV so the next step prefills only the observation.

Per step of a trajectory (context of L tokens, K candidates):
1. the context's KV is already cached (batch 1) with the logits of its last token;
2. the K candidates decode as K rows of one batch, each with its own sampling parameters and seeded
   generator; every row attends to the shared context KV in place (``prefix_attention``) and keeps only
   its own new tokens in a small suffix cache: the context is neither recomputed nor copied;
3. ``commit(candidate, observation)`` appends that candidate's suffix KV to the context cache and
   prefills the candidate's last token plus the observation: 1 + len(observation) tokens.
``sample_many`` does step 2 for several trajectories at once (contexts of any lengths, no padding): one
forward per decoded token for all their rows. The prompt the trajectories it prefills begin with (the system
prompt and tool list) is prefilled once and copied (``shared_prompt``), not prefilled per trajectory.

Token-in, token-out: candidate ids are kept verbatim, so the next context is token-identical to what was
sampled and to what training packs. ``load_weights`` bumps a version; a trajectory whose cache predates
it rebuilds the cache from its own token ids before serving anything: stale KV is never used.
Every candidate carries ``version``, the weight version the loop published (``load_weights(version=...)``).
The public calls hold the model's ``forward_lock``: threads may call them at once (the agent's batches in
flight), and their forwards run one at a time.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import DynamicCache

from sport_fast.sampler.growing_cache import growing_cache
from sport_fast.sampler.prefix_attention import cached_forward_attention
from sport_fast.backends import decode_mode
from sport_fast.sampler.decode_steps import decode_steps
from sport_fast.sampler.sampling import Candidate, SamplingParams, sample_rows
from sport_fast.sampler.shared_prompt import MIN_SHARED, SharedPrompt, shared_length
from sport_fast.model.forward_lock import forward_lock
from sport_fast.model.vision import check_images, context_positions


@dataclass
class StepCounters:
    """Tokens of one step: context length, tokens run through prefill, context tokens served from cache,
    tokens generated (all candidates)."""
    context_tokens: int = 0
    prefilled_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0


@dataclass
class CachedContext:
    """One task's growing context and its cache; create with ``PrefixSampler.start``."""
    context_ids: list[int]
    cache: DynamicCache | None = None
    cached_len: int = 0                 # context tokens whose KV the cache holds (row 0)
    last_logits: torch.Tensor | None = None
    weights_version: int = -1
    pending: list[Candidate] = field(default_factory=list)
    steps: list[StepCounters] = field(default_factory=list)
    prefilled_since_step: int = 0       # tokens prefilled since the last sample (by commit or a rebuild)
    pending_kv: list | None = None      # per layer (keys, values) of the pending candidates' new tokens
    images: list = field(default_factory=list)   # (pixel_values, grid_thw) per image in the context, in order
    rope_delta: int = 0                 # M-RoPE: position of text token j (after the images) is j + rope_delta


class PrefixSampler:
    """Samples K candidate steps per trajectory from one shared prefill (any Hugging Face causal LM)."""

    def __init__(self, model, tokenizer=None, seed: int = 0, decode: str = "auto", share_prompt: bool = True):
        """``decode``: how decode forwards run (``decode_steps``; ``backends.decode_mode``): auto, dynamic,
        static or graph. ``share_prompt``: prefill the prefix that new trajectories share once (off: each
        prefills its whole context, as a reference)."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.seed = seed
        self.decode = decode
        self.weights_version = 0          # cache epoch: bumped by every load_weights, invalidates caches
        self.version = 0                  # the weight version candidates are labelled with
        self.lock = forward_lock(model)
        self._decoders: dict = {}  # the static decode modes' decoders by shape (a graph captured once each)
        self.share_prompt = share_prompt
        self._prompt: SharedPrompt | None = None

    # -- public API ------------------------------------------------------------------------------
    def start(self, context_ids: Sequence[int], images: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()) -> CachedContext:
        """A trajectory for ``context_ids``; its prefill happens on first use. A vision-language model's
        context holds image placeholder tokens and ``images`` their (pixel_values, grid_thw) from the
        model's image processor, in order: the vision encoder runs once per image, at that prefill."""
        if not context_ids:
            raise ValueError("start: context_ids is empty")
        ids = [int(t) for t in context_ids]
        check_images(self.model.config, ids, images)
        return CachedContext(context_ids=ids, images=list(images))

    @torch.no_grad()
    def sample(self, traj: CachedContext, params: Sequence[SamplingParams]) -> list[Candidate]:
        """K = len(params) candidates continuing ``traj``'s context, decoded together from its cached KV."""
        return self.sample_many([(traj, params)])[0]

    @torch.no_grad()
    def sample_many(self, requests: Sequence[tuple[CachedContext, Sequence[SamplingParams]]]) -> list[list[Candidate]]:
        """Candidates for several trajectories at once: all their rows decode in one batch, one forward per
        token; each trajectory's K rows read its cached context in place (contexts of any lengths, no padding)."""
        if not requests:
            return []
        if any(not params for _, params in requests):
            raise ValueError("sample: need at least one SamplingParams per trajectory")
        if len({id(traj) for traj, _ in requests}) != len(requests):
            raise ValueError("sample_many: a trajectory appears twice")
        with self.lock:
            return self._sample_many(requests)

    def _sample_many(self, requests) -> list[list[Candidate]]:
        prompt = self._shared_prompt([traj for traj, _ in requests])
        for traj, _ in requests:
            self._ensure_prefilled(traj, prompt)
        counters = [StepCounters(context_tokens=len(t.context_ids), prefilled_tokens=t.prefilled_since_step,
                                 cached_tokens=len(t.context_ids) - t.prefilled_since_step) for t, _ in requests]
        results = self._decode([t for t, _ in requests], [list(p) for _, p in requests])
        for (traj, _), count, cands in zip(requests, counters, results):
            traj.prefilled_since_step = 0
            count.generated_tokens = sum(len(c.token_ids) for c in cands)
            traj.pending, traj.steps = cands, traj.steps + [count]
        return results

    @torch.no_grad()
    def commit(self, traj: CachedContext, candidate: int, observation_ids: Sequence[int] = ()) -> None:
        """Continue ``traj`` with pending candidate ``candidate`` and the observation that followed it."""
        if not 0 <= candidate < len(traj.pending):
            raise ValueError(f"commit: no pending candidate {candidate} (have {len(traj.pending)})")
        with self.lock:
            self._commit(traj, candidate, observation_ids)

    def _commit(self, traj: CachedContext, candidate: int, observation_ids: Sequence[int]) -> None:
        chosen = traj.pending[candidate].token_ids
        if traj.weights_version == self.weights_version:
            kept = len(chosen) - 1  # the last sampled token was never fed (or fed after it ended)
            for layer, (keys, values) in zip(traj.cache.layers, traj.pending_kv):
                if kept:
                    layer.update(keys[candidate:candidate + 1, :, :kept], values[candidate:candidate + 1, :, :kept])
            traj.cached_len += kept
        traj.context_ids = traj.context_ids + chosen + [int(t) for t in observation_ids]
        traj.pending, traj.pending_kv = [], None
        if traj.weights_version == self.weights_version:
            traj.last_logits = self._prefill(traj, traj.context_ids[traj.cached_len:])

    @torch.no_grad()
    def fork(self, traj: CachedContext, extra_ids: Sequence[int] = ()) -> CachedContext:
        """A new trajectory whose context is ``traj``'s plus ``extra_ids``: ``traj``'s KV is copied (not
        recomputed) and only ``extra_ids`` are prefilled. ``traj`` itself is left as it was."""
        with self.lock:
            return self._fork(traj, extra_ids)

    def _fork(self, traj: CachedContext, extra_ids: Sequence[int]) -> CachedContext:
        self._ensure_prefilled(traj, self._prompt)
        child = CachedContext(context_ids=traj.context_ids + [int(t) for t in extra_ids], cache=copy.deepcopy(traj.cache),
                           cached_len=traj.cached_len, last_logits=traj.last_logits,
                           weights_version=traj.weights_version, images=traj.images, rope_delta=traj.rope_delta)
        if extra_ids:
            child.last_logits = self._prefill(child, [int(t) for t in extra_ids])
        return child

    def load_weights(self, state_dict: dict | None = None, version: int | None = None) -> None:
        """After a training step: load ``state_dict`` (full or LoRA, if given) and invalidate every cache;
        ``version``: the weight version later candidates carry (unchanged if None)."""
        with self.lock:
            if state_dict is not None:
                missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
                if unexpected:
                    raise ValueError(f"load_weights: unknown parameters {unexpected[:3]}")
            self.weights_version += 1
            self.version = self.version if version is None else version

    def set_version(self, version: int) -> None:
        """Label later candidates with weight version ``version``. A new version means new weights (trained
        in place), so every cache built before it is invalidated."""
        if version != self.version:
            self.load_weights(version=version)

    # -- internals -------------------------------------------------------------------------------
    def _ensure_prefilled(self, traj: CachedContext, prompt: SharedPrompt | None = None) -> None:
        if traj.weights_version != self.weights_version:  # new trajectory, or weights changed since
            traj.weights_version = self.weights_version
            traj.prefilled_since_step = 0
            if prompt is not None and not traj.images and prompt.serves(traj.context_ids, self.weights_version):
                traj.cache, traj.cached_len = prompt.copy_cache(), len(prompt.ids)
                traj.prefilled_since_step, prompt.unbilled = prompt.unbilled, 0
            else:
                traj.cache, traj.cached_len = growing_cache(self.model.config), 0
            traj.last_logits = self._prefill(traj, traj.context_ids[traj.cached_len:])
        traj.pending, traj.pending_kv = [], None  # sampling again without a commit drops the last candidates

    def _shared_prompt(self, trajs: list[CachedContext]) -> SharedPrompt | None:
        """The prefix KV for the text-only trajectories among ``trajs`` that need a prefill: the one kept if
        it serves them all, else a new one for the prefix they share (kept in its place), else None."""
        fresh = [t.context_ids for t in trajs if t.weights_version != self.weights_version and not t.images]
        if not self.share_prompt or not fresh:
            return None
        kept = self._prompt
        if kept is not None and all(kept.serves(ids, self.weights_version) for ids in fresh):
            return kept
        n = shared_length(fresh)
        if n < MIN_SHARED:
            return None
        holder = CachedContext(context_ids=fresh[0][:n], cache=growing_cache(self.model.config))
        self._prefill(holder, holder.context_ids)
        self._prompt = SharedPrompt(holder.context_ids, holder.cache, self.weights_version, unbilled=n)
        return self._prompt

    def _prefill(self, traj: CachedContext, new_ids: list[int]) -> torch.Tensor:
        """Run ``new_ids`` through the model on top of the cache; returns the last position's logits (V,).
        The whole context of an image-bearing trajectory goes with its pixels and M-RoPE positions."""
        device = next(self.model.parameters()).device
        ids = torch.tensor([new_ids], device=device)
        extra = {}
        if traj.cached_len == 0 and traj.images:
            positions, traj.rope_delta = context_positions(self.model, new_ids, traj.images)
            extra = {"pixel_values": torch.cat([p for p, _ in traj.images]).to(device),
                     "image_grid_thw": torch.stack([g for _, g in traj.images]).to(device)}
            positions = positions[:, None, :].to(device)
        else:
            start = traj.cached_len + traj.rope_delta
            positions = torch.arange(start, start + len(new_ids), device=device)[None]
        with cached_forward_attention(self.model):
            out = self.model(input_ids=ids, past_key_values=traj.cache, position_ids=positions, use_cache=True,
                             logits_to_keep=1, **extra)
        traj.cached_len += len(new_ids)
        traj.prefilled_since_step += len(new_ids)
        return out.logits[0, -1].float()

    def _decode(self, trajs: list[CachedContext], params: list[list[SamplingParams]]) -> list[list[Candidate]]:
        rows = [(t, i, p) for t, ps in zip(trajs, params) for i, p in enumerate(ps)]
        device = next(self.model.parameters()).device
        steps = max(p.max_new_tokens for _, _, p in rows)
        backend = decode_steps(decode_mode(self.decode, device), self.model, [t.cache for t in trajs],
                               [len(ps) for ps in params], capacity=steps, decoders=self._decoders)
        positions = torch.tensor([t.cached_len + t.rope_delta for t, _, _ in rows], device=device)[:, None]
        gens = [torch.Generator().manual_seed(p.seed if p.seed is not None else self._derived_seed(t, i))
                for t, i, p in rows]
        cands = [Candidate(weight_version=self.version) for _ in rows]
        logits = torch.stack([t.last_logits for t, _, _ in rows])
        for step in range(steps):
            active = [r for r, c in enumerate(cands) if c.finish_reason is None]
            histories = [rows[r][0].context_ids + cands[r].token_ids if rows[r][2].repetition_penalty != 1.0 else ()
                         for r in active]
            tokens, logps = sample_rows(logits[active], [rows[r][2] for r in active], histories,
                                        [gens[r] for r in active])
            feed = torch.zeros(len(rows), 1, dtype=torch.long)
            for r, token, logp in zip(active, tokens, logps):
                cands[r].token_ids.append(token)
                cands[r].logprobs.append(logp)
                feed[r, 0] = token
                self._maybe_finish(cands[r], rows[r][2])
            feed = feed.to(device)
            if all(c.finish_reason is not None for c in cands):
                break
            logits = backend.step(feed, positions + step, step)
        for c in cands:
            c.text = self.tokenizer.decode(c.token_ids) if self.tokenizer is not None else None
        out, start = [], 0
        for traj, ps, kv in zip(trajs, params, backend.pending_kv()):
            traj.pending_kv = kv
            out.append(cands[start:start + len(ps)])
            start += len(ps)
        return out

    def _maybe_finish(self, cand: Candidate, params: SamplingParams) -> None:
        if cand.token_ids[-1] in params.stop_token_ids:
            cand.finish_reason = "stop"
        elif params.stop and self.tokenizer is not None and _ends_with_stop(self.tokenizer, cand, params.stop):
            cand.finish_reason = "stop"
        elif len(cand.token_ids) >= params.max_new_tokens:
            cand.finish_reason = "length"

    def _derived_seed(self, traj: CachedContext, index: int) -> int:
        """Reproducible per (sampler seed, context, step, candidate) when no seed is given."""
        return hash((self.seed, len(traj.context_ids), tuple(traj.context_ids[-8:]), len(traj.steps), index)) % 2**62


def _ends_with_stop(tokenizer, cand: Candidate, stops: tuple[str, ...]) -> bool:
    tail = tokenizer.decode(cand.token_ids[-16:])
    return any(s in tail for s in stops)
