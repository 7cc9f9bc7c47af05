"""W5's diagnosis: can a round set a right answer against a wrong one at all?

``benchmarks/learning.py`` found that in no explored step did the K candidates' final answers differ, so
SPORT's label-free rule had no right-vs-wrong pair to give. This script measures the lever named for it:
more candidates and SPORT's own temperatures. Per setting and seed it runs the warm start (learning.py's
(b)) and one exploration round with the policy as judge, no evaluation, and counts from the round's
records (scored afterwards against the suite's answers, which the judge never sees): the steps where some
candidate answered, where the answers differed, where a right answer stood beside a wrong one or none
("mixed"), and where the judge then picked a right one; plus pairs, judge calls and abstentions.

    python benchmarks/w5_answer_diversity.py [--settings k4_t05_09,k8_t07_12] [--seeds 0 1]
Rows go to benchmarks/results/w5.jsonl (kind "diversity").
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import append_rows, stamp  # noqa: E402
from learning import ROOT, step_diversity, train, warm_start_overrides  # noqa: E402

SETTINGS = {  # explore overrides (on top of learning.py's COMMON)
    "k4_t05_09": ["explore.k=4", "explore.first_temperature=0.5", "explore.other_temperature=0.9"],  # the default
    "k8_t07_12": ["explore.k=8", "explore.first_temperature=0.7", "explore.other_temperature=1.2"],  # SPORT's
}


def one(base: Path, name: str, seed: int, args) -> dict:
    sft = [*warm_start_overrides(args), f"sft.epochs={args.sft_epochs}"]
    out = base / f"{name}_s{seed}"
    manifest = train(out, seed, "rounds=1", "eval.enabled=false", *sft, *SETTINGS[name])
    explore, trained = manifest["phases"]["0"]["explore"], manifest["phases"]["0"]["train"]
    return {"setting": name, "seed": seed, "overrides": SETTINGS[name], "steps": explore["steps"],
            "groups": explore["groups"], "pairs": trained.get("pairs", 0), "judge_steps": explore["judge_steps"],
            "judge_calls": explore["judge_calls"], "abstentions": explore["abstentions"],
            "explore_wall_s": explore["wall_s"], "run_wall_s": manifest["wall_s"],
            **step_diversity(out / "round_0")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    p.add_argument("--sft-families", default="count_colour,tallest_bar,table_best,order_number")
    p.add_argument("--sft-tasks", type=int, default=0)
    p.add_argument("--sft-epochs", type=int, default=4)
    p.add_argument("--sft-lr", type=float, default=1e-3)
    p.add_argument("--out-dir", default=str(ROOT / "runs" / "diversity"))
    args = p.parse_args()
    unknown = set(args.settings.split(",")) - set(SETTINGS)
    if unknown:
        raise SystemExit(f"--settings: unknown {sorted(unknown)} (have {sorted(SETTINGS)})")
    meta, t0 = stamp(), time.perf_counter()
    rows = []
    for name in args.settings.split(","):
        for seed in args.seeds:
            row = {**meta, "workload": "W5", "kind": "diversity", "sft_families": args.sft_families,
                   "sft_tasks": args.sft_tasks, "sft_epochs": args.sft_epochs, "sft_lr": args.sft_lr, **one(Path(args.out_dir), name, seed, args)}
            print(json.dumps({k: row[k] for k in row if k not in meta}), flush=True)
            rows.append(row)
    print(f"W5 diversity rows -> {append_rows('w5', rows)} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
