"""The work every rank does, and how rank 0 shares it out.

Rank 0 leads (``train.py``): at each phase that every rank takes part in, it sends the work (``share``) over
the control group, does its own share, and gathers every rank's result. The others (``follow``) build what
they need once (``setup.build_rank``: the policy, its sampler or servers, the judge, the sandbox) and then do
each piece of work rank 0 sends, until it sends None:

    explore  its share of the round's lockstep batches, into the round's batch files (``run.explore``)
    eval     its share of the held-out batches; the outcomes go back to rank 0, which reports them in task order
    train    step-DPO on the round's store (DeepSpeed: every rank steps together)
    weights  a checkpoint to resume from (a resumed run: every rank samples with the same weights)

A rank's failure inside a piece of work comes back as its result, so that every rank still reaches the
gather; rank 0 then raises it, naming the rank.
"""
from __future__ import annotations

import traceback
from pathlib import Path


def share(run, work: dict, progress=None) -> list:
    """Rank 0: ``work`` done by every rank, each its share; every rank's result, in rank order."""
    if run.parallel is not None:
        run.parallel.send(work)
    mine = perform(run, work, progress)
    results = run.parallel.gather(mine) if run.parallel is not None else [mine]
    failed = [r for r in results if isinstance(r, dict) and r.get("error")]
    if failed:
        raise RuntimeError("; ".join(f"rank {r['rank']}: {r['error']}" for r in failed))
    return results


def perform(run, work: dict, progress=None):
    """This rank's share of ``work`` (explore or eval). With several ranks an error is returned, not raised."""
    from sport_fast.run.policy import judge_uses
    try:
        run.sampler.set_version(work["version"])  # the weights this work samples with (published by rank 0)
        judge_uses(run, work["version"])
        return SHARES[work["kind"]](run, work, progress)
    except Exception as err:  # noqa: BLE001 - reported to rank 0, which raises it
        if run.parallel is None:
            raise
        traceback.print_exc()  # the whole story stays in this rank's log
        return {"rank": run.rank, "error": f"{type(err).__name__}: {err}"}


def explore_work(run, work: dict, progress=None) -> dict:
    from sport_fast.judge.step_judge import StepJudge
    from sport_fast.run.explore import explore_share
    cfg, rdir = run.cfg, Path(work["dir"])
    judge = StepJudge(run.judge_backend, cfg.judge, seed=work["seed"])
    agent = make_agent(run, cfg.explore, work["seed"], select=judge, selection_name="judge")
    return explore_share(work["tasks"], agent, rdir / "explore", rdir / "trajectories.jsonl", batch=cfg.explore.batch,
                         rank=run.rank, world=run.world, seed=work["seed"], progress=progress)


def eval_work(run, work: dict, progress=None) -> dict:
    """This rank's held-out outcomes as (task index, outcome): rank 0 puts them back in task order."""
    from sport_fast.agent.agent import lockstep_batches
    from sport_fast.agent.evaluation import run_tasks
    from sport_fast.run.explore import assign
    cfg = run.cfg
    chunks = lockstep_batches(range(len(work["tasks"])), cfg.eval.batch)
    mine = [chunks[b] for b in assign(len(chunks), run.rank, run.world, work["seed"])]
    agent = make_agent(run, cfg.eval, work["seed"])
    tick = (lambda i, n, o: progress.update(1)) if progress is not None else None
    results = run_tasks([[work["tasks"][i] for i in chunk] for chunk in mine], agent, tick)
    indices = [i for chunk in mine for i in chunk]
    return {"rank": run.rank, "outcomes": [(i, outcome) for i, (outcome, _) in zip(indices, results)],
            "selection": agent.selection_name}


SHARES = {"explore": explore_work, "eval": eval_work}


def make_agent(run, section, seed: int, **selection):
    """The agent acting as ``section`` says (the explore and eval sections are ``AgentConfig``s); sandbox
    workers and batches in flight from the explore section."""
    from sport_fast.agent.agent import Agent
    return Agent(run.sampler, run.chat, run.sandbox, run.tools, section, vision=run.vision, seed=seed,
                 workers=run.cfg.explore.sandbox_workers, in_flight=run.cfg.explore.batches_in_flight,
                 tool_style=run.cfg.tools.style, **selection)


def follow(cfg, parallel) -> int:
    """A rank other than 0: build what it needs, then do the work rank 0 sends until it sends None."""
    import torch

    from sport_fast.run.setup import agreed, build_rank
    torch.manual_seed(cfg.seed)
    run = agreed(parallel, lambda: build_rank(cfg, parallel))
    try:
        work_loop(run)
    finally:
        run.stop_judge()
    return 0


def work_loop(run) -> None:
    """Do each piece of work rank 0 sends (``run``: this rank's ``RunParts``) until it sends None."""
    parallel = run.parallel
    while (work := parallel.receive()) is not None:
        if work["kind"] in SHARES:
            parallel.gather(perform(run, work))
        elif work["kind"] == "train":
            _train(run, work)
        elif work["kind"] == "weights":
            _load(run, work["checkpoint"])
        else:
            raise RuntimeError(f"rank {parallel.rank}: unknown work {work['kind']!r}")


def _train(run, work: dict) -> None:
    """Train on the round's store with the other ranks (DeepSpeed broadcasts rank 0's weights at the start)."""
    from sport_fast.data.store import StepStore
    from sport_fast.dpo.trainer import train_round
    store = StepStore(work["store"])
    images = store.image_inputs(run.processor) if run.processor is not None else None
    train_round(run.model, list(store), run.cfg.train, work["seed"], parallel=run.parallel, images=images,
                backends=run.backends)


def _load(run, checkpoint: str) -> None:
    from sport_fast.model.weights import load_trainable_state
    from sport_fast.run.run_dir import read_checkpoint
    load_trainable_state(run.model, read_checkpoint(checkpoint))
