"""Per-candidate sampling parameters and the rule that turns one row of logits into a token.

SPORT samples one candidate at temperature 0.7 and the rest at 1.2, so every candidate carries its own
parameters and its own seeded generator. The log-prob returned with each token is the model's own
(log-softmax of the raw logits), which is what step-DPO scores, not the tempered sampling distribution.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 is greedy; top_k 0 and top_p 1 disable those filters; stop: strings that end a step
    (kept in the output, like SPORT's ``<end_action>``); stop_token_ids: token ids that end it too."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.max_new_tokens < 1 or self.repetition_penalty <= 0:
            raise ValueError("top_k must be >= 0, max_new_tokens >= 1 and repetition_penalty > 0")


@dataclass
class Candidate:
    """A sampled step: token ids verbatim, each token's model log-prob, why it ended, decoded text, and the
    weight version it was sampled with (the number of training rounds behind those weights; None: unknown)."""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" or "length"
    text: str | None = None
    weight_version: int | None = None


def sample_rows(logits: torch.Tensor, params: list[SamplingParams], histories: list,
                generators: list[torch.Generator]) -> tuple[list[int], list[float]]:
    """(tokens, their raw log-probs) for every row of ``logits`` (R, V) under its own ``params``, at once, on
    the logits' device: one uniform draw per row from its own generator, batched filtering and CDF inversion
    (``draw``, row by row), one transfer of the results."""
    raw_logp = torch.log_softmax(logits.float(), dim=-1)
    scores = logits.float().clone()
    for r, p in enumerate(params):
        if p.repetition_penalty != 1.0:
            scores[r] = _penalise_repeats(scores[r], histories[r], p.repetition_penalty)
    temps = torch.tensor([p.temperature if p.temperature > 0 else 1.0 for p in params], device=scores.device)
    scores = scores / temps[:, None]
    for r, p in enumerate(params):
        if p.temperature > 0 and (p.top_k or p.top_p < 1.0):
            scores[r] = _filter_top_k_top_p(scores[r], p.top_k, p.top_p)
    cdf = torch.softmax(scores, dim=-1).double().cumsum(-1)
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators]).to(scores.device)
    drawn = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0].clamp_max(scores.shape[1] - 1)
    greedy = torch.tensor([p.temperature == 0 for p in params], device=scores.device)
    tokens = torch.where(greedy, scores.argmax(-1), drawn)
    logps = raw_logp.gather(1, tokens[:, None])[:, 0]
    return tokens.tolist(), logps.tolist()


def draw(probs: torch.Tensor, generator: torch.Generator) -> int:
    """One token from ``probs`` (V,) by inverting its CDF at a uniform draw from ``generator``: the same
    distribution as ``torch.multinomial``, with one random number instead of V exponentials."""
    cdf = probs.double().cumsum(-1)
    u = torch.rand(1, generator=generator, dtype=torch.float64).to(cdf.device) * cdf[-1]
    return int(torch.searchsorted(cdf, u, right=True).clamp_max(probs.numel() - 1))


def _penalise_repeats(scores: torch.Tensor, history: list[int], penalty: float) -> torch.Tensor:
    """The CTRL rule, as Hugging Face and vLLM apply it: divide positive logits, multiply negative ones."""
    if penalty == 1.0 or not history:
        return scores
    seen = torch.tensor(sorted(set(history)), dtype=torch.long, device=scores.device)
    picked = scores[seen]
    scores[seen] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return scores


def _filter_top_k_top_p(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if 0 < top_k < scores.numel():
        kth = torch.topk(scores, top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_scores, dim=-1) >= top_p  # keep the token that crosses top_p
        scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return scores
