"""``python -m sport_fast.eval``: AnsAcc, ToolAcc and CodeExec of an agent on a task set (``agent.evaluation``).

    python -m sport_fast.eval --tasks runs/default/suite/heldout.jsonl                 # the embedded model
    python -m sport_fast.eval --tasks heldout.jsonl --checkpoint runs/default           # a trained run (its
                                                                                        # config, last round)
    python -m sport_fast.eval --tasks gta/ --format gta --config qwen2vl-7b-h100 --checkpoint CKPT
    python -m sport_fast.eval --tasks heldout.jsonl --base-url http://host:8000/v1 --model NAME --tokenizer DIR

Agent settings come from the recipe's ``eval`` section (with ``--config`` or a run's ``config.yaml``), and
any flag given overrides them. Bad input is one line and exit 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from sport_fast.agent.evaluation import evaluate, load_any


def main(argv: list[str] | None = None) -> int:
    from sport_fast.config import ConfigError
    from sport_fast.model.loader import ModelLoadError
    from sport_fast.model.weights import WeightsError
    args = _parser().parse_args(argv)
    try:
        tasks = load_any(args.tasks, args.format)[: args.limit]
        agent = _build_agent(args)
    except (OSError, ValueError, ConfigError, ModelLoadError, WeightsError, RuntimeError) as err:
        print(f"sport_fast.eval: {err}", file=sys.stderr)
        return 2
    report = evaluate(tasks, agent, args.out, batch=args.batch or 4, progress=lambda i, n, o: print(
        f"  [{i}/{n}] {o['task_id']}: {'right' if o['correct'] else 'wrong' if o['correct'] is False else 'unscored'}"
        f" ({o['steps']} steps, {o['stop_reason']})", flush=True))
    print(json.dumps(report, indent=2))
    return 0


def _build_agent(args):
    from sport_fast.agent.agent import Agent
    from sport_fast.model.chat_format import ChatFormat
    from sport_fast.sandbox.layers import self_test
    from sport_fast.sandbox.sandbox import Sandbox
    from sport_fast.tools.tool_sets import describe_set, registry_for
    cfg = _config(args)
    policy, tokenizer = _policy(args, cfg)
    tools = registry_for(cfg.tools)
    sandbox = Sandbox(timeout_s=cfg.explore.sandbox_timeout_s, memory_mb=cfg.explore.sandbox_memory_mb, tools=tools)
    print(f"{describe_set(tools)}\n{self_test(sandbox)}", flush=True)
    return Agent(policy, ChatFormat(tokenizer), sandbox, tools, _agent_config(args, cfg), seed=cfg.seed,
                 tool_style=cfg.tools.style, workers=cfg.explore.sandbox_workers,
                 in_flight=cfg.explore.batches_in_flight)


def _config(args):
    """The recipe: ``--config``, else the checkpoint's run's ``config.yaml``, else the package default; the
    model is ``--model``'s when that is given."""
    from sport_fast.config import load_config
    from sport_fast.run.run_dir import find_checkpoint
    source = args.config
    if source is None and args.checkpoint:
        _, run = find_checkpoint(args.checkpoint)
        source = run / "config.yaml" if run is not None else None
    cfg = load_config(source or "default")
    if args.model is not None and not args.base_url:
        cfg.model.path = args.model
    if args.tool_set is not None:
        cfg.tools.set = args.tool_set
    elif args.format == "gta" and cfg.tools.set == "default":
        cfg.tools.set = "gta"  # GTA's tasks expect GTA's tools: the set that maps its fourteen onto ours
    return cfg


def _policy(args, cfg):
    """(policy, tokenizer): a server's model through its own tokenizer, or the recipe's model, with a
    checkpoint's weights when one is given."""
    if args.base_url:
        from sport_fast.model.loader import load_tokenizer
        from sport_fast.sampler.remote import OpenAIStepSampler, ServerPolicy
        if args.model is None:
            raise ValueError("--base-url needs --model: the served model's name")
        tokenizer = load_tokenizer(args.tokenizer or args.model)
        return ServerPolicy(OpenAIStepSampler(args.base_url, args.model)), tokenizer
    from sport_fast.model.loader import load_policy
    from sport_fast.sampler.prefix_sampler import PrefixSampler
    model, tokenizer = load_policy(cfg.model)
    if args.checkpoint:
        model = _load_checkpoint(model, args.checkpoint, cfg)
    return PrefixSampler(model, tokenizer, seed=cfg.seed, decode=cfg.backends.decode), tokenizer


def _load_checkpoint(model, path, cfg):
    """The policy with a checkpoint's weights; a run's warm start (if it had one) applied first."""
    from sport_fast.model.weights import load_trainable_state
    from sport_fast.run.run_dir import find_checkpoint, read_checkpoint
    from sport_fast.run.warm_start import restore
    folder, run = find_checkpoint(path)
    if run is not None:
        model = restore(model, cfg, run)
    if folder.name != "sft" or run is None or not cfg.sft.enabled:
        load_trainable_state(model, read_checkpoint(folder))
    print(f"sport_fast.eval: weights from {folder}", flush=True)
    return model


def _agent_config(args, cfg):
    """The recipe's eval section, with the flags given on the command line."""
    given = {"k": args.k, "max_steps": args.max_steps, "max_new_tokens": args.max_new_tokens}
    from sport_fast.agent.agent import AgentConfig
    base = {f.name: getattr(cfg.eval, f.name) for f in dataclasses.fields(AgentConfig)}
    return AgentConfig(**{**base, **{k: v for k, v in given.items() if v is not None}})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sport_fast.eval", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", required=True, help="a suite .jsonl, or a GTA/GAIA directory")
    p.add_argument("--format", choices=("suite", "gta", "gaia"), default="suite")
    p.add_argument("--config", help="a recipe (path or name); default: the checkpoint's run's, else default")
    p.add_argument("--checkpoint", help="a round's checkpoint folder, or a run directory (its last round)")
    p.add_argument("--model", help="'smollm2' or a local folder (the policy); with --base-url: the served name")
    p.add_argument("--base-url", help="an OpenAI-compatible server to sample from instead of a local model")
    p.add_argument("--tokenizer", help="with --base-url: the served model's local folder (default: --model)")
    p.add_argument("--tool-set", choices=("default", "offline", "gta", "sport"),
                   help="the agent's tools (default: the recipe's; gta for --format gta)")
    p.add_argument("--k", type=int, help="candidates per step (best-of-K when > 1)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--limit", type=int, help="only the first N tasks")
    p.add_argument("--batch", type=int, help="tasks run in lockstep (one decode batch)")
    p.add_argument("--out", default=str(Path("runs") / "eval"))
    return p


if __name__ == "__main__":
    sys.exit(main())
