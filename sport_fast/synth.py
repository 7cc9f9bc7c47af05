"""``python -m sport_fast.synth``: write tool-use tasks from seed images with captions (``llm.synthesis``).

``python -m sport_fast.synth --seeds DIR|FILE.jsonl|suite --out tasks.jsonl (--base-url URL --model NAME |
--local smollm2)``. What it keeps goes to ``--out``; what it drops, with the reason, beside it.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from sport_fast.llm.synthesis import SynthConfig, load_seeds, suite_seeds, synthesize


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from sport_fast.model.loader import ModelLoadError
    from sport_fast.tools import default_registry
    try:
        seeds = suite_seeds(Path(args.out).parent / "seed_files", args.seed) if args.seeds == "suite" \
            else load_seeds(args.seeds)
        examples = [l.strip() for l in Path(args.examples).read_text().splitlines() if l.strip()] \
            if args.examples else None
        backend = _backend(args)
    except (FileNotFoundError, ValueError, ModelLoadError) as err:
        print(f"sport_fast.synth: {err}", file=sys.stderr)
        return 2
    config = SynthConfig(queries_per_seed=args.per_seed, seed=args.seed)
    tasks, report = synthesize(seeds, backend, default_registry(), args.out, config, examples)
    print(json.dumps({"seeds": len(seeds), **asdict(report), "out": args.out}))
    return 0


def _backend(args):
    from sport_fast.llm.client import CachedBackend, LocalChatBackend, OpenAIChatBackend
    if args.local:
        if args.local != "smollm2":
            raise ValueError("--local takes 'smollm2' (the embedded default model)")
        from sport_fast.model.loader import load_base
        backend = LocalChatBackend(*load_base("smollm2"), name="smollm2")
    elif args.base_url:
        backend = OpenAIChatBackend(args.base_url, args.model, timeout_s=args.timeout, max_retries=2)
    else:
        raise ValueError("give --base-url URL --model NAME, or --local smollm2")
    return CachedBackend(backend, Path(args.out).with_suffix(".cache.jsonl"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sport_fast.synth", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="suite", help="folder, JSON-lines file, or 'suite' (the offline suite's files)")
    p.add_argument("--out", required=True)
    p.add_argument("--base-url")
    p.add_argument("--model", default="default")
    p.add_argument("--local", help="'smollm2': write with the embedded default model in-process")
    p.add_argument("--per-seed", type=int, default=2)
    p.add_argument("--examples", help="a text file of example queries, one per line")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    return p


if __name__ == "__main__":
    sys.exit(main())
