"""W3 (BENCHMARKS.md), CPU: exploration step sampling, SPORT's way vs generate(K) vs the prefix-caching sampler.

SmolLM2-135M-Instruct, fp32; 4 trajectories x 4 steps x K = 5 candidates x 96 new tokens (exactly: no early
stop), context >= 1,000 tokens (a system prompt listing the tools). After each step the trajectory continues
with candidate 0 and a fixed observation.

  (a) SPORT's way: generate() for candidate 0 at temperature 0.7, then generate(num_return_sequences=4) at
      1.2, each re-prefilling the whole context (and generate expands the prompt K-fold before prefill);
  (b) generate(num_return_sequences=5) once per step;
  (c) sport_fast.sampler.prefix_sampler.PrefixSampler, one trajectory at a time: one prefill per trajectory, K siblings
      from its KV, commit;
  (d) the same sampler with the 4 trajectories batched (``sample_many``): 20 rows per decode forward.
  A batched step's wall time is shared equally by the trajectories in it.

Each peer runs in its own process (peak memory is its own). Usage: python benchmarks/w3_exploration.py
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import append_rows, peak_rss_mib, stamp  # noqa: E402

SHAPE = {"trajectories": 4, "steps": 4, "k": 5, "new_tokens": 96, "min_context": 1000}
TOOLS = [("count_objects", "path: str, colour: str", "count connected regions of one colour in an image"),
         ("image_size", "path: str", "width and height of an image in pixels"),
         ("crop", "path: str, box: tuple[int, int, int, int]", "crop an image and save it, returning the new path"),
         ("colour_histogram", "path: str, bins: int", "per-channel colour histogram"),
         ("ocr", "path: str", "text printed in the image, via Tesseract"),
         ("read_file", "path: str", "text of a text, CSV, JSON or PDF file"),
         ("calculator", "expression: str", "evaluate an arithmetic expression exactly"),
         ("final_answer", "answer: str", "end the task with this answer")]
OBSERVATION = "\nObservation: (640, 480)\n"


def contexts(tok) -> list[list[int]]:
    """One chat-templated context per trajectory, each at least SHAPE['min_context'] tokens."""
    lines = [f"- {name}({sig}) -> {doc}. Example: print({name}(...))" for name, sig, doc in TOOLS]
    system = ("You are an agent that solves tasks by writing Python code that calls tools. At each step write "
              "'Thought:' with your reasoning, then one fenced Python block ending with <end_action>. "
              "Tools:\n" + "\n".join(lines))
    out = []
    for i in range(SHAPE["trajectories"]):
        user = f"Task {i}: how many red squares are in image_{i}.png, and what is their total area?"
        padding = ""
        while True:
            msgs = [{"role": "system", "content": system + padding}, {"role": "user", "content": user}]
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            if len(ids) >= SHAPE["min_context"]:
                out.append(ids)
                break
            padding += "\n" + "\n".join(lines)  # the tool list repeated as longer documentation
    return out


def hf_generate(model, ids, n, temperature, seed):
    torch.manual_seed(seed)
    new = SHAPE["new_tokens"]
    out = model.generate(torch.tensor([ids]), do_sample=True, temperature=temperature, num_return_sequences=n,
                         max_new_tokens=new, min_new_tokens=new, pad_token_id=0, top_k=0)
    return out[:, len(ids):].tolist(), n * len(ids)  # generate expands the prompt n-fold before prefill


def run_hf(model, tok, peer):
    obs = tok.encode(OBSERVATION, add_special_tokens=False)
    steps = []
    for t, ctx in enumerate(contexts(tok)):
        for s in range(SHAPE["steps"]):
            t0 = time.perf_counter()
            if peer == "a":
                first, p0 = hf_generate(model, ctx, 1, 0.7, seed=100 * t + s)
                rest, p1 = hf_generate(model, ctx, SHAPE["k"] - 1, 1.2, seed=100 * t + s + 50)
                cands, prefilled = first + rest, p0 + p1
            else:
                cands, prefilled = hf_generate(model, ctx, SHAPE["k"], 1.0, seed=100 * t + s)
            steps.append({"seconds": time.perf_counter() - t0, "context": len(ctx), "prefilled": prefilled,
                          "generated": sum(map(len, cands)), "step": s})
            ctx = ctx + cands[0] + obs
    return steps


def _params(t, s):
    from sport_fast.sampler.sampling import SamplingParams
    new = SHAPE["new_tokens"]
    return [SamplingParams(temperature=0.7, max_new_tokens=new, seed=1000 * t + 10 * s)] + \
           [SamplingParams(temperature=1.2, max_new_tokens=new, seed=1000 * t + 10 * s + i)
            for i in range(1, SHAPE["k"])]


def run_ours(model, tok, batched: bool):
    from sport_fast.sampler.prefix_sampler import PrefixSampler
    obs = tok.encode(OBSERVATION, add_special_tokens=False)
    sampler, steps = PrefixSampler(model, tok, seed=0), []
    trajs = [sampler.start(ctx) for ctx in contexts(tok)]
    groups = [list(range(len(trajs)))] if batched else [[t] for t in range(len(trajs))]
    for group in groups:
        for s in range(SHAPE["steps"]):
            t0 = time.perf_counter()
            results = sampler.sample_many([(trajs[t], _params(t, s)) for t in group])
            for t in group:  # the chosen step's observation prefill belongs to this step's cost
                sampler.commit(trajs[t], 0, obs)
            seconds = (time.perf_counter() - t0) / len(group)
            for t, cands in zip(group, results):
                c = trajs[t].steps[-1]
                steps.append({"seconds": seconds, "context": c.context_tokens, "prefilled": c.prefilled_tokens,
                              "generated": sum(len(x.token_ids) for x in cands), "step": s})
    return steps


def run_peer(peer: str) -> dict:
    from sport_fast.model.loader import load_smollm2
    model, tok = load_smollm2()
    with torch.no_grad():
        steps = run_ours(model, tok, peer == "d") if peer in "cd" else run_hf(model, tok, peer)
    return {"peer": peer, "steps": steps, "peak_rss_mib": peak_rss_mib()}


NAMES = {"a": "(a) SPORT: generate x2, re-prefill", "b": "(b) generate(num_return_sequences=5)",
         "c": "(c) sport_fast PrefixSampler", "d": "(d) sport_fast PrefixSampler, 4 batched"}


def summarise(result: dict) -> dict:
    steps = result["steps"]
    later = [s for s in steps if s["step"] > 0]  # steps after each trajectory's first
    total = sum(s["seconds"] for s in steps)
    return {"peer": NAMES[result["peer"]], "seconds_per_step": total / len(steps),
            "generated_tokens_per_s": sum(s["generated"] for s in steps) / total,
            "prefilled_per_context_token": sum(s["prefilled"] for s in steps) / sum(s["context"] for s in steps),
            "cache_reuse_after_first_step": 1 - sum(s["prefilled"] for s in later) / sum(s["context"] for s in later),
            "mean_context_tokens": sum(s["context"] for s in steps) / len(steps),
            "peak_rss_mib": result["peak_rss_mib"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", choices=list(NAMES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        print(json.dumps(run_peer(args.peer)))
        return
    rows = [summarise(json.loads(subprocess.run([sys.executable, __file__, "--peer", p], check=True,
                                                capture_output=True, text=True).stdout.splitlines()[-1]))
            for p in NAMES]
    base = {**stamp(), "workload": "W3-cpu", "model": "SmolLM2-135M-Instruct fp32", "shape": SHAPE}
    ours = rows[-1]["seconds_per_step"]  # the batched sampler, as exploration runs it
    print(f"{'peer':40s} {'s/step':>7s} {'gen tok/s':>9s} {'prefill/ctx':>11s} {'reuse>1st':>9s} {'ctx':>6s} "
          f"{'RSS MiB':>8s} {'x vs ours':>9s}")
    for r in rows:
        r["time_ratio_vs_sport_fast"] = r["seconds_per_step"] / ours
        print(f"{r['peer']:40s} {r['seconds_per_step']:7.2f} {r['generated_tokens_per_s']:9.1f} "
              f"{r['prefilled_per_context_token']:11.3f} {r['cache_reuse_after_first_step']:9.3f} "
              f"{r['mean_context_tokens']:6.0f} {r['peak_rss_mib']:8.0f} {r['time_ratio_vs_sport_fast']:9.2f}")
    print(f"rows appended to {append_rows('w3', [{**base, **r} for r in rows])}")


if __name__ == "__main__":
    main()
