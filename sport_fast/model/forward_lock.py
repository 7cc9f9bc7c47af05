"""One lock per model: its forwards run one at a time, whichever thread asks.

The agent keeps several lockstep batches in flight (``agent.pipeline``): one decodes while the others run in
the sandbox and are judged, and a local judge reads the same policy from a worker thread. A forward is not
safe to interleave with another on the same model: the decode switches the attention modules' implementation
on the model's config for its duration (``sampler.prefix_attention.decode_attention``). Everything that runs
the model (the sampler, the guided decoder, the local judge) therefore takes ``forward_lock(model)``; a peft
wrapper and the model under it share one lock (they are the same modules). Reentrant: a sampler call that
holds it may call another that takes it.
"""
from __future__ import annotations

import threading
import weakref

_LOCKS: "weakref.WeakKeyDictionary[object, threading.RLock]" = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def forward_lock(model) -> threading.RLock:
    """The lock of ``model``'s weights (the Hugging Face model under a peft wrapper)."""
    from sport_fast.model.introspect import base_model
    key = base_model(model)
    with _GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = threading.RLock()
        return lock
