"""``python -m sport_fast.task_suite OUT_DIR [--train N] [--heldout N] [--seed S]``: write the offline suite
(``tasks.suite``): tool-use tasks with known answers, drawn locally, train and held-out splits."""
from __future__ import annotations

import argparse
import sys

from sport_fast.tasks.suite import generate_suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sport_fast.task_suite", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=28)
    parser.add_argument("--heldout", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.train < 0 or args.heldout < 0:
        print("sport_fast.task_suite: --train and --heldout must be >= 0", file=sys.stderr)
        return 2
    suite = generate_suite(args.out_dir, args.train, args.heldout, args.seed)
    print(f"wrote {len(suite['train'])} train and {len(suite['heldout'])} held-out tasks to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
