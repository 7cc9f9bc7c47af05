"""Step-DPO epochs over a round's step groups: tree-packed batches, the fused loss, accumulation, and a
finite check before every optimizer step; in one process, or data-parallel over DeepSpeed ranks.

Each round starts a fresh AdamW from the round's starting weights (SPORT trains each round as its own
DPO run), so a crash inside training resumes by re-running the round's training from its start; with
the same seed, batches come in the same order and the result is the same. Batches hold whole
trajectories' groups up to ``max_tokens_per_batch`` packed tokens (``tree.batching``); their order is
shuffled per epoch, and the next batch is packed in a background thread while the current one trains.
Records stay on the device until an optimizer step (``totals.py``: one host sync per step).
A step whose loss or gradient norm is not finite is refused (gradients dropped), counted and reported.
"""
from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from sport_fast.dpo.module import TreeDPOModule
from sport_fast.dpo.stepper import LocalStepper
from sport_fast.dpo.totals import TrainingTotals
from sport_fast.tree.batching import token_budget_batches
from sport_fast.warmstart.loss import TreeSFTModule

OBJECTIVES = {"dpo": TreeDPOModule, "sft": TreeSFTModule}


def train_round(model, groups: list, cfg, seed: int, progress=None, log_step=None, parallel=None,
                images=None, backends=None, objective: str = "dpo", demonstrations: list | None = None) -> dict:
    """``cfg``: a ``TrainSection``; ``parallel``: a ``distributed.DataParallel`` to train on several ranks
    (each takes every world-th batch of the shuffled order), None for one process; ``images``: an
    ``ImageInputs`` when the groups show images; ``backends``: the run's resolved ``Backends``;
    ``objective``: "dpo" (the groups' preference pairs) or "sft" (every group's candidates, the warm start);
    ``demonstrations``: with "dpo", demonstration groups (nothing rejected) batched and shuffled beside the
    pairs, each adding ``cfg.demonstration_weight`` x its NLL. Returns the round's training summary (over all
    ranks)."""
    trained, paired, shown = round_groups(groups, objective, demonstrations)
    if not trained:
        return {"train_steps": 0, "pairs": 0, "note": "no preference pairs this round: nothing to train"}
    model.train()
    module = OBJECTIVES[objective]
    stepper = parallel.stepper(model, cfg, images, backends, module) if parallel is not None else \
        LocalStepper(model, cfg, images, backends, module)
    rank, world = (parallel.rank, parallel.world) if parallel is not None else (0, 1)
    batches = list(token_budget_batches(trained, cfg.max_tokens_per_batch))
    totals = TrainingTotals()
    schedule = micro_steps(len(batches), cfg.epochs, cfg.grad_accum, random.Random(seed), rank, world)
    with ThreadPoolExecutor(max_workers=1) as packer:
        upcoming = packer.submit(stepper.pack, batches[schedule[0][1]])
        for n, (epoch, b, real, boundary) in enumerate(schedule):
            packed = upcoming.result()
            if n + 1 < len(schedule):  # the next batch packs while this one trains
                upcoming = packer.submit(stepper.pack, batches[schedule[n + 1][1]])
            loss, record = stepper.forward(batches[b], packed)
            if real:
                totals.add(record)
            step = stepper.backward_and_step(loss if real else loss * 0.0, boundary, totals)
            _report(step, epoch, totals, progress, log_step)
    stepper.finish(model)
    model.eval()
    if parallel is not None:
        totals = parallel.merge(totals)
    summary = totals.summary(len(paired), sum(len(g.rejected) for g in paired))
    return {**summary, "demonstration_groups": len(shown)} if shown else summary


def round_groups(groups: list, objective: str, demonstrations: list | None) -> tuple[list, list, list]:
    """(the groups to train, those with pairs, the demonstrations): "dpo" trains the groups with a rejected
    candidate and the demonstrations beside them; "sft" trains every group."""
    if objective != "dpo":
        return list(groups), list(groups), []
    paired, shown = [g for g in groups if g.rejected], list(demonstrations or [])
    if any(g.rejected for g in shown):
        raise ValueError("a demonstration group has rejected candidates: demonstrations are one verified step each")
    return paired + shown, paired, shown


def micro_steps(n_batches: int, epochs: int, grad_accum: int, rng: random.Random, rank: int, world: int) -> list:
    """(epoch, batch, real, optimizer-step boundary) of this rank's micro steps, every epoch in a fresh order."""
    out = []
    for epoch in range(epochs):
        mine = shard(rng.sample(range(n_batches), n_batches), rank, world)
        out += [(epoch, b, real, (i + 1) % grad_accum == 0 or i + 1 == len(mine)) for i, (b, real) in enumerate(mine)]
    return out


def _report(step, epoch: int, totals, progress, log_step) -> None:
    if step is not None and log_step is not None:
        log_step({"epoch": epoch, **step})
    if progress is not None:
        progress.update(1)
        if step is not None:
            progress.set_postfix(loss=f"{totals.last_loss:.4f}")


def shard(order: list[int], rank: int, world: int) -> list[tuple[int, bool]]:
    """Rank ``rank``'s batches of ``order``: every world-th one. Every rank gets the same number of micro
    steps (the collective calls must match); a rank short of one repeats a batch with zero weight."""
    per_rank = -(-len(order) // world)
    mine = order[rank::world]
    return [(b, True) for b in mine] + [(order[0], False)] * (per_rank - len(mine))
