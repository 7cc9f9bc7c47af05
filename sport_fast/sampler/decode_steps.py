"""How the sampler runs one decode forward for all rows of a ``sample_many`` call.

- ``dynamic`` (the default): context KV read in place (``prefix_attention``), suffix cache growing per token.
- ``static``: fixed buffers (``static_decode``), the same arithmetic in shapes that never change.
- ``graph``: ``static`` with the step captured once as a CUDA graph and replayed per token (opt-in: it has
  not yet run on a GPU).
Which mode runs is decided in ``sport_fast.backends.decode_mode``.
"""
from __future__ import annotations

import torch

from sport_fast.sampler.growing_cache import growing_cache
from sport_fast.sampler import prefix_attention
from sport_fast.sampler.prefix_attention import PrefixPlan, attention_configs, decode_attention
from sport_fast.sampler.static_decode import StaticDecoder, shape_of

class DynamicSteps:
    def __init__(self, model, caches: list, repeats: list[int]):
        prefix_attention.register()
        self.model, self.suffix, self.configs = model, growing_cache(model.config), attention_configs(model)
        starts = [sum(repeats[:i]) for i in range(len(repeats))]
        self.spans = [(s, s + k) for s, k in zip(starts, repeats)]
        self.plan = PrefixPlan([(s, e, c) for (s, e), c in zip(self.spans, caches)])

    def step(self, feed: torch.Tensor, positions: torch.Tensor, index: int) -> torch.Tensor:
        with decode_attention(self.configs):
            out = self.model(input_ids=feed, past_key_values=self.suffix, position_ids=positions, use_cache=True,
                             sport_prefix=self.plan)
        return out.logits[:, -1].float()

    def pending_kv(self) -> list[list]:
        """Per trajectory, per layer, (keys, values) of its rows' new tokens (None before any forward)."""
        return [[(layer.keys[s:e], layer.values[s:e]) if layer.is_initialized else (None, None)
                 for layer in self.suffix.layers] for s, e in self.spans]


class StaticSteps:
    """Rows of trajectory g live at g * K_max + i of the static layout; missing rows are dummies."""

    def __init__(self, model, caches: list, repeats: list[int], capacity: int, graph: bool, decoders: dict):
        """``decoders``: the sampler's decoders by shape, reused (and their graphs replayed) across calls."""
        self.width = max(repeats)
        key = (*shape_of(model, caches, self.width, capacity), graph)
        if key in decoders:
            decoders[key].load(caches)
        else:
            pool = torch.cuda.graph_pool_handle() if graph else None
            decoders[key] = StaticDecoder(model, caches, self.width, capacity, graph=graph, pool=pool)
        self.decoder = decoders[key]
        device = caches[0].layers[0].keys.device
        self.rows = torch.tensor([g * self.width + i for g, k in enumerate(repeats) for i in range(k)], device=device)
        self.repeats, self.total = repeats, len(caches) * self.width

    def step(self, feed: torch.Tensor, positions: torch.Tensor, index: int) -> torch.Tensor:
        full_feed = feed.new_zeros(self.total, 1).index_copy_(0, self.rows, feed)
        full_pos = positions.new_zeros(self.total, 1).index_copy_(0, self.rows, positions)
        return self.decoder.step(full_feed, full_pos, index)[self.rows]

    def pending_kv(self) -> list[list]:
        """Copies, not views: the decoder's buffers serve the next call of the same shape."""
        rows = [slice(g * self.width, g * self.width + k) for g, k in enumerate(self.repeats)]
        return [[(layer.keys[r].clone(), layer.values[r].clone()) for layer in self.decoder.cache.layers] for r in rows]


def decode_steps(mode: str, model, caches: list, repeats: list[int], capacity: int, decoders: dict | None = None):
    """The decode backend for one ``sample_many`` call (``mode`` already resolved); ``decoders``: where the
    static modes keep their decoders between calls."""
    if mode == "dynamic":
        return DynamicSteps(model, caches, repeats)
    return StaticSteps(model, caches, repeats, capacity, graph=mode == "graph",
                       decoders={} if decoders is None else decoders)

