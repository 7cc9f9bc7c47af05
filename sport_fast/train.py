"""``python -m sport_fast.train [--config default] [section.key=value ...]``: SPORT's loop.

First the warm start when ``sft.enabled`` (``run/warm_start.py``: SFT on verified demonstrations). Then each
round, as a flat sequence of phases (``run/phases.py``), each recorded in the run's manifest once done:
tasks -> explore (K candidate steps per step, sandboxed, judged; step groups into the round's store) ->
reference (log-prob sums, once per group) -> train (step-DPO on tree-packed batches, an atomic checkpoint)
-> publish (the new weights to what exploration samples from: the embedded sampler drops every cache
built with the old weights; inference servers hot-load them) -> eval (held-out tasks, K=1; also once
before the first round). Under a launcher (``distributed.deepspeed``) rank 0 runs this loop and every
other rank follows it (``run/work.py``): all explore, evaluate and train, each its share.

Re-running the same command resumes after the last completed phase; seeds come from the run, round, task,
step and candidate, so a resumed run produces the data an uninterrupted one would. Bad input (config typo,
missing model, empty task file, unreachable judge, a run directory holding another run) is one line and
exit 2, and a failed start writes nothing into the run directory.
"""
from __future__ import annotations

import argparse
import sys
import time

from sport_fast.config import ConfigError, dump_config, load_config, reread_config

DEFAULT_RECIPE = "configs/default.yaml"


def main(argv: list[str] | None = None) -> int:
    from sport_fast.data.step_group import WeightVersionError
    from sport_fast.dpo.distributed import DistributedError
    from sport_fast.model.loader import ModelLoadError
    from sport_fast.sampler.engines import EngineError
    from sport_fast.model.weights import WeightsError
    from sport_fast.run.errors import ResumeError, SetupError
    args = _parser().parse_args(argv)
    try:
        return run(load_config(args.config or DEFAULT_RECIPE, args.overrides))
    except (ConfigError, SetupError, ResumeError, ModelLoadError, WeightsError, DistributedError, WeightVersionError,
            EngineError) as err:
        print(f"sport_fast.train: {err}", file=sys.stderr)
        return 2


def run(cfg) -> int:
    parallel = _join(cfg)
    if parallel is not None and not parallel.main:
        from sport_fast.run.work import follow
        return follow(cfg, parallel)
    try:
        return lead(cfg, parallel)
    finally:
        if parallel is not None:
            parallel.send(None)  # "no more work": the other ranks exit (also after an error here)


def lead(cfg, parallel=None) -> int:
    """Rank 0 (or the one process): the whole loop, top to bottom."""
    import torch

    from sport_fast.run import phases
    from sport_fast.run.metrics import initial_row, round_row, summary_line
    from sport_fast.run.policy import publish
    from sport_fast.run.setup import build_run
    from sport_fast.run.warm_start import warm_start
    t_start = time.perf_counter()
    config_yaml = dump_config(cfg)
    print(f"sport_fast.train: run {cfg.name} in {cfg.out_dir}\n{config_yaml}", flush=True)
    torch.manual_seed(cfg.seed)
    run = build_run(cfg, config_yaml, parallel, reread_config)  # tasks, models, judge; only then the run directory
    print(f"  {'resuming after the last completed phase' if run.dir.resumed else 'new run'}\n  {run.sandbox_report}"
          f"\n  {run.backends.describe()}", flush=True)
    warm_start(run)  # the SFT phase (sft.enabled): the rounds start from a policy that can already act
    phases.resume_weights(run)
    phases.evaluate_heldout(run, "initial", run.dir.root)
    if (first := initial_row(run.dir)) is not None:
        run.metrics.log_round(first)
        print(summary_line(first), flush=True)
    before = (run.dir.done("initial", "eval") or {}).get("AnsAcc")
    for r in range(cfg.rounds):
        t_round, rdir, seed = time.perf_counter(), run.dir.round_dir(r), phases.round_seed(cfg.seed, r)
        tasks = phases.round_tasks(run, r, rdir)
        store = phases.explore_round(run, r, rdir, tasks, seed)
        groups, images = list(store), phases.store_images(run, store)
        phases.reference_round(run, r, store, groups, images)
        phases.train_round_phase(run, r, rdir, groups, images, seed)
        publish(run, r + 1)  # weight version r + 1: no cache or server keeps sampling the old weights
        phases.evaluate_heldout(run, r, rdir)
        row = round_row(run.dir, r, before, time.perf_counter() - t_round)
        run.metrics.log_round(row)
        print(summary_line(row), flush=True)
        before = row.get("heldout_AnsAcc", before)
    run.stop_judge()
    print(f"sport_fast.train: {cfg.rounds} round(s) done in {time.perf_counter() - t_start:.0f}s; "
          f"metrics {run.dir.root / 'metrics.jsonl'}, plot {run.dir.root / 'rounds.png'}", flush=True)
    return 0


def _join(cfg):
    """The data-parallel group when ``distributed.deepspeed`` is set (launched by torchrun or deepspeed)."""
    if not cfg.distributed.deepspeed:
        return None
    from sport_fast.config import recipe_path
    from sport_fast.dpo.distributed import DataParallel
    from sport_fast.model.loader import resolve_dtype
    return DataParallel.start(recipe_path(cfg.distributed.deepspeed), cfg.distributed.timeout_min,
                              resolve_dtype(cfg.model.dtype))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sport_fast.train", description=__doc__.splitlines()[0])
    p.add_argument("--config", help=f"a recipe: a YAML path, or one shipped in the package (default: "
                                    f"{DEFAULT_RECIPE}; also qwen2vl-7b-h100, qwen2vl-7b-zero2-8gpu, ...)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.beta=0.05 explore.k=4")
    # the `deepspeed` launcher appends --local_rank=N; the rank is read from LOCAL_RANK, which it also sets
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    sys.exit(main())
