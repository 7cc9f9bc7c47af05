"""Shared-prefix decode attention: K sibling candidates read their trajectory's context KV once, not K times.

While candidates decode, each trajectory's context KV stays where it is (its own batch-1 cache, any length)
and only the new tokens live in a small per-row suffix cache. For the rows of trajectory i (queries
q: K x heads x dim), attention over [context_i ; own suffix] is split in two and recombined exactly:

    out = softmax-weighted sum over the context (one matmul for all K rows and grouped heads, reading the
          context once) merged with the one over the row's own suffix, by their log-sum-exps.

No row ever holds a copy of its context and no padding is needed between trajectories of different
lengths. Decode steps only (one query per row): the mask is implicit (every context and suffix position
is visible). Hugging Face models reach this through a registered attention implementation that
``decode_attention`` switches on for the decoder's attention modules for the duration of a forward.
"""
from __future__ import annotations

import contextlib
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface

NAME = "sport_shared_prefix"


@dataclass
class PrefixPlan:
    """Rows [start, stop) of the decode batch continue the context held by ``cache`` (batch 1)."""
    groups: list[tuple[int, int, object]]


def shared_prefix_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                            sport_prefix: PrefixPlan | None = None, **kwargs):
    """(rows, 1, heads, dim) attention output, the Hugging Face attention-function contract."""
    if sport_prefix is None or query.shape[2] != 1:
        raise RuntimeError("shared_prefix_attention: only for decode steps run by PrefixSampler")
    if getattr(module, "sliding_window", None) or getattr(module, "attn_logit_softcapping", None):
        raise RuntimeError("shared_prefix_attention: sliding-window and soft-capped attention are not supported")
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    scale = scaling if scaling is not None else dim ** -0.5
    q = query.reshape(rows, kv_heads, group, dim)
    out_s, lse_s = attend(q, key, value, scale)                          # (R, Hkv, g, D), (R, Hkv, g)
    out_p, lse_p = [], []
    for start, stop, cache in sport_prefix.groups:
        layer = cache.layers[module.layer_idx]
        k = stop - start
        qi = q[start:stop].permute(1, 0, 2, 3).reshape(kv_heads, k * group, dim)
        o, lse = attend(qi, layer.keys[0], layer.values[0], scale)        # (Hkv, K*g, D), (Hkv, K*g)
        out_p.append(o.view(kv_heads, k, group, dim).permute(1, 0, 2, 3))
        lse_p.append(lse.view(kv_heads, k, group).permute(1, 0, 2))
    out = merge(torch.cat(out_p), torch.cat(lse_p), out_s, lse_s)
    return out.reshape(rows, 1, heads, dim).to(query.dtype), None


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
           mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale) v and the log-sum-exp of the scores, all in float32; ``mask`` (broadcast to
    the scores) is True where a key is hidden. No row may be hidden whole.

    16-bit inputs are multiplied in float32 (not rounded to 16 bits after the product, as a bf16 matmul's
    output would be), as the fused attention of the training forward keeps its scores: the sampler's
    log-probs then follow training's. The cost is the context's keys and values read once more per step,
    small against the weights' reads at decode batch sizes."""
    q32, k32, v32 = q.float(), k.float(), v.float()
    scores = torch.matmul(q32, k32.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse[..., None])
    return torch.matmul(probs, v32), lse


def merge(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor) -> torch.Tensor:
    """Attention over keys A and B together, from attention over each (outputs and log-sum-exps)."""
    lse = torch.logaddexp(lse_a, lse_b)
    return out_a * torch.exp(lse_a - lse)[..., None] + out_b * torch.exp(lse_b - lse)[..., None]


def register() -> None:
    """Make ``shared_prefix_attention`` known to transformers as ``NAME`` (idempotent; decode calls it)."""
    AttentionInterface.register(NAME, shared_prefix_attention)


def attention_configs(model) -> list:
    """The config objects the decoder's attention modules read their implementation from (look up once)."""
    configs = {id(m.config): m.config for m in model.modules()
               if hasattr(m, "layer_idx") and hasattr(m, "config") and hasattr(m.config, "_attn_implementation")}
    return list(configs.values())


@contextmanager
def decode_attention(configs: list, name: str = NAME):
    """Route the attention modules behind ``configs`` (``attention_configs``) through the attention function
    registered as ``name`` inside the block."""
    saved = [cfg._attn_implementation_internal for cfg in configs]
    try:
        for cfg in configs:
            cfg._attn_implementation_internal = name
        yield
    finally:
        for cfg, impl in zip(configs, saved):
            cfg._attn_implementation_internal = impl


def cached_forward_attention(model, configs: list | None = None):
    """The attention a forward over a KV cache (prefill, scoring) runs: the model's own, except that a model
    loaded for FlexAttention (the packed training forward's) runs SDPA there (same arithmetic, and it takes a
    cache and a causal mask as they come)."""
    if getattr(model.config, "_attn_implementation", None) != "flex_attention":
        return contextlib.nullcontext()
    return decode_attention(configs if configs is not None else attention_configs(model), "sdpa")
