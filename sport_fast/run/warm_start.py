"""The warm start as a phase of the loop (``sft.enabled``): supervised fine-tuning on verified
demonstrations before the first round, recorded in the manifest (round ``sft``) and checkpointed
(``checkpoints/sft``) like every phase, so a resumed run does not redo it.

With LoRA, the warm start's adapters are then merged into the weights and fresh adapters take their place:
the rounds' reference (the adapters off) is then the warm-started model, as SPORT's is the SFT agent, and each
round's checkpoint holds only the new adapters. ``restore`` does the same for a resumed run and for
``eval --checkpoint``.
"""
from __future__ import annotations

import dataclasses
import time

from sport_fast.run.crash_points import crash_point


def warm_start(run) -> None:
    """Train on the demonstrations (unless done), then put the policy in its post-warm-start form."""
    cfg = run.cfg
    if not cfg.sft.enabled:
        return
    run.model = continued(run.model, cfg)
    if not run.dir.done("sft", "train"):
        run.dir.mark("sft", "train", _train(run))
    else:
        from sport_fast.model.weights import load_trainable_state
        load_trainable_state(run.model, run.dir.load_checkpoint("sft"))
    from sport_fast.sampler.prefix_sampler import PrefixSampler
    run.model = after_warm_start(run.model, cfg)
    run.sampler = PrefixSampler(run.model, run.tokenizer, seed=cfg.seed, decode=run.backends.decode)


def _train(run) -> dict:
    from tqdm import tqdm

    from sport_fast.dpo.trainer import train_round
    from sport_fast.model.weights import trainable_state
    t0, groups = time.perf_counter(), demonstration_groups(run)
    section = dataclasses.replace(run.cfg.train, lr=run.cfg.sft.lr, epochs=run.cfg.sft.epochs)
    with tqdm(desc="warm start (sft) batches", leave=False) as bar:
        summary = train_round(run.model, groups, section, run.cfg.seed, progress=bar, backends=run.backends,
                              objective="sft")
    summary = {**summary, "demonstration_groups": len(groups), "sft_s": round(time.perf_counter() - t0, 1)}
    run.dir.save_checkpoint("sft", trainable_state(run.model), {"round": "sft", "train": summary})
    crash_point("sft.checkpoint_saved")
    print(f"warm start: {summary['groups']} steps of demonstrations, loss {summary['loss_first']:.3f} -> "
          f"{summary['loss_last']:.3f}, {summary['sft_s']}s", flush=True)
    return summary


def demonstration_groups(run) -> list:
    """The warm start's step groups: the suite's reference programs (of the chosen families) or a file."""
    from sport_fast.warmstart.demonstrations import conversation_demonstrations, reference_demonstrations
    sft = run.cfg.sft
    if sft.source == "file":
        return [g for trajectory in conversation_demonstrations(sft.file, run.tokenizer) for g in trajectory]
    tasks = chosen_tasks(run.tasks.train, sft.families, sft.n_tasks)
    demos, failed = reference_demonstrations(tasks, run.chat, run.tools, run.sandbox, run.cfg.tools.style,
                                             workers=run.cfg.explore.sandbox_workers)
    if failed:
        print(f"warm start: {len(failed)} reference programs did not reach their answer, left out: {failed}",
              flush=True)
    return [g for demo in demos for g in demo.groups()]


def chosen_tasks(tasks: list, families: str, n_tasks: int) -> list:
    """The training tasks of the named suite families (all when empty), the first ``n_tasks`` (0: all)."""
    wanted = {f.strip() for f in families.split(",") if f.strip()}
    unknown = wanted - {t.source.removeprefix("suite:") for t in tasks}
    if unknown:
        from sport_fast.run.errors import SetupError
        raise SetupError(f"sft.families names families with no training task: {sorted(unknown)}")
    chosen = [t for t in tasks if not wanted or t.source.removeprefix("suite:") in wanted]
    return chosen[:n_tasks] if n_tasks else chosen


def undemonstrated(tasks: list, sft) -> list:
    """The training tasks the rounds explore: those the warm start did not demonstrate (SPORT's rounds
    bring tasks without labels; re-exploring a task whose reference program was learnt measures recall).
    When the warm start demonstrated every one, all of them, and it says so."""
    if not sft.enabled or sft.source != "suite":
        return tasks
    shown = {t.id for t in chosen_tasks(tasks, sft.families, sft.n_tasks)}
    rest = [t for t in tasks if t.id not in shown]
    if rest:
        return rest
    print(f"rounds: the warm start demonstrated all {len(tasks)} training tasks; the rounds explore them again",
          flush=True)
    return tasks


def after_warm_start(model, cfg):
    """LoRA: the adapters merged into the weights, fresh ones in their place. Full fine-tuning: as it is."""
    if not cfg.model.lora.enabled or not hasattr(model, "merge_and_unload"):
        return model
    import torch
    from peft import LoraConfig, get_peft_model
    lora = cfg.model.lora
    merged = model.merge_and_unload()
    with torch.random.fork_rng():  # the fresh adapters' initial values depend on the seed alone (resumable)
        torch.manual_seed(cfg.seed + 1)
        return get_peft_model(merged, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=lora.target_modules)).eval()


def continued(model, cfg):
    """With ``sft.continue_from``: the earlier warm start's weights applied and merged (fresh adapters on top, as
    after any warm start), which this run's warm start then trains on. Without it: the model as it is."""
    if not cfg.sft.continue_from:
        return model
    from sport_fast.model.weights import load_trainable_state
    from sport_fast.run.run_dir import read_checkpoint
    load_trainable_state(model, read_checkpoint(cfg.sft.continue_from))
    print(f"warm start: continues {cfg.sft.continue_from}", flush=True)
    return after_warm_start(model, cfg)


def restore(model, cfg, run_root) -> object:
    """The policy as a run left it before its rounds: the warm start's weights applied (and merged, with LoRA)
    when the run had one. ``run_root``: its directory."""
    from pathlib import Path

    from sport_fast.model.weights import load_trainable_state
    from sport_fast.run.run_dir import read_checkpoint
    folder = Path(run_root) / "checkpoints" / "sft"
    if not cfg.sft.enabled or not (folder / "COMPLETE").exists():
        return model
    model = continued(model, cfg)
    load_trainable_state(model, read_checkpoint(folder))
    return after_warm_start(model, cfg)
