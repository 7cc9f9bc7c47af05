"""Static-shape decode for the sampler: fixed buffers, so that one decode step can be captured as a CUDA graph.

The dynamic decode (``sampler._decode`` with ``prefix_attention``) reads each trajectory's context KV in place
and grows a suffix cache token by token: shapes change every step. Here, once per ``sample_many`` call:
- the G trajectories' contexts are copied into one pool (G, kv_heads, L_cap, dim) per layer, L_cap rounded up
  to a multiple of ``BUCKET`` and padding masked;
- rows are laid out G x K_max (a trajectory with fewer candidates gets dummy rows, never read);
- every row's new tokens go into a suffix buffer (rows, kv_heads, T_cap, dim) at the index held by a
  one-element tensor, and positions beyond it are masked.
Every tensor a step touches then has a fixed address and shape: on CUDA the step is captured once per call
and replayed per token (``StaticDecoder(graph=True)``); on the CPU the same code runs uncaptured, which is
how the tests check it against the dynamic path.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import DynamicLayer

from sport_fast.sampler.prefix_attention import attend, attention_configs, decode_attention, merge

NAME = "sport_static_prefix"
BUCKET = 256


@dataclass
class StaticPlan:
    keys: list[torch.Tensor]        # per layer (G, kv_heads, L_cap, dim): the contexts
    values: list[torch.Tensor]
    prefix_pad: torch.Tensor        # (G, L_cap) bool: True past a context's length
    step: torch.Tensor              # (1,) long: the suffix index the current token is written to
    groups: int


class StaticSuffixLayer(DynamicLayer):
    """Keys/values of the decoded tokens in a (rows, kv_heads, T_cap, dim) buffer, written at ``step``."""

    def __init__(self, rows: int, kv_heads: int, capacity: int, dim: int, dtype, device, step: torch.Tensor):
        super().__init__()
        self.keys = torch.zeros(rows, kv_heads, capacity, dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.dtype, self.device, self.is_initialized, self.step = dtype, device, True, step

    def update(self, key_states, value_states, *args, **kwargs):
        self.keys.index_copy_(2, self.step, key_states)
        self.values.index_copy_(2, self.step, value_states)
        return self.keys, self.values


def static_prefix_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                            sport_static: StaticPlan | None = None, **kwargs):
    """The shared-prefix decode attention of ``prefix_attention``, over fixed-shape, masked buffers."""
    plan = sport_static
    if plan is None or query.shape[2] != 1:
        raise RuntimeError("static_prefix_attention: only for decode steps run by StaticDecoder")
    rows, heads, _, dim = query.shape
    kv_heads, groups = key.shape[1], plan.groups
    group, k = heads // kv_heads, rows // groups
    scale = scaling if scaling is not None else dim ** -0.5
    q = query.reshape(groups, k, kv_heads, group, dim).permute(0, 2, 1, 3, 4).reshape(groups, kv_heads, k * group, dim)
    out_p, lse_p = attend(q, plan.keys[module.layer_idx], plan.values[module.layer_idx], scale,
                           mask=plan.prefix_pad[:, None, None, :])
    out_p = out_p.view(groups, kv_heads, k, group, dim).permute(0, 2, 1, 3, 4).reshape(rows, kv_heads, group, dim)
    lse_p = lse_p.view(groups, kv_heads, k, group).permute(0, 2, 1, 3).reshape(rows, kv_heads, group)
    future = torch.arange(key.shape[2], device=key.device) > plan.step
    out_s, lse_s = attend(query.reshape(rows, kv_heads, group, dim), key, value, scale, mask=future)
    return merge(out_p, lse_p, out_s, lse_s).reshape(rows, 1, heads, dim).to(query.dtype), None


class StaticDecoder:
    """Decode steps for ``groups`` trajectories (batch-1 caches of any lengths) x ``k`` rows each, for up
    to ``capacity`` new tokens; ``step(feed, positions, index)`` -> (rows, V) logits.

    One decoder serves every ``sample_many`` call of its shape (``shape_of``): ``load`` copies the next call's
    contexts into the same buffers, so a captured graph is captured once and replayed for all of them (no
    synchronize, garbage collection and warm-ups per call). The capture is thread-local, so CUDA work on
    another thread (an in-process judge server) cannot break it, and every graph shares one memory pool."""

    def __init__(self, model, caches: list[DynamicCache], k: int, capacity: int, graph: bool = False, pool=None):
        AttentionInterface.register(NAME, static_prefix_attention)
        self.model, self.graph, self.configs, self.pool = model, None, attention_configs(model), pool
        first = caches[0].layers[0].keys
        device, dtype, kv_heads, dim = first.device, first.dtype, first.shape[1], first.shape[3]
        width, layers = context_width(caches), len(caches[0].layers)
        self.index = torch.zeros(1, dtype=torch.long, device=device)
        shape = (len(caches), kv_heads, width, dim)
        pools = [[first.new_zeros(shape) for _ in range(layers)] for _ in ("keys", "values")]
        self.plan = StaticPlan(*pools, torch.ones(len(caches), width, dtype=torch.bool, device=device), self.index,
                               len(caches))
        rows = len(caches) * k
        self.cache = DynamicCache(config=model.config)
        self.cache.layers = [StaticSuffixLayer(rows, kv_heads, capacity, dim, dtype, device, self.index)
                             for _ in range(layers)]
        self.feed = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.positions = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.want_graph = graph
        self.load(caches)

    def load(self, caches: list[DynamicCache]) -> None:
        """Copy ``caches``' contexts into the pool (in place: the buffers a captured graph reads)."""
        lengths = torch.tensor([c.get_seq_length() for c in caches], device=self.index.device)
        width = self.plan.prefix_pad.shape[1]
        self.plan.prefix_pad.copy_(torch.arange(width, device=lengths.device)[None, :] >= lengths[:, None])
        for i, (keys, values) in enumerate(zip(self.plan.keys, self.plan.values)):
            _fill(keys, [c.layers[i].keys for c in caches])
            _fill(values, [c.layers[i].values for c in caches])

    def step(self, feed: torch.Tensor, positions: torch.Tensor, index: int) -> torch.Tensor:
        self.feed.copy_(feed)
        self.positions.copy_(positions)
        self.index.fill_(index)
        if not self.want_graph:
            return self._forward().float()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.logits.float()

    @torch.no_grad()
    def _forward(self) -> torch.Tensor:
        with decode_attention(self.configs, NAME):
            out = self.model(input_ids=self.feed, past_key_values=self.cache, position_ids=self.positions,
                             use_cache=True, sport_static=self.plan)
        return out.logits[:, -1]

    def _capture(self) -> None:
        """Warm up on a side stream, then capture one step; its writes (suffix slot ``index``) are
        idempotent, so capturing at the current step is harmless."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._forward()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=self.pool, capture_error_mode="thread_local"):
            self.logits = self._forward()


def context_width(caches: list[DynamicCache]) -> int:
    """The pool's context length: the longest context rounded up to ``BUCKET``."""
    return -(-max(c.get_seq_length() for c in caches) // BUCKET) * BUCKET


def shape_of(model, caches: list[DynamicCache], k: int, capacity: int) -> tuple:
    """What a decoder's buffers are sized by: reuse one for every call of the same shape."""
    first = caches[0].layers[0].keys
    return (id(model), len(caches), k, capacity, context_width(caches), first.dtype, str(first.device))


def _fill(pool: torch.Tensor, contexts: list[torch.Tensor]) -> None:
    """Each (1, kv_heads, L, dim) context at the start of its row of ``pool``; the rest is masked."""
    for g, t in enumerate(contexts):
        pool[g, :, :t.shape[2]] = t[0]
