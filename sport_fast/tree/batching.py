"""Which step groups go into one packed batch."""
from __future__ import annotations

from typing import Iterator, Sequence

from sport_fast.data.step_group import StepGroup


def token_budget_batches(groups: Sequence[StepGroup], max_tokens: int) -> Iterator[list[StepGroup]]:
    """Consecutive groups (a trajectory's steps stay together) whose unpacked size fits ``max_tokens``.

    Unpacked size (context + all candidates) bounds the packed size from above; a group larger than the
    budget goes alone.
    """
    batch, used = [], 0
    for g in groups:
        size = len(g.context_ids) + sum(len(c) for c in g.candidate_ids)
        if batch and used + size > max_tokens:
            yield batch
            batch, used = [], 0
        batch.append(g)
        used += size
    if batch:
        yield batch
