"""The phases of a round, as ``train.py`` calls them one after another. Each phase is recorded in the run's
manifest once everything it produced is on disk, and is skipped when a resumed run finds it done.

    tasks      the round's tasks: a rotation through the training tasks, or synthesised
    explore    the agent (K candidates per step, sandboxed, judged) on them; step groups into the store
    reference  reference log-prob sums, once per group, into the store
    train      step-DPO epochs on tree-packed batches, then an atomic checkpoint
    eval       held-out tasks, K=1, before the first round and after each
"""
from __future__ import annotations

import time
import zlib
from pathlib import Path

from tqdm import tqdm

from sport_fast.run.crash_points import crash_point


def round_seed(seed: int, round_: int) -> int:
    return zlib.crc32(f"{seed}:round:{round_}".encode())


def resume_weights(run) -> None:
    """A resumed run starts from the last round whose training is done, on every rank; that round's weights
    are published (version = rounds trained) to what exploration samples from."""
    from sport_fast.model.weights import load_trainable_state
    from sport_fast.run.policy import publish
    done = [r for r in range(run.cfg.rounds) if run.dir.done(r, "train")]
    if done:
        load_trainable_state(run.model, run.dir.load_checkpoint(done[-1]))
        if run.parallel is not None:
            run.parallel.send({"kind": "weights", "checkpoint": str(run.dir.checkpoint_dir(done[-1]))})
        publish(run, done[-1] + 1)
        print(f"  resumed weights from {run.dir.checkpoint_dir(done[-1])}", flush=True)


def round_tasks(run, r: int, rdir: Path) -> list:
    cfg = run.cfg
    if cfg.tasks.source != "synth":
        from sport_fast.run.task_sets import rotation
        from sport_fast.run.warm_start import undemonstrated
        return rotation(undemonstrated(run.tasks.train, cfg.sft), cfg.tasks.per_round, r)
    from sport_fast.llm.synthesis import SynthConfig, load_seeds, suite_seeds, synthesize
    from sport_fast.tasks.task import load_tasks
    path = rdir / "tasks.jsonl"
    if not path.exists():
        seeds = load_seeds(cfg.tasks.seeds) if cfg.tasks.seeds else suite_seeds(rdir / "seed_files", cfg.seed + r)
        synthesize(seeds[: cfg.tasks.per_round], run.judge_backend, run.tools, path,
                   SynthConfig(queries_per_seed=cfg.tasks.synth_per_seed, seed=cfg.seed * 1000 + r))
    return load_tasks(path)[: cfg.tasks.per_round] if path.stat().st_size else []


def explore_round(run, r: int, rdir: Path, tasks: list, seed: int):
    """The round's store, explored by every rank (each its share of the lockstep batches) and merged in task
    order by this one (resuming a partly explored round where it stopped)."""
    from sport_fast.data.store import StepStore
    from sport_fast.run.durable import repair_torn_tail
    from sport_fast.run.explore import merge_round, share_size
    from sport_fast.run.metrics import cache_reuse
    from sport_fast.run.work import share
    store, cfg, path = StepStore(rdir / "store"), run.cfg, rdir / "trajectories.jsonl"
    if not run.dir.done(r, "explore"):
        if path.exists():
            repair_torn_tail(path)  # before any rank reads it
        t0 = time.perf_counter()
        work = {"kind": "explore", "round": r, "dir": str(rdir), "tasks": tasks, "seed": seed, "version": r}
        mine = share_size(tasks, cfg.explore.batch, 0, run.world, seed)
        with tqdm(total=mine, desc=f"round {r} explore ({mine} of {len(tasks)} tasks here)", leave=False) as bar:
            ranks = share(run, work, progress=bar)
        summary = merge_round(tasks, rdir / "explore", store, path, rule=cfg.judge.rule,
                              bleu_threshold=cfg.judge.bleu_threshold, round_=r)
        summary.update(cache_reuse=cache_reuse(path), weight_version=r, ranks=ranks,
                       wall_s=round(time.perf_counter() - t0, 3))
        run.dir.mark(r, "explore", summary)
    return store


def store_images(run, store):
    """The store's images for the reference and training passes (None for a text-only policy)."""
    return store.image_inputs(run.processor) if run.vision is not None else None


def reference_round(run, r: int, store, groups: list, images) -> None:
    from sport_fast.dpo.reference_logps import compute_ref_logps
    if run.dir.done(r, "reference"):
        return
    t0, b = time.perf_counter(), run.backends
    n = compute_ref_logps(reference_model(run.cfg, r, run.model, run.frozen, load=lambda m: _initial(run, m)),
                          groups, store=store, images=images,
                          max_tokens=run.cfg.train.max_tokens_per_batch,
                          adapters=run.cfg.train.reference == "round_start", attn=b.tree_attention,
                          kernel_impl=b.kernel, trie_impl=b.trie)
    crash_point("reference.computed")
    run.dir.mark(r, "reference", {"computed": n, "groups": len(groups), "reference_s": time.perf_counter() - t0})


def reference_model(cfg, r: int, model, frozen: dict, load=None):
    """The model whose log-probs are the reference. LoRA: the policy itself (adapters off for "initial").
    Full fine-tuning: the policy, except for reference=initial after round 0, when the weights have moved:
    then a frozen copy of the initial model, loaded once from ``model.path`` (``load``: the loader), so a
    resumed run gets the same."""
    if cfg.model.lora.enabled or cfg.train.reference != "initial" or r == 0:
        return model
    if "initial" not in frozen:
        from sport_fast.model.loader import load_base
        initial, _ = (load or (lambda section: load_base(section.path, section.dtype)))(cfg.model)
        frozen["initial"] = initial.requires_grad_(False).eval()
        print("  reference: a frozen copy of the initial model (full fine-tuning, train.reference=initial)",
              flush=True)
    return frozen["initial"]


def _initial(run, section):
    """The model the rounds started from: the base, with the warm start's weights if the run had one."""
    from sport_fast.model.loader import load_base
    from sport_fast.run.warm_start import restore
    model, tok = load_base(section.path, section.dtype, section.attn_implementation)
    return restore(model, run.cfg, run.dir.root), tok


def train_round_phase(run, r: int, rdir: Path, groups: list, images, seed: int) -> None:
    """Step-DPO on the round's groups (every rank, when data-parallel), then an atomic checkpoint."""
    from sport_fast.data.step_group import check_weight_versions
    from sport_fast.dpo.trainer import train_round
    from sport_fast.model.weights import trainable_state
    if run.dir.done(r, "train"):
        return
    check_weight_versions(groups, expected=r)  # round r trains on what version r sampled, nothing else
    if run.parallel is not None:
        run.parallel.send({"kind": "train", "store": str(rdir / "store"), "seed": seed})
    shown = round_demonstrations(run)
    with tqdm(desc=f"round {r} train batches", leave=False) as bar:
        steps = iter(range(1 << 30))
        summary = train_round(run.model, groups, run.cfg.train, seed, progress=bar, parallel=run.parallel,
                              images=images, backends=run.backends, demonstrations=shown,
                              log_step=lambda v: run.metrics.log_step(f"train/round_{r}", v, next(steps)))
    run.dir.save_checkpoint(r, trainable_state(run.model), {"round": r, "train": summary})
    crash_point("train.checkpoint_saved")
    run.dir.mark(r, "train", summary)


def round_demonstrations(run) -> list | None:
    """The warm start's demonstrations, trained beside the round's pairs when ``train.demonstration_weight``
    is set (rebuilt as the warm start built them: the reference programs run again, the same tokens)."""
    if run.cfg.train.demonstration_weight <= 0:
        return None
    from sport_fast.run.warm_start import demonstration_groups
    return demonstration_groups(run)


def evaluate_heldout(run, r: int | str, folder: Path) -> None:
    """Held-out AnsAcc / ToolAcc / CodeExec (K=1) into ``folder/eval_<tag>.json`` and the manifest; every rank
    evaluates its share of the batches, the report is over all tasks in their order."""
    from sport_fast.agent.evaluation import summarise
    from sport_fast.run.durable import atomic_write_json
    from sport_fast.run.explore import share_size
    from sport_fast.run.work import share
    cfg = run.cfg
    if not cfg.eval.enabled or run.dir.done(r, "eval"):
        return
    tag = "initial" if r == "initial" else f"round_{r}"
    tasks = run.tasks.heldout[: cfg.eval.n_tasks]
    work = {"kind": "eval", "tasks": tasks, "seed": cfg.seed, "version": 0 if r == "initial" else r + 1}
    mine = share_size(tasks, cfg.eval.batch, 0, run.world, cfg.seed)
    with tqdm(total=mine, desc=f"eval {tag} ({mine} of {len(tasks)} tasks here)", leave=False) as bar:
        ranks = share(run, work, progress=bar)
    outcomes = [o for _, o in sorted((pair for part in ranks for pair in part["outcomes"]), key=lambda p: p[0])]
    report = summarise(outcomes, cfg.eval.k, ranks[0]["selection"])
    if report["steps_timed_out"] or report["steps_killed"]:
        print(f"eval {tag}: {report['steps_timed_out']} chosen steps hit the sandbox's wall-clock limit "
              f"({cfg.explore.sandbox_timeout_s:g}s) and {report['steps_killed']} were killed by a signal; on a "
              f"loaded machine these are its failures, scored here as the agent's", flush=True)
    atomic_write_json(folder / f"eval_{tag}.json", report)
    run.dir.mark(r, "eval", report)
