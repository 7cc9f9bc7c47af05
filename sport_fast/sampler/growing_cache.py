"""A KV cache layer that appends in place into spare capacity instead of re-concatenating every token.

Hugging Face's ``DynamicLayer`` does ``torch.cat([cache, new])`` per decoded token: with K candidate rows
over a long prefix that copies the whole cache every step. ``GrowingLayer`` keeps keys and values as views
of a buffer with room for ``RESERVE`` more tokens and writes new positions into it. Any operation that
replaces the tensors (selecting or repeating rows) is noticed by the next ``update``, which copies once
into a fresh buffer. Cropping stays a view, so the next token overwrites the cropped tail.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

RESERVE = 256


class GrowingLayer(DynamicLayer):
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self._key_buf = _append(self.keys, key_states, getattr(self, "_key_buf", None))
        self.values, self._value_buf = _append(self.values, value_states, getattr(self, "_value_buf", None))
        return self.keys, self.values


def _append(current: torch.Tensor, new: torch.Tensor, buf: torch.Tensor | None):
    """(view of the first length + n positions, buffer) after writing ``new`` at the end of ``current``."""
    length = current.shape[-2] if current.numel() else 0
    need = length + new.shape[-2]
    if not _is_head_of(current, buf, new) or need > buf.shape[-2]:
        fresh = new.new_empty(new.shape[0], new.shape[1], need + RESERVE, new.shape[3])
        if length:
            fresh[:, :, :length] = current
        buf = fresh
    buf[:, :, length:need] = new
    return buf[:, :, :need], buf


def _is_head_of(current: torch.Tensor, buf: torch.Tensor | None, new: torch.Tensor) -> bool:
    if buf is None or buf.shape[:2] != new.shape[:2]:
        return False
    return current.numel() == 0 or (current.data_ptr() == buf.data_ptr() and current.stride() == buf.stride())


def growing_cache(config) -> DynamicCache:
    """A DynamicCache for ``config`` whose full-attention layers grow in place."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
