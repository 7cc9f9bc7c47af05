"""W5 diagnosis: how a round's training moved the log-prob sums of the steps it was trained on.

For each step group of round R of a run directory (``benchmarks/learning.py`` writes them), the sums of every
candidate under the policy after round R minus the sums under the round's reference (stored with the groups):
the chosen step's change and the rejected ones'. DPO needs only the difference to grow; when the chosen step's
own sum falls too, the round has lowered the likelihood of the steps it preferred ("likelihood displacement"),
which ``train.sft_weight`` is there to prevent. One row per run (``kind: displacement``) in
``benchmarks/results/w5.jsonl``.

    python benchmarks/w5_displacement.py RUN_DIR [RUN_DIR ...] [--round 0]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from common import append_rows, stamp  # noqa: E402


def policy_after(run_dir: Path, round_: int):
    """The run's policy as its round ``round_`` left it (warm start merged, the round's adapters loaded)."""
    from sport_fast.config import load_config
    from sport_fast.model.loader import load_policy
    from sport_fast.model.weights import load_trainable_state
    from sport_fast.run.run_dir import read_checkpoint
    from sport_fast.run.warm_start import after_warm_start
    cfg = load_config(run_dir / "config.yaml")
    model, _ = load_policy(cfg.model)
    if cfg.sft.enabled:
        load_trainable_state(model, read_checkpoint(run_dir / "checkpoints" / "sft"))
        model = after_warm_start(model, cfg)
    load_trainable_state(model, read_checkpoint(run_dir / "checkpoints" / f"round_{round_}"))
    return model, cfg


def displacement(run_dir: Path, round_: int) -> dict:
    from sport_fast.data.store import StepStore
    from sport_fast.dpo.reference_logps import compute_ref_logps
    groups = list(StepStore(run_dir / f"round_{round_}" / "store"))
    if not groups or any(g.ref_logps is None for g in groups):
        raise SystemExit(f"{run_dir}: round {round_} has no groups with reference sums")
    reference = [list(g.ref_logps) for g in groups]
    model, cfg = policy_after(run_dir, round_)
    compute_ref_logps(model, groups, force=True, adapters=True, max_tokens=cfg.train.max_tokens_per_batch)
    chosen, rejected = [], []
    for g, ref in zip(groups, reference):
        moved = [after - before for after, before in zip(g.ref_logps, ref)]
        chosen.append(moved[g.chosen])
        rejected += [moved[i] for i in g.rejected]
    return {"run": run_dir.name, "round": round_, "groups": len(groups), "pairs": len(rejected),
            "train_sft_weight": cfg.train.sft_weight, "train_lr": cfg.train.lr, "train_beta": cfg.train.beta,
            "chosen_change_mean": statistics.fmean(chosen), "chosen_change_min": min(chosen),
            "chosen_fell": sum(c < 0 for c in chosen), "rejected_change_mean": statistics.fmean(rejected)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--round", type=int, default=0)
    args = p.parse_args()
    meta, rows = stamp(), []
    for run in args.runs:
        row = {**meta, "workload": "W5", "kind": "displacement", **displacement(run, args.round)}
        print(json.dumps({k: row[k] for k in row if k not in meta}), flush=True)
        rows.append(row)
    print(f"W5 displacement rows -> {append_rows('w5', rows)}")


if __name__ == "__main__":
    main()
