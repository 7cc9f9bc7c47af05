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
    """A resumed run starts from the last round whose training is done."""
    from sport_fast.model.weights import load_trainable_state
    done = [r for r in range(run.cfg.rounds) if run.dir.done(r, "train")]
    if done:
        load_trainable_state(run.model, run.dir.load_checkpoint(done[-1]))
        run.sampler.load_weights()
        print(f"  resumed weights from {run.dir.checkpoint_dir(done[-1])}", flush=True)


def round_tasks(run, r: int, rdir: Path) -> list:
    cfg = run.cfg
    if cfg.tasks.source != "synth":
        from sport_fast.run.task_sets import rotation
        return rotation(run.tasks.train, cfg.tasks.per_round, r)
    from sport_fast.llm.synthesis import SynthConfig, load_seeds, suite_seeds, synthesize
    from sport_fast.tasks.task import load_tasks
    path = rdir / "tasks.jsonl"
    if not path.exists():
        seeds = load_seeds(cfg.tasks.seeds) if cfg.tasks.seeds else suite_seeds(rdir / "seed_files", cfg.seed + r)
        synthesize(seeds[: cfg.tasks.per_round], run.judge_backend, run.tools, path,
                   SynthConfig(queries_per_seed=cfg.tasks.synth_per_seed, seed=cfg.seed * 1000 + r))
    return load_tasks(path)[: cfg.tasks.per_round] if path.stat().st_size else []


def explore_round(run, r: int, rdir: Path, tasks: list, seed: int):
    """The round's store, explored (resuming a partly explored round where it stopped)."""
    from sport_fast.data.store import StepStore
    from sport_fast.judge.step_judge import StepJudge
    from sport_fast.run.explore import explore
    from sport_fast.run.metrics import cache_reuse
    store, cfg = StepStore(rdir / "store"), run.cfg
    if not run.dir.done(r, "explore"):
        judge = StepJudge(run.judge_backend, cfg.judge, seed=seed)
        agent = _agent(run, cfg.explore, seed, select=judge, selection_name="judge")
        with tqdm(total=len(tasks), desc=f"round {r} explore", leave=False) as bar:
            summary = explore(tasks, agent, store, rdir / "trajectories.jsonl", rule=cfg.judge.rule,
                              bleu_threshold=cfg.judge.bleu_threshold, round_=r, batch=cfg.explore.batch,
                              progress=bar)
        summary["cache_reuse"] = cache_reuse(rdir / "trajectories.jsonl")
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
    from sport_fast.dpo.trainer import train_round
    from sport_fast.model.weights import trainable_state
    if run.dir.done(r, "train"):
        return
    if run.parallel is not None:
        run.parallel.send({"store": str(rdir / "store"), "seed": seed})
    with tqdm(desc=f"round {r} train batches", leave=False) as bar:
        steps = iter(range(1 << 30))
        summary = train_round(run.model, groups, run.cfg.train, seed, progress=bar, parallel=run.parallel,
                              images=images, backends=run.backends,
                              log_step=lambda v: run.metrics.log_step(f"train/round_{r}", v, next(steps)))
    run.dir.save_checkpoint(r, trainable_state(run.model), {"round": r, "train": summary})
    crash_point("train.checkpoint_saved")
    run.dir.mark(r, "train", summary)


def evaluate_heldout(run, r: int | str, folder: Path) -> None:
    """Held-out AnsAcc / ToolAcc / CodeExec (K=1) into ``folder/eval_<tag>.json`` and the manifest."""
    from sport_fast.agent.evaluation import evaluate
    from sport_fast.run.durable import atomic_write_json
    cfg = run.cfg
    if not cfg.eval.enabled or run.dir.done(r, "eval"):
        return
    tag = "initial" if r == "initial" else f"round_{r}"
    tasks = run.tasks.heldout[: cfg.eval.n_tasks]
    with tqdm(total=len(tasks), desc=f"eval {tag}", leave=False) as bar:
        report = evaluate(tasks, _agent(run, cfg.eval, cfg.seed), None, progress=lambda i, n, o: bar.update(1),
                          batch=cfg.eval.batch)
    atomic_write_json(folder / f"eval_{tag}.json", report)
    run.dir.mark(r, "eval", report)


def _agent(run, section, seed: int, **selection):
    """The agent acting as ``section`` says (the explore and eval sections are ``AgentConfig``s)."""
    from sport_fast.agent.agent import Agent
    return Agent(run.sampler, run.chat, run.sandbox, run.tools, section, vision=run.vision, seed=seed,
                 workers=run.cfg.explore.sandbox_workers, tool_style=run.cfg.tools.style, **selection)
