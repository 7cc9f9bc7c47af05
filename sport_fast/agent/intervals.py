"""95% bootstrap intervals over tasks: the uncertainty of an evaluation's rates on a finite task set.

Tasks are resampled with replacement (``n`` times, a fixed seed, so a report is reproducible) and the
statistic recomputed each time; the interval is the 2.5th and 97.5th percentiles. ``paired_difference``
resamples the same tasks for two arms evaluated on them, so that the interval of the difference is not
widened by the tasks' own difficulty.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

N_RESAMPLES = 2000


def bootstrap_ci(items: Sequence, statistic: Callable[[list], float | None], n: int = N_RESAMPLES,
                 seed: int = 0) -> list[float] | None:
    """[low, high] of ``statistic`` over resamples of ``items`` (None when there are none)."""
    if not items:
        return None
    rng = random.Random(seed)
    values = sorted(v for v in (statistic([items[rng.randrange(len(items))] for _ in items]) for _ in range(n))
                    if v is not None)
    if not values:
        return None
    return [values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))]]


def mean_or_none(values: Sequence) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def paired_difference(a: Sequence[float], b: Sequence[float], n: int = N_RESAMPLES, seed: int = 0) -> dict:
    """mean(b) - mean(a) over paired per-task values (the same tasks, in the same order), with its interval."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference needs two equally long, non-empty lists, got {len(a)} and {len(b)}")
    pairs = list(zip(a, b))
    diff = lambda sample: sum(y - x for x, y in sample) / len(sample)  # noqa: E731
    return {"difference": diff(pairs), "ci95": bootstrap_ci(pairs, diff, n, seed)}
