"""Concurrent completion requests decoded together, so that a server behind many clients decodes one batch
rather than one request at a time (what continuous batching gives vLLM and SGLang, in its simplest form).

A request joins a queue, then waits for the model. Whoever gets the model takes every request queued by then
and decodes them as one ``sample_many`` call; the others find theirs done when the model is theirs. Requests
for the same prompt (the K candidates of one trajectory step, sent as several requests to keep each
candidate's seed) become one trajectory's rows; different prompts are different trajectories of the batch,
each reading its cached prefix in place. No timer holds a request back: a lone request decodes at once.
A batch's composition depends on arrival times, so rounding may differ from a request decoded alone (as on
any batching engine); each candidate keeps its own seed.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class _Request:
    prompt: tuple
    params: list
    done: threading.Event = field(default_factory=threading.Event)
    cands: list = field(default_factory=list)
    cached: int = 0
    error: BaseException | None = None


class RequestBatcher:
    """``sample(prompt, params) -> (candidates, cached prompt tokens)`` for ``service`` (a ``SamplerService``:
    its ``cache``, ``sampler`` and ``lock``, the lock that gives the model to one batch at a time)."""

    def __init__(self, service):
        self.service, self.queue, self.queue_lock = service, [], threading.Lock()

    def sample(self, prompt: list[int], params: list) -> tuple[list, int]:
        request = _Request(tuple(prompt), list(params))
        with self.queue_lock:
            self.queue.append(request)
        with self.service.lock:
            if not request.done.is_set():
                with self.queue_lock:
                    batch, self.queue = self.queue, []
                self._decode(batch)
        if request.error is not None:
            raise request.error
        return request.cands, request.cached

    def _decode(self, batch: list[_Request]) -> None:
        by_prompt: dict[tuple, list[_Request]] = {}
        for request in batch:
            by_prompt.setdefault(request.prompt, []).append(request)
        try:
            calls, owners = [], []
            for prompt, requests in by_prompt.items():
                traj, cached = self.service.cache.trajectory_for(prompt)
                calls.append((traj, [p for r in requests for p in r.params]))
                owners.append((requests, cached))
            results = self.service.sampler.sample_many(calls)
        except Exception as err:  # noqa: BLE001 - every request of the batch gets the error
            for request in batch:
                request.error = err
                request.done.set()
            return
        for (requests, cached), cands in zip(owners, results):
            start = 0
            for r in requests:
                r.cands, r.cached, start = cands[start:start + len(r.params)], cached, start + len(r.params)
                r.done.set()
