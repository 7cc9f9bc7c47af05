"""W6 (BENCHMARKS.md), CPU: exploration at scale. The default round's exploration (SmolLM2-135M fp32, the
offline suite's first 6 training tasks, K=4, 3 steps, 128 new tokens) in lockstep batches of 3, every process
with one intra-op thread (OMP_NUM_THREADS=1) so that every rank gets the same resources:

  ranks     1 rank against 2 gloo ranks (torchrun), the default judge (SmolLM2 behind sport_fast.serve on
            loopback, one per rank): tasks per minute, and whether the data are identical;
  protocol  the embedded sampler against python -m sport_fast.serve in its own process (explore.backend=openai,
            token ids over the real openai client), with a judge that answers at once: the cost of the protocol;
  judge     a judge with a fixed 1 s latency per call (a scripted OpenAI-compatible server): one batch in flight
            and one judge call at a time, against two batches in flight and four calls at a time: the wall time
            the overlap saves, and whether the data are identical. The policy is warm-started first (2 SFT
            epochs, not timed), since the untuned model's candidates seldom give the judge anything to decide.
  engine    the same judge, with the candidates from a stand-in engine (``scripted_engine``: every completion
            request takes 2 s, its candidates the suite's reference steps and variants of them), the regime of a
            GPU engine, where decoding is quick beside the sandbox and the judge: sequential, then four judge
            calls at a time with one batch in flight, then two batches in flight as well.

Every arm runs the loop's own exploration phase (``run.phases.explore_round``) in fresh processes; times are
the phase's wall clock on rank 0 (exploration and the merge, not the model loads). Usage:
python benchmarks/w6_exploration_scale.py [--arms ranks,protocol,judge,engine] [--tasks N --batch B ...]
(``--smoke``: 2 tasks in batches of 1, one step of 16 tokens, to check that every arm runs; its rows carry
that shape, so point SPORT_BENCH_OUT elsewhere to keep them out of benchmarks/results/w6.jsonl.)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests"))
from common import append_rows, stamp  # noqa: E402

SHAPE = {"tasks": 6, "batch": 3, "k": 4, "max_steps": 3, "max_new_tokens": 128, "threads_per_rank": 1}
BASE = ["eval.enabled=false"]
SMOKE = {"tasks": 2, "batch": 1, "max_steps": 1, "max_new_tokens": 16}  # --smoke: every arm end to end, minutes


def shape_overrides(shape: dict) -> list[str]:
    """The recipe's keys for a shape (``threads_per_rank`` is the environment's, ``k`` the default's)."""
    return [*BASE, f"tasks.per_round={shape['tasks']}", f"explore.batch={shape['batch']}",
            f"explore.k={shape['k']}", f"explore.max_steps={shape['max_steps']}",
            f"explore.max_new_tokens={shape['max_new_tokens']}"]


def explore_once(overrides: list[str]) -> None:
    """One rank of an arm (under torchrun for several): the round-0 exploration phase of the default recipe."""
    from sport_fast import train
    from sport_fast.config import dump_config, load_config
    from sport_fast.run import phases
    from sport_fast.run.setup import build_run
    from sport_fast.run.warm_start import warm_start
    from sport_fast.run.work import follow
    cfg = load_config("default", overrides)
    parallel = train._join(cfg)
    if parallel is not None and not parallel.main:
        follow(cfg, parallel)
        return
    import torch
    torch.manual_seed(cfg.seed)
    run = build_run(cfg, dump_config(cfg), parallel)
    try:
        warm_start(run)  # the judge arms' policy (sft.enabled); not timed: the phase's wall clock is exploration's
        rdir = run.dir.round_dir(0)
        phases.explore_round(run, 0, rdir, phases.round_tasks(run, 0, rdir), phases.round_seed(cfg.seed, 0))
    finally:
        if parallel is not None:
            parallel.send(None)
        run.stop_judge()


def arm(name: str, out: Path, overrides: list[str], ranks: int = 1) -> dict:
    """Run one arm in fresh processes; its explore summary, data and load average."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "DS_ACCELERATOR": "cpu", "SPORT_KILL_AT": ""}
    args = [*shape_overrides(SHAPE), f"out_dir={out / name}", *overrides]
    if ranks > 1:
        from train_runs import free_port
        ds = ROOT / "sport_fast" / "configs" / "deepspeed" / "zero2-cpu.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port",
               str(free_port()), __file__, "--explore", json.dumps([*args, f"distributed.deepspeed={ds}"])]
    else:
        cmd = [sys.executable, __file__, "--explore", json.dumps(args)]
    load = os.getloadavg()[0]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"arm {name} failed:\n{done.stderr[-4000:]}")
    summary = json.loads((out / name / "manifest.json").read_text())["phases"]["0"]["explore"]
    print(f"  {name}: {summary['wall_s']:.1f} s, {summary['tasks']} tasks, {summary['generated_tokens']} tokens "
          f"(load {load:.2f})", flush=True)
    return {"arm": name, "ranks": ranks, "summary": summary, "data": data(out / name / "round_0"),
            "load_avg_1min_before": round(load, 2)}


def data(rdir: Path) -> list:
    """The round's trajectories and groups without what legitimately differs between runs."""
    def untimed(v):
        if isinstance(v, dict):
            return {k: untimed(x) for k, x in v.items() if k not in ("wall_s", "latency_s", "cached")}
        return [untimed(x) for x in v] if isinstance(v, list) else v
    lines = lambda p: [json.loads(line) for line in p.read_text().splitlines()]  # noqa: E731
    return untimed(lines(rdir / "trajectories.jsonl")) + untimed(lines(rdir / "store" / "groups.jsonl"))


def fixed_latency_judge(seconds: float):
    """A judge that picks the first tag offered after ``seconds`` (deterministic given the request)."""
    from fake_openai import FakeOpenAI, chat_reply

    def respond(path, body, server):
        time.sleep(seconds)
        tags = body["response_format"]["json_schema"]["schema"]["properties"]["best"]["enum"]
        return 200, chat_reply(f'{{"best": "{tags[0]}", "reason": "listed first"}}')
    return FakeOpenAI(respond)


def judge_at(url: str) -> list[str]:
    return ["judge.backend=openai", f"judge.base_url={url}", "judge.model=m"]


def serve(port: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sport_fast.serve", "--model", "smollm2", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    while "on http://" not in (line := proc.stdout.readline()):
        if not line and proc.poll() is not None:
            raise RuntimeError("sport_fast.serve did not start")
    return proc


def run_ranks(out: Path) -> list[dict]:
    one, two = arm("ranks_1", out, []), arm("ranks_2", out, [], ranks=2)
    return [one, two, compare("2 ranks vs 1 rank", two, one)]


def run_protocol(out: Path) -> list[dict]:
    from train_runs import free_port
    judge, port = fixed_latency_judge(0.0), free_port()
    server = serve(port)
    try:
        embedded = arm("embedded_sampler", out, judge_at(judge.url))
        served = arm("served_sport_fast", out, [*judge_at(judge.url), "explore.backend=openai", "explore.engine=sport_fast",
                                                 f"explore.base_urls=[http://127.0.0.1:{port}/v1]", "explore.model=smollm2"])
    finally:
        server.kill()
        judge.close()
    return [embedded, served, compare("sport_fast.serve vs embedded", served, embedded)]


WARM = ["sft.enabled=true", "sft.families=count_colour,tallest_bar,table_best,order_number", "sft.epochs=2",
        "sft.lr=1e-3"]  # benchmarks/learning.py's warm start, 2 epochs: its steps run and differ, so the judge is asked


def run_judge(out: Path) -> list[dict]:
    """The untuned model's candidates seldom run (a judge call needs two that ran and differ: W6's first arms
    make one call in 18 steps), so these arms explore with a warm-started policy."""
    judge = fixed_latency_judge(1.0)
    try:
        seq = arm("judge_1s_sequential", out, [*judge_at(judge.url), *WARM, "explore.batches_in_flight=1",
                                               "judge.max_concurrency=1"])
        over = arm("judge_1s_overlapped", out, [*judge_at(judge.url), *WARM, "explore.batches_in_flight=2",
                                                "judge.max_concurrency=4"])
    finally:
        judge.close()
    return [seq, over, compare("overlapped vs sequential judge", over, seq)]


ENGINE_DECODE_S = 2.0  # per completion request: a 7B engine's batched decode of one step of ~128 tokens


def run_engine(out: Path) -> list[dict]:
    """The judge overlap where decoding is quick beside the sandbox and the judge (a GPU engine's regime):
    the candidates come from ``scripted_engine`` (each request takes ENGINE_DECODE_S), so every step has
    candidates that run and differ, and the judge is asked at most steps."""
    from scripted_engine import ScriptedEngine
    judge = fixed_latency_judge(1.0)
    engine = ScriptedEngine(out / "engine_judge_1s_sequential" / "suite" / "train.jsonl", ENGINE_DECODE_S)
    served = [*judge_at(judge.url), "explore.backend=openai", "explore.engine=sport_fast",
              f"explore.base_urls=[{engine.url}]", "explore.model=m"]
    try:
        seq = arm("engine_judge_1s_sequential", out,
                  [*served, "explore.batches_in_flight=1", "judge.max_concurrency=1"])
        calls = arm("engine_judge_1s_concurrent", out,
                  [*served, "explore.batches_in_flight=1", "judge.max_concurrency=4"])
        over = arm("engine_judge_1s_overlapped", out,
                  [*served, "explore.batches_in_flight=2", "judge.max_concurrency=4"])
    finally:
        engine.close()
        judge.close()
    return [seq, calls, over, compare("concurrent judge calls vs sequential (engine)", calls, seq),
            compare("overlapped vs sequential judge (engine)", over, seq)]


def compare(name: str, new: dict, old: dict) -> dict:
    """Ratios, and how the data differ: byte for byte, else whether only the recorded log-probs do (and by how much)."""
    a, b = new["summary"], old["summary"]
    drift = logprob_drift(new["data"], old["data"])
    return {"arm": name, "speedup_tasks_per_min": (b["wall_s"] / a["wall_s"]), "wall_s_saved": b["wall_s"] - a["wall_s"],
            "identical_data": new["data"] == old["data"], "identical_but_logprobs": drift is not None,
            "max_abs_logprob_diff": drift}


def logprob_drift(x, y) -> float | None:
    """The largest |difference| of two records' ``logprobs`` if they differ nowhere else, else None."""
    if isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys():
        parts = [abs_diff(x[k], y[k]) if k == "logprobs" else logprob_drift(x[k], y[k]) for k in x]
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        parts = [logprob_drift(p, q) for p, q in zip(x, y)]
    else:
        return 0.0 if x == y else None
    return None if None in parts else max(parts, default=0.0)


def abs_diff(x, y) -> float | None:
    if not (isinstance(x, list) and isinstance(y, list) and len(x) == len(y)):
        return 0.0 if x == y else None
    return max((abs(p - q) for p, q in zip(x, y)), default=0.0)


def row(result: dict) -> dict:
    if "summary" not in result:
        return result
    s = result["summary"]
    return {"arm": result["arm"], "ranks": result["ranks"], "wall_s": s["wall_s"], "tasks": s["tasks"],
            "tasks_per_min": 60 * s["tasks"] / s["wall_s"], "generated_tokens": s["generated_tokens"],
            "generated_tokens_per_s": s["generated_tokens"] / s["wall_s"], "groups": s["groups"],
            "judge_calls": s["judge_calls"], "judge_time_s": s.get("judge_time_s"),
            "rank_walls_s": [r["wall_s"] for r in s["ranks"]],
            "load_avg_1min_before": result["load_avg_1min_before"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explore", help=argparse.SUPPRESS)
    parser.add_argument("--arms", default="ranks,protocol,judge,engine")
    parser.add_argument("--smoke", action="store_true", help=f"a tiny shape to check every arm runs: {SMOKE}")
    for key in ("tasks", "batch", "max_steps", "max_new_tokens"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"default {SHAPE[key]}")
    args = parser.parse_args()
    if args.explore:
        return explore_once(json.loads(args.explore))
    SHAPE.update({**(SMOKE if args.smoke else {}), **{k: v for k, v in vars(args).items() if k in SHAPE and v}})
    if SHAPE["tasks"] % SHAPE["batch"] or SHAPE["tasks"] // SHAPE["batch"] < 2:
        parser.error(f"--tasks must be a multiple of --batch with at least 2 batches (one per rank): {SHAPE}")
    import torch
    torch.set_num_threads(1)  # the stamp names the arms' thread count (this process only waits on them)
    base = {**stamp(), "workload": "W6-cpu", "model": "SmolLM2-135M-Instruct fp32", "shape": SHAPE}  # before measuring
    out = Path(tempfile.mkdtemp(prefix="w6_"))
    runners = {"ranks": run_ranks, "protocol": run_protocol, "judge": run_judge, "engine": run_engine}
    try:
        rows = [row(r) for name in args.arms.split(",") for r in runners[name](out)]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"\n{'arm':34s} {'ranks':>5s} {'wall s':>7s} {'tasks/min':>9s} {'gen tok/s':>9s} {'groups':>6s} {'load':>5s}")
    for r in rows:
        if "wall_s" in r:
            print(f"{r['arm']:34s} {r['ranks']:5d} {r['wall_s']:7.1f} {r['tasks_per_min']:9.2f} "
                  f"{r['generated_tokens_per_s']:9.1f} {r['groups']:6d} {r['load_avg_1min_before']:5.2f}")
        else:
            same = "yes" if r["identical_data"] else (
                f"tokens, texts and picks yes, log-probs within {r['max_abs_logprob_diff']:.1e}"
                if r["identical_but_logprobs"] else "no")
            print(f"{r['arm']:34s} ratio {r['speedup_tasks_per_min']:.2f}x, saved {r['wall_s_saved']:.1f} s, "
                  f"identical data: {same}")
    path = append_rows("w6", [{**base, **r} for r in rows])
    print(f"rows appended to {path}")


if __name__ == "__main__":
    main()
