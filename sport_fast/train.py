"""``python -m sport_fast.train [--config configs/default.yaml] [section.key=value ...]``: SPORT's loop.

Each round, as a flat sequence of phases, each recorded in the run's manifest once done:

    tasks     the round's tasks (a rotation through the suite or a task file; or synthesised)
    explore   K candidate steps per step from the prefix-caching sampler, run in the sandbox, judged;
              step groups appended to the round's store, trajectory by trajectory
    reference reference log-prob sums, once per group, appended to the store
    train     step-DPO epochs on tree-packed batches, then an atomic checkpoint of the weights
    sync      the sampler drops every cache built with the old weights
    eval      held-out tasks, K=1, first step that ran (also once before the first round)

Re-running the same command resumes after the last completed phase (``run_dir.py``); seeds come from
the run, round, task, step and candidate, so a resumed run produces the data an uninterrupted one would.
Bad input (config typo, missing model, empty task file, unreachable judge) is one line and exit 2.
"""
from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

from sport_fast.config import ConfigError, dump_config, load_config
from sport_fast.run.crash_points import crash_point
from sport_fast.run.setup import SetupError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None), args.overrides)
        return run(cfg)
    except (ConfigError, SetupError) as err:
        print(f"sport_fast.train: {err}", file=sys.stderr)
        return 2


def run(cfg) -> int:
    parallel = _join(cfg)
    if parallel is not None and not parallel.main:
        return _follow(cfg, parallel)
    try:
        return _lead(cfg, parallel)
    finally:
        if parallel is not None:
            parallel.send(None)  # "no more work": the other ranks exit (also after an error here)


def _lead(cfg, parallel) -> int:
    import torch
    from tqdm import tqdm

    from sport_fast.run import setup as setup
    from sport_fast.agent.agent import Agent, AgentConfig
    from sport_fast.model.chat_format import ChatFormat
    from sport_fast.run.explore import explore
    from sport_fast.judge.step_judge import JudgeConfig, StepJudge
    from sport_fast.dpo.reference_logps import compute_ref_logps
    from sport_fast.run.run_dir import RunDir
    from sport_fast.run.metrics import RunMetrics, summary_line
    from sport_fast.sampler.prefix_sampler import PrefixSampler
    from sport_fast.sandbox.sandbox import Sandbox, describe_layers
    from sport_fast.data.store import StepStore
    from sport_fast.agent.vision_prompt import VisionPrompt, store_images
    from sport_fast.tools import default_registry
    from sport_fast.dpo.trainer import train_round

    t_start = time.perf_counter()
    root = Path(cfg.out_dir)
    print(f"sport_fast.train: run {cfg.name} in {root}\n{dump_config(cfg)}", flush=True)
    torch.manual_seed(cfg.seed)

    # -- set-up: tasks first (cheap, and the likeliest bad input), then the models; nothing of the run
    # directory is written before all of them are in hand, so a failed start changes nothing there ------
    train_tasks, heldout = setup.load_task_sets(cfg, root)
    model, tok = setup.load_policy(cfg.model)
    processor = setup.load_image_processor(cfg.model, model)
    vision = VisionPrompt.for_model(model, tok, processor)  # None for a text-only policy
    judge_backend, stop_judge = setup.start_judge(cfg.judge, root, policy=(model, tok))
    run_dir = RunDir(root, dump_config(cfg))
    print(f"  {'resuming after the last completed phase' if run_dir.resumed else 'new run'}", flush=True)
    tools = default_registry()
    sandbox = Sandbox(timeout_s=cfg.explore.sandbox_timeout_s, memory_mb=cfg.explore.sandbox_memory_mb, tools=tools)
    print("  " + describe_layers(), flush=True)
    sampler, chat = PrefixSampler(model, tok, seed=cfg.seed), ChatFormat(tok)
    metrics = RunMetrics(run_dir.root)
    frozen: dict = {}  # full fine-tuning with reference=initial: the initial model, loaded when first needed
    _resume_weights(run_dir, cfg, model, sampler, setup)

    def held_out_eval(tag: str, round_dir: Path) -> dict:
        from sport_fast.eval import evaluate
        agent = Agent(sampler, chat, sandbox, tools, AgentConfig(k=cfg.eval.k, max_steps=cfg.eval.max_steps,
                                                                   max_new_tokens=cfg.explore.max_new_tokens,
                                                                   seed=cfg.seed), vision=vision)
        tasks = heldout[: cfg.eval.n_tasks]
        with tqdm(total=len(tasks), desc=f"eval {tag}", leave=False) as bar:
            report = evaluate(tasks, agent, None, progress=lambda i, n, o: bar.update(1), batch=cfg.explore.batch)
        from sport_fast.run.durable import atomic_write_json
        atomic_write_json(round_dir / f"eval_{tag}.json", report)
        return report

    if cfg.eval.enabled and not run_dir.done("initial", "eval"):
        run_dir.mark("initial", "eval", held_out_eval("initial", run_dir.root))
    before = (run_dir.done("initial", "eval") or {}).get("AnsAcc")

    for r in range(cfg.rounds):
        t_round = time.perf_counter()
        rdir = run_dir.round_dir(r)
        round_seed = zlib.crc32(f"{cfg.seed}:round:{r}".encode())

        # tasks
        tasks = _round_tasks(cfg, r, rdir, train_tasks, judge_backend, tools, setup)
        # explore
        store = StepStore(rdir / "store")
        judge = StepJudge(judge_backend, JudgeConfig(two_orders=cfg.judge.two_orders,
                                                     judge_single=cfg.judge.judge_single,
                                                     max_tokens=cfg.judge.max_tokens, seed=round_seed))
        agent = Agent(sampler, chat, sandbox, tools, AgentConfig(
            k=cfg.explore.k, max_steps=cfg.explore.max_steps, max_errors=cfg.explore.max_errors,
            max_new_tokens=cfg.explore.max_new_tokens, first_temperature=cfg.explore.first_temperature,
            other_temperature=cfg.explore.other_temperature, seed=round_seed), select=judge, selection_name="judge",
            vision=vision)
        if not run_dir.done(r, "explore"):
            with tqdm(total=len(tasks), desc=f"round {r} explore", leave=False) as bar:
                summary = explore(tasks, agent, store, rdir / "trajectories.jsonl", rule=cfg.judge.rule,
                                  bleu_threshold=cfg.judge.bleu_threshold, round_=r, batch=cfg.explore.batch,
                                  progress=bar)
            summary["cache_reuse"] = _cache_reuse(rdir / "trajectories.jsonl")
            run_dir.mark(r, "explore", summary)
        groups = list(store)
        images = store_images(store, processor) if vision is not None else None
        # reference
        if not run_dir.done(r, "reference"):
            t0 = time.perf_counter()
            n = compute_ref_logps(_reference_model(cfg, r, model, setup, frozen), groups, store=store, images=images,
                                  max_tokens=cfg.train.max_tokens_per_batch, adapters=cfg.train.reference == "round_start")
            crash_point("reference.computed")
            run_dir.mark(r, "reference", {"computed": n, "groups": len(groups), "reference_s": time.perf_counter() - t0})
        # train (+ checkpoint)
        if not run_dir.done(r, "train"):
            if parallel is not None:
                parallel.send({"store": str(rdir / "store"), "seed": round_seed})
            with tqdm(desc=f"round {r} train batches", leave=False) as bar:
                steps = iter(range(1 << 30))
                summary = train_round(model, groups, cfg.train, round_seed, progress=bar, parallel=parallel,
                                      images=images,
                                      log_step=lambda v: metrics.log_step(f"train/round_{r}", v, next(steps)))
            run_dir.save_checkpoint(r, setup.trainable_state(model), {"round": r, "train": summary})
            crash_point("train.checkpoint_saved")
            run_dir.mark(r, "train", summary)
        # sync
        sampler.load_weights()
        # eval
        if cfg.eval.enabled and not run_dir.done(r, "eval"):
            run_dir.mark(r, "eval", held_out_eval(f"round_{r}", rdir))
        row = _round_row(run_dir, r, before, time.perf_counter() - t_round)
        metrics.log_round(row)
        print(summary_line(row), flush=True)
        before = row.get("heldout_AnsAcc", before)
    stop_judge()
    print(f"sport_fast.train: {cfg.rounds} round(s) done in {time.perf_counter() - t_start:.0f}s; "
          f"metrics {run_dir.root / 'metrics.jsonl'}, plot {run_dir.root / 'rounds.png'}", flush=True)
    return 0


def _join(cfg):
    """The data-parallel group when ``distributed.deepspeed`` is set (launched by torchrun or deepspeed)."""
    if not cfg.distributed.deepspeed:
        return None
    from sport_fast.dpo.distributed import DataParallel, DistributedError
    from sport_fast.run.setup import resolve_dtype
    try:
        return DataParallel.start(cfg.distributed.deepspeed, cfg.distributed.timeout_min,
                                  resolve_dtype(cfg.model.dtype))
    except DistributedError as err:
        raise SetupError(str(err)) from None


def _follow(cfg, parallel) -> int:
    """A rank other than 0: hold the policy, and train on each round's store when rank 0 says so."""
    import torch

    from sport_fast.run import setup as setup
    from sport_fast.data.store import StepStore
    from sport_fast.agent.vision_prompt import store_images
    from sport_fast.dpo.trainer import train_round
    torch.manual_seed(cfg.seed)
    model, _ = setup.load_policy(cfg.model)
    processor = setup.load_image_processor(cfg.model, model)
    if parallel.zero3:  # only the template of each round's partitioned copy: it waits in host memory
        model.to("cpu")
    while (work := parallel.receive()) is not None:  # DeepSpeed broadcasts rank 0's weights at each start
        store = StepStore(work["store"])
        images = store_images(store, processor) if processor is not None else None
        train_round(model, list(store), cfg.train, work["seed"], parallel=parallel, images=images)
    return 0


def _reference_model(cfg, r: int, model, setup, frozen: dict):
    """The model whose log-probs are the reference. LoRA: the policy itself (adapters off for "initial").
    Full fine-tuning: the policy, except for reference=initial after round 0, when the weights have moved:
    then a frozen copy of the initial model, loaded from ``model.path`` once (so a resumed run gets the same)."""
    if cfg.model.lora.enabled or cfg.train.reference != "initial" or r == 0:
        return model
    if "initial" not in frozen:
        initial, _ = setup.load_base(cfg.model)
        frozen["initial"] = initial.requires_grad_(False).eval()
        print("  reference: a frozen copy of the initial model (full fine-tuning, train.reference=initial)",
              flush=True)
    return frozen["initial"]


def _resume_weights(run_dir, cfg, model, sampler, setup) -> None:
    done = [r for r in range(cfg.rounds) if run_dir.done(r, "train")]
    if done:
        setup.load_trainable_state(model, run_dir.load_checkpoint(done[-1]))
        sampler.load_weights()
        print(f"  resumed weights from {run_dir.checkpoint_dir(done[-1])}", flush=True)


def _round_tasks(cfg, r, rdir, train_tasks, judge_backend, tools, setup):
    if cfg.tasks.source != "synth":
        return setup.round_tasks(train_tasks, cfg.tasks.per_round, r)
    from sport_fast.synth import SynthConfig, load_seeds, suite_seeds, synthesize
    from sport_fast.tasks.task import load_tasks
    path = rdir / "tasks.jsonl"
    if not path.exists():
        seeds = load_seeds(cfg.tasks.seeds) if cfg.tasks.seeds else suite_seeds(rdir / "seed_files", cfg.seed + r)
        synthesize(seeds[: cfg.tasks.per_round], judge_backend, tools, path,
                   SynthConfig(queries_per_seed=cfg.tasks.synth_per_seed, seed=cfg.seed * 1000 + r))
    return load_tasks(path)[: cfg.tasks.per_round] if path.stat().st_size else []


def _cache_reuse(path: Path) -> float:
    """Share of context tokens the sampler served from cache rather than prefilling, over the round."""
    from sport_fast.run.durable import read_jsonl
    trajectories = [rec["trajectory"] for _, rec in read_jsonl(path)]
    steps = [s for t in trajectories for s in t["steps"]]
    total = sum(s["context_tokens"] for s in steps)
    prefilled = sum(len(t["context_ids"]) for t in trajectories)
    prefilled += sum(len(s["observation_ids"]) + 1 for s in steps if s["followed"] is not None)
    return max(0.0, 1 - prefilled / total) if total else 0.0


def _round_row(run_dir, r, before, seconds) -> dict:
    explore, train = run_dir.done(r, "explore") or {}, run_dir.done(r, "train") or {}
    evaluation = run_dir.done(r, "eval") or {}
    steps = max(1, explore.get("judge_steps", 0))
    return {"round": r, "tasks": explore.get("tasks"), "steps": explore.get("steps"),
            "pairs": train.get("pairs", 0), "groups": explore.get("groups"),
            "abstentions": explore.get("abstentions"), "abstention_rate": explore.get("abstentions", 0) / steps,
            "disagreement_rate": explore.get("disagreements", 0) / steps, "judge_time_s": explore.get("judge_time_s"),
            "cache_reuse": explore.get("cache_reuse"),
            "explore_tokens_per_s": explore.get("generated_tokens", 0) / max(1e-9, explore.get("explore_s", 0)),
            "explore_s": explore.get("explore_s"), "loss_mean": train.get("loss_mean"),
            "reward_accuracy": train.get("reward_accuracy"), "train_tokens_per_s": train.get("train_tokens_per_s"),
            "train_s": train.get("train_s"), "refused_steps": train.get("refused_steps"),
            "heldout_AnsAcc": evaluation.get("AnsAcc"), "heldout_CodeExec": evaluation.get("CodeExec"),
            "heldout_AnsAcc_before": before, "round_s": round(seconds, 1)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sport_fast.train", description=__doc__.splitlines()[0])
    p.add_argument("--config", help=f"a recipe YAML (default: {DEFAULT_CONFIG.relative_to(DEFAULT_CONFIG.parents[1])})")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.beta=0.05 explore.k=4")
    # the `deepspeed` launcher appends --local_rank=N; the rank is read from LOCAL_RANK, which it also sets
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    sys.exit(main())
