"""``python -m sport_fast.eval``: AnsAcc, ToolAcc and CodeExec of an agent on a task set (``agent.evaluation``).

``python -m sport_fast.eval --tasks runs/suite/heldout.jsonl --k 1`` (format: suite, gta or gaia).
"""
from __future__ import annotations

import argparse
import json
import sys

from sport_fast.agent.evaluation import evaluate, load_any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sport_fast.eval", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", required=True, help="a suite .jsonl, or a GTA/GAIA directory")
    parser.add_argument("--format", choices=("suite", "gta", "gaia"), default="suite")
    parser.add_argument("--model", default="smollm2", help="'smollm2' (embedded) or the served model's name")
    parser.add_argument("--base-url", help="an OpenAI-compatible server; the embedded model if omitted")
    parser.add_argument("--k", type=int, default=1, help="candidates per step (best-of-K when > 1)")
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--limit", type=int, help="only the first N tasks")
    parser.add_argument("--batch", type=int, default=4, help="tasks run in lockstep (one decode batch)")
    parser.add_argument("--out", default="runs/eval")
    args = parser.parse_args(argv)
    try:
        tasks = load_any(args.tasks, args.format)[: args.limit]
    except (OSError, ValueError) as err:
        print(f"sport_fast.eval: {err}", file=sys.stderr)
        return 2
    agent = _build_agent(args)
    report = evaluate(tasks, agent, args.out, progress=lambda i, n, o: print(
        f"  [{i}/{n}] {o['task_id']}: {'right' if o['correct'] else 'wrong' if o['correct'] is False else 'unscored'}"
        f" ({o['steps']} steps, {o['stop_reason']})", flush=True))
    print(json.dumps(report, indent=2))
    return 0


def _build_agent(args):
    from sport_fast.agent.agent import Agent, AgentConfig
    from sport_fast.model.chat_format import ChatFormat
    from sport_fast.model.loader import load_smollm2
    from sport_fast.sandbox.layers import describe_layers
    from sport_fast.sandbox.sandbox import Sandbox
    from sport_fast.tools import default_registry
    print(describe_layers())
    model, tokenizer = load_smollm2()  # the tokenizer is needed for token-in, token-out in both cases
    if args.base_url:
        from sport_fast.sampler.remote import OpenAIStepSampler
        from sport_fast.sampler.remote import ServerPolicy
        policy = ServerPolicy(OpenAIStepSampler(args.base_url, args.model))
    else:
        from sport_fast.sampler.prefix_sampler import PrefixSampler
        policy = PrefixSampler(model, tokenizer)
    tools = default_registry()
    config = AgentConfig(k=args.k, max_steps=args.max_steps, max_new_tokens=args.max_new_tokens)
    return Agent(policy, ChatFormat(tokenizer), Sandbox(timeout_s=20, tools=tools), tools, config)


if __name__ == "__main__":
    sys.exit(main())
