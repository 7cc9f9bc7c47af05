"""Lockstep batches in flight, so that nothing waits on the sandbox or the judge.

A lockstep batch (``Agent.run_many``) alternates two kinds of work: decoding every unfinished trajectory's K
candidates in one forward batch (the model), then running those candidates in the sandbox and judging each
trajectory's step (subprocesses and the judge's endpoint). Run one batch at a time and the model idles
through every sandbox run and judge call. Here up to ``depth`` batches are in flight, each in its own
thread: while batch A's candidates run and are judged, batch B decodes (forwards take the model's
``forward_lock``, one at a time).

What is overlapped never changes what is computed:
- a batch's decode forwards have the same rows as when it runs alone (its membership and its trajectories'
  progress are its own), so the floating-point rounding is the same; batches are never merged;
- each candidate's sampling seed is its own (run, task, step, candidate), and the judge is deterministic
  given its request;
- results come back in the order of the batches, whatever order they finished in.
So the trajectories equal the sequential path's, given the same seeds.

``StepPools`` are the worker pools of one run: sandbox runs (``sandbox_workers`` at a time, shared by every
batch in flight) and the per-trajectory step work (execute that trajectory's candidates, then judge them).
A trajectory's judge call goes out as soon as its own candidates have run; only its own next decode waits
for it (and its batch-mates', since they decode together).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator


class StepPools:
    """``sandbox``: runs candidates (``sandbox_workers`` at a time); ``steps``: one trajectory's step each
    (mostly waiting on the sandbox or the judge, so sized by the trajectories in flight)."""

    def __init__(self, sandbox_workers: int, trajectories: int):
        self.sandbox = ThreadPoolExecutor(max_workers=max(1, sandbox_workers), thread_name_prefix="sandbox")
        self.steps = ThreadPoolExecutor(max_workers=max(1, trajectories), thread_name_prefix="step")

    def __enter__(self) -> "StepPools":
        return self

    def __exit__(self, *exc) -> None:
        self.steps.shutdown(wait=True, cancel_futures=True)
        self.sandbox.shutdown(wait=True, cancel_futures=True)


def in_flight(chunks: list, run_chunk: Callable, depth: int) -> Iterator[tuple[list, object, float]]:
    """(chunk, ``run_chunk(chunk)``, wall seconds per task) for each chunk, in order, with up to ``depth``
    chunks running at once. A chunk's wall time runs from its start to its end, so times of overlapping
    chunks overlap."""
    if depth < 1:
        raise ValueError(f"batches in flight must be >= 1, got {depth}")

    def timed(chunk):
        t0 = time.perf_counter()
        result = run_chunk(chunk)
        return result, (time.perf_counter() - t0) / max(1, len(chunk))

    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="batch") as pool:
        futures = [pool.submit(timed, chunk) for chunk in chunks]  # the pool starts them in order
        try:
            for chunk, future in zip(chunks, futures):
                yield (chunk, *future.result())
        finally:
            for future in futures:
                future.cancel()
