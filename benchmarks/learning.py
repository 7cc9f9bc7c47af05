"""W5: does the loop teach? The paper's experiment in miniature (``../shared/BENCHMARKS.md``, W5).

Arms, on the same held-out tasks of the offline suite (28, K=1), each run through ``python -m sport_fast.train``
exactly as a user runs it (a run directory per arm and seed, resumable):
  (a) untuned      the embedded SmolLM2-135M-Instruct as it ships            rounds=0
  (b) warm start   SFT on the reference programs of part of the training tasks (``--sft-families``,
                   ``--sft-tasks``); the rounds explore the other training tasks
  (c) + SPORT      (b) followed by R rounds (suite tasks, K candidates, sandbox, the judge; the judge never
                   sees an answer or a reference program)                     the same run as (b)
  (d) control      (b) continued with SFT on its demonstrations instead of the rounds: from (b)'s weights
                   (``sft.continue_from``), fresh adapters as (c)'s rounds have, as many optimizer steps
                   as (c)'s rounds took, no preference signal                 rounds=0
Per arm and round: AnsAcc, ToolAcc, CodeExec with 95% bootstrap intervals over tasks; pooled over seeds (per
task, the mean over seeds) with paired intervals of the differences (c)-(b), (c)-(d), (b)-(a) (and (c)-(b) after
every earlier round); pairs per round, the share of steps that yielded a pair, judge abstentions, wall time. Rows go to ``benchmarks/results/w5.jsonl``,
the curve to ``benchmarks/results/w5_learning.png``. The arms run side by side, one intra-op thread each:
every seed's (a) and (b)+(c) at once, a seed's (d) as soon as its rounds have trained (``Arm``).

    python benchmarks/learning.py --mode quick     # 1 seed, 1 round (docs/measurements.md: its wall time)
    python benchmarks/learning.py --mode full      # 2 seeds, 3 rounds
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from common import RESULTS, append_rows, stamp  # noqa: E402

from sport_fast.agent.intervals import bootstrap_ci, mean_or_none, paired_difference  # noqa: E402
from sport_fast.tasks.suite import FAMILIES  # noqa: E402

# quick: 7 tasks explored (one per family) so that it ends within 20 min on 2 cores; full: 14 a round
MODES = {"quick": {"seeds": [0], "rounds": 1, "per_round": 7}, "full": {"seeds": [0, 1], "rounds": 3, "per_round": 14}}
COMMON = ["tasks.n_train=28", "tasks.n_heldout=28", "eval.n_tasks=28", "eval.batch=14", "eval.max_steps=3",
          "eval.max_new_tokens=160", "explore.max_new_tokens=160", "explore.max_steps=3", "explore.k=4",
          "explore.batch=7", "judge.backend=local", "judge.max_tokens=64",
          "train.lr=2e-4"]  # LoRA adapters; the default 5e-5 is not calibrated for a round of a few steps
# The defaults: a warm start on one demonstration of each family for 10 epochs (partly able: 0.37 held-out),
# whose rounds draw 8 candidates a step (first step at 0.7, later ones at 1.2) and train with the chosen
# step's NLL beside DPO at lr 5e-5 (docs/measurements.md, W5: the setting that did no harm, the one with signal).
ALL_FAMILIES = ",".join(family.__name__ for family in FAMILIES)
ROUND_RECIPE = ["explore.k=8", "explore.first_temperature=0.7", "explore.other_temperature=1.2", "train.sft_weight=1",
                "train.lr=5e-5"]


class Arm:
    """One arm's ``python -m sport_fast.train`` (started, or resumed from its run directory) as a child process
    with one intra-op thread, so that the arms of every seed share the cores side by side; its output is added to
    ``<run dir>.log``."""

    def __init__(self, out: Path, seed: int, *overrides: str, cmd: list[str] | None = None):
        self.out, self.started = out, time.time()
        cmd = cmd or [sys.executable, "-m", "sport_fast.train", "--config", "default", f"out_dir={out}",
                      f"seed={seed}", *COMMON, *overrides]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        out.parent.mkdir(parents=True, exist_ok=True)
        self.log = out.with_name(out.name + ".log")
        with open(self.log, "a") as log:  # a resumed arm keeps its earlier runs' output
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        print(f"  started {out.name} (log {self.log})", flush=True)

    def manifest(self) -> dict:
        path = self.out / "manifest.json"
        return json.loads(path.read_text()) if path.exists() else {"phases": {}}

    def trained(self, rounds: int, poll_s: float = 5.0) -> dict:
        """The manifest once every round has trained (the control's budget is known then, before the last
        evaluation), or once the run has ended."""
        while True:
            manifest = self.manifest()
            if all("train" in manifest["phases"].get(str(r), {}) for r in range(rounds)):
                return manifest
            if self.proc.poll() is not None:
                return self.wait()
            time.sleep(poll_s)

    def wait(self) -> dict:
        if self.proc.wait() != 0:
            tail = self.log.read_text()[-3000:]
            raise SystemExit(f"arm {self.out.name} failed (exit {self.proc.returncode}); the end of {self.log}:\n{tail}")
        manifest = self.manifest()
        # until its last write, not until this wait: an arm may have ended long before it is waited for
        manifest["wall_s"] = round(self.log.stat().st_mtime - self.started, 1)
        print(f"  {self.out.name} took {manifest['wall_s']:.0f} s", flush=True)
        return manifest


def all_seeds(base: Path, seeds: list[int], rounds: int, args) -> dict:
    """Every seed's four arms, run side by side: (a) and (b)+(c) of every seed start at once; a seed's (d)
    starts when its rounds have trained (its budget matches theirs), beside (c)'s last evaluation."""
    tag = f"_{args.variant}" if args.variant else ""
    sft, shared = warm_start_overrides(args), (f"model.dtype={args.dtype}", f"tasks.per_round={args.per_round}")
    untuned = {s: Arm(base / f"a_untuned_s{s}", s, *shared, "rounds=0") for s in seeds}  # every variant's (a)
    sport = {s: Arm(base / f"bc_sport{tag}_s{s}", s, *shared, f"rounds={rounds}", *sft,
                    f"sft.epochs={args.sft_epochs}", *args.sport) for s in seeds}
    extra, control = {}, {}
    for s in seeds:
        extra[s] = _matched_epochs(sport[s].trained(rounds), rounds, args.sft_epochs)
        control[s] = Arm(base / f"d_control{tag}_s{s}", s, *shared, "rounds=0", *sft, f"sft.epochs={extra[s]}",
                         f"sft.lr={args.control_lr}",
                         f"sft.continue_from={sport[s].out / 'checkpoints' / 'sft'}")
    return {s: seed_record(sport[s].out, rounds, untuned[s].wait(), sport[s].wait(),
                           control[s].wait(), extra[s]) for s in seeds}


def seed_record(bc_dir: Path, rounds: int, untuned: dict, sport: dict, control: dict, extra: int) -> dict:
    """One seed's evaluation reports per arm, and what its rounds did."""
    phases = sport["phases"]
    return {"a": [phases_eval(untuned)], "b": [phases_eval(sport)],
            "c": [phases[str(r)]["eval"] for r in range(rounds)], "d": [phases_eval(control)],
            "rounds": [{**_round_record(phases[str(r)]), **step_diversity(bc_dir / f"round_{r}")}
                       for r in range(rounds)], "extra_sft_epochs": extra,
            "wall_s": {"a": untuned["wall_s"], "bc": sport["wall_s"], "d": control["wall_s"]}}


def warm_start_overrides(args) -> list[str]:
    """(b)'s warm start (its epochs apart: the control takes more)."""
    return ["sft.enabled=true", f"sft.families={args.sft_families}", f"sft.n_tasks={args.sft_tasks}",
            f"sft.lr={args.sft_lr}"]


def phases_eval(manifest: dict) -> dict:
    return manifest["phases"]["initial"]["eval"]


def _matched_epochs(sport: dict, rounds: int, sft_epochs: int) -> int:
    """Extra SFT epochs for (d): as many optimizer steps as (c)'s rounds took (at least one epoch)."""
    per_epoch = max(1.0, sport["phases"]["sft"]["train"]["train_steps"] / sft_epochs)
    dpo_steps = sum(sport["phases"][str(r)]["train"].get("train_steps", 0) for r in range(rounds))
    return max(1, round(dpo_steps / per_epoch))


def _round_record(phase: dict) -> dict:
    explore, trained = phase["explore"], phase["train"]
    return {"steps": explore["steps"], "groups": explore["groups"], "pairs": trained.get("pairs", 0),
            "steps_with_a_pair": explore["groups"] / max(1, explore["steps"]), "abstentions": explore["abstentions"],
            "judge_steps": explore["judge_steps"], "steps_redrawn": explore.get("steps_redrawn", 0),
            "steps_revived": explore.get("steps_revived", 0), "train_steps": trained.get("train_steps", 0),
            "demonstration_groups": trained.get("demonstration_groups", 0),
            "loss_mean": trained.get("loss_mean"), "reward_accuracy": trained.get("reward_accuracy")}


def step_diversity(rdir: Path) -> dict:
    """Of a round's explored steps: how many had K candidates of one text (nothing to prefer), how many had
    no candidate that ran (SPORT's rule yields nothing), and of the steps where a candidate answered: in how
    many the candidates' answers differed, some answer was right, the followed one was right (scored here
    against the suite's answers, which the judge never sees: can the round prefer a right answer at all?)."""
    from sport_fast.agent.records import TrajectoryRecord
    from sport_fast.tasks.answer_rules import task_answer_correct
    from sport_fast.tasks.task import load_tasks
    tasks = {t.id: t for t in load_tasks(rdir.parent / "suite" / "train.jsonl")}
    records = [json.loads(line) for line in (rdir / "trajectories.jsonl").read_text().splitlines()]
    steps = [(tasks[r["task_id"]], s) for r in records for s in TrajectoryRecord.from_json(r["trajectory"]).steps]
    answered = [(t, s) for t, s in steps if any(c.has_final_answer for c in s.candidates)]
    right = [[c.has_final_answer and task_answer_correct(t, c.final_answer) for c in s.candidates] for t, s in answered]
    mixed = [any(r) and not all(r) for r in right]  # a right answer beside a wrong one or none
    return {"by_family": by_family(steps), "steps_one_text": sum(len({c.text for c in s.candidates}) == 1 for _, s in steps),
            "steps_none_ran": sum(not any(c.ran for c in s.candidates) for _, s in steps),
            "steps_answered": len(answered),
            "answered_steps_answers_differ": sum(len({json.dumps(c.final_answer) for c in s.candidates
                                                      if c.has_final_answer}) > 1 for _, s in answered),
            "answered_steps_some_right": sum(map(any, right)),
            "answered_steps_followed_right": sum(s.followed is not None and r[s.followed]
                                                 for (_, s), r in zip(answered, right)),
            "mixed_steps": sum(mixed),
            "mixed_steps_judged_right": sum(m and s.chosen is not None and r[s.chosen]
                                            for m, (_, s), r in zip(mixed, answered, right))}


def by_family(steps: list) -> dict:
    """Per task family, of (task, step) pairs: steps, steps whose K candidates were one text, candidates, those
    that ran, those that answered right (against the suite's answers), steps with a right one. Where a round
    cannot teach a family the warm start never showed, this says whether any right candidate was drawn."""
    from sport_fast.tasks.answer_rules import task_answer_correct
    out: dict[str, dict] = {}
    for task, step in steps:
        family = task.source.split(":", 1)[1] if task.source.startswith("suite:") else task.source
        right = [c.has_final_answer and task_answer_correct(task, c.final_answer) for c in step.candidates]
        row = out.setdefault(family, dict.fromkeys(("steps", "steps_one_text", "candidates", "candidates_ran",
                                                    "candidates_right", "steps_some_right"), 0))
        row["steps"] += 1
        row["steps_one_text"] += len({c.text for c in step.candidates}) == 1
        row["candidates"] += len(step.candidates)
        row["candidates_ran"] += sum(c.ran for c in step.candidates)
        row["candidates_right"] += sum(right)
        row["steps_some_right"] += any(right)
    return out


# -- pooling over seeds --------------------------------------------------------------------------------
def per_task(reports: list[dict], key: str) -> list[float]:
    """Per task (in task order), the mean over seeds of ``key`` (correct, tool_recall)."""
    by_task: dict[str, list] = {}
    for report in reports:
        for outcome in report["per_task"]:
            if outcome[key] is not None:
                by_task.setdefault(outcome["task_id"], []).append(float(outcome[key]))
    return [sum(v) / len(v) for _, v in sorted(by_task.items())]


def pooled(reports: list[dict]) -> dict:
    out = {}
    for name, key in (("AnsAcc", "correct"), ("ToolAcc", "tool_recall")):
        values = per_task(reports, key)
        out[name], out[f"{name}_ci95"] = mean_or_none(values), bootstrap_ci(values, mean_or_none)
    out["CodeExec"] = mean_or_none([r["CodeExec"] for r in reports])
    return out


def stages(results: dict, rounds: int) -> dict[str, list[dict]]:
    """stage name -> the reports of every seed for it."""
    seeds = list(results.values())
    out = {"a untuned": [s["a"][0] for s in seeds], "b warm start": [s["b"][0] for s in seeds]}
    for r in range(rounds):
        out[f"c round {r}"] = [s["c"][r] for s in seeds]
    out["d control"] = [s["d"][0] for s in seeds]
    return out


def differences(by_stage: dict, rounds: int) -> dict:
    """Paired differences of AnsAcc over tasks: the headline ones after the last round, and (c)-(b) after
    every earlier round (the issue's per-round report; several looks at one run, so none of them alone is the
    result)."""
    last = f"c round {rounds - 1}"
    pairs = {"(c)-(b)": ("b warm start", last), "(c)-(d)": ("d control", last), "(b)-(a)": ("a untuned", "b warm start")}
    pairs.update({f"(c round {r})-(b)": ("b warm start", f"c round {r}") for r in range(rounds - 1)})
    return {name: paired_difference(per_task(by_stage[x], "correct"), per_task(by_stage[y], "correct"))
            for name, (x, y) in pairs.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=MODES, default="quick")
    p.add_argument("--seeds", type=int, nargs="*")
    p.add_argument("--rounds", type=int)
    p.add_argument("--sft-families", default=ALL_FAMILIES)
    p.add_argument("--sft-tasks", type=int, default=7, help="the first n of those families' training tasks (0: all)")
    p.add_argument("--sft-epochs", type=int, default=10)
    p.add_argument("--sft-lr", type=float, default=1e-3)  # calibrated: 1e-4 left the format unlearnt (AnsAcc 0/7)
    p.add_argument("--control-lr", type=float, help="(d)'s learning rate (default: the warm start's, --sft-lr)")
    p.add_argument("--sport", nargs="*", default=ROUND_RECIPE, metavar="KEY=VALUE",
                   help="overrides for the rounds of (c) only, e.g. train.epochs=4 (the control matches its steps)")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"),
                   help="every arm's model.dtype (bfloat16 ran (b)+(c) 1.7x faster than float32 on the dev CPU, "
                        "which has AVX512-BF16; docs/measurements.md, W5)")
    p.add_argument("--per-round", type=int, help="training tasks explored a round (default: the mode's)")
    p.add_argument("--variant", default="", help="names (b)+(c) and (d)'s run folders, so variants share (a)")
    p.add_argument("--out-dir", default=str(ROOT / "runs" / "learning"))
    args = p.parse_args()
    mode = MODES[args.mode]
    seeds, rounds = args.seeds or mode["seeds"], args.rounds or mode["rounds"]
    args.per_round = args.per_round or mode["per_round"]
    args.control_lr = args.control_lr or args.sft_lr
    base, t0, meta = Path(args.out_dir) / args.mode, time.perf_counter(), stamp()
    results = all_seeds(base, seeds, rounds, args)
    by_stage = stages(results, rounds)
    summary = {name: pooled(reports) for name, reports in by_stage.items()}
    diffs = differences(by_stage, rounds)
    rows = _rows(meta, args, seeds, rounds, results, summary, diffs, time.perf_counter() - t0)
    print(f"W5 rows -> {append_rows('w5', rows)}")
    _print(summary, diffs, results)
    plot(by_stage, summary, RESULTS / f"w5_learning_{args.mode}{'_' + args.variant if args.variant else ''}.png")


def _rows(meta, args, seeds, rounds, results, summary, diffs, wall) -> list[dict]:
    shape = {"workload": "W5", "mode": args.mode, "seeds": seeds, "rounds": rounds, "heldout_tasks": 28, "k_eval": 1,
             "sft_families": args.sft_families, "sft_tasks": args.sft_tasks, "sft_epochs": args.sft_epochs,
             "sft_lr": args.sft_lr, "dtype": args.dtype, "per_round": args.per_round,
             "control_lr": args.control_lr,
             "common": COMMON, "sport_overrides": args.sport, "variant": args.variant}
    rows = [{**meta, **shape, "kind": "stage", "stage": name, **values} for name, values in summary.items()]
    rows += [{**meta, **shape, "kind": "difference", "comparison": name, **d} for name, d in diffs.items()]
    rows += [{**meta, **shape, "kind": "seed", "seed": seed, "rounds_record": r["rounds"],
              "extra_sft_epochs": r["extra_sft_epochs"], "wall_s": r["wall_s"],
              "AnsAcc": {k: [e["AnsAcc"] for e in r[k]] for k in "abcd"},
              "AnsAcc_ci95": {k: [e["AnsAcc_ci95"] for e in r[k]] for k in "abcd"}} for seed, r in results.items()]
    rows.append({**meta, **shape, "kind": "total", "wall_s": round(wall, 1)})
    return rows


def _print(summary, diffs, results) -> None:
    print(f"{'stage':16} {'AnsAcc':>7} {'95% CI':>15} {'ToolAcc':>8} {'CodeExec':>9}")
    for name, v in summary.items():
        ci = v["AnsAcc_ci95"] or [math.nan, math.nan]
        print(f"{name:16} {v['AnsAcc']:7.3f} [{ci[0]:.3f}, {ci[1]:.3f}] {v['ToolAcc'] or 0:8.3f} {v['CodeExec'] or 0:9.3f}")
    for name, d in diffs.items():
        print(f"{name}: {d['difference']:+.3f}, 95% CI {d['ci95']}")
    for seed, r in results.items():
        print(f"seed {seed}: rounds {r['rounds']}, extra SFT epochs for (d) {r['extra_sft_epochs']}, wall {r['wall_s']}")


def plot(by_stage: dict, summary: dict, path: Path) -> None:
    """AnsAcc per stage: each seed's point and the pooled mean with its 95% interval, on [0, 1]."""
    from PIL import Image, ImageDraw
    w, h, left, top, bottom = 640, 320, 50, 20, 270
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([left, top, w - 10, bottom], outline="black")
    names = list(by_stage)
    x_of = lambda i: left + 30 + i * (w - left - 70) / max(1, len(names) - 1)  # noqa: E731
    y_of = lambda v: bottom - v * (bottom - top)  # noqa: E731
    for i, name in enumerate(names):
        for report in by_stage[name]:
            draw.ellipse([x_of(i) - 2, y_of(report["AnsAcc"]) - 2, x_of(i) + 2, y_of(report["AnsAcc"]) + 2],
                         outline=(150, 150, 150))
        mean, ci = summary[name]["AnsAcc"], summary[name]["AnsAcc_ci95"]
        if ci:
            draw.line([(x_of(i), y_of(ci[0])), (x_of(i), y_of(ci[1]))], fill=(31, 119, 180), width=2)
        draw.ellipse([x_of(i) - 4, y_of(mean) - 4, x_of(i) + 4, y_of(mean) + 4], fill=(31, 119, 180))
        draw.text((x_of(i) - 28, bottom + 8), name, fill="black")
    for v in (0.0, 0.5, 1.0):
        draw.text((8, y_of(v) - 6), f"{v:.1f}", fill="gray")
    draw.text((left, 4), "held-out AnsAcc (28 tasks, K=1): seeds (grey), pooled mean and 95% CI (blue)", fill="black")
    img.save(path)


if __name__ == "__main__":
    main()
