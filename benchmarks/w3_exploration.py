"""W3 (BENCHMARKS.md): exploration step sampling, SPORT's way vs generate(K) vs the prefix-caching sampler.

CPU (default): SmolLM2-135M-Instruct, fp32; 4 trajectories x 4 steps x K = 5 candidates x 96 new tokens
(exactly: no early stop), context >= 1,000 tokens (a system prompt listing the tools).
GPU (``--model qwen2-1.5b``): the Qwen2-1.5B configuration, random init, bf16; 16 trajectories x 4 steps x K = 5
x 256 new tokens, random contexts of 3,000 tokens; ``--trajectories/--steps/--new-tokens/--context`` shrink it.
After each step the trajectory continues with candidate 0 and a fixed observation.

  (a) SPORT's way: generate() for candidate 0 at temperature 0.7, then generate(num_return_sequences=K-1)
      at 1.2, each re-prefilling the whole context (and generate expands the prompt K-fold before prefill);
  (b) generate(num_return_sequences=K) once per step;
  (c) sport_fast.sampler.prefix_sampler.PrefixSampler, one trajectory at a time: one prefill per trajectory,
      K siblings from its KV, commit;
  (d) the same sampler with the trajectories batched (``sample_many``): K x trajectories rows per decode forward;
  (e) (d) with decode="graph" (the step captured as a CUDA graph; ``backends.decode_mode`` runs "static",
      uncaptured, without CUDA: the row says which ran);
  (f) (d) with every trajectory's whole context prefilled (``share_prompt=False``): what (d) was before the
      sampler prefilled the prompt the trajectories share once (with SmolLM2 they share the system prompt;
      the random contexts of --smoke and the GPU shape share nothing, so there (f) equals (d)).
  A batched step's wall time is shared equally by the trajectories in it.

On the CPU each peer runs in its own process (peak RSS is its own); on CUDA and in --smoke all run in one
process on one model, peak memory per peer from the CUDA allocator. On CUDA the sampler's peers run the model
as the loader gives a run (``attn_implementation`` auto: FlexAttention; the sampler's cached forwards run SDPA
on such a model), generate() runs it on SDPA. Usage:
    python benchmarks/w3_exploration.py                  # CPU, SmolLM2
    python benchmarks/w3_exploration.py --model qwen2-1.5b [--trajectories 4 --steps 2 --new-tokens 64]
    python benchmarks/w3_exploration.py --smoke          # tiny random model, every peer once
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import append_rows, peak_gib, peak_rss_mib, reset_peak, results_dir, stamp  # noqa: E402

SHAPES = {"smollm2": {"trajectories": 4, "steps": 4, "k": 5, "new_tokens": 96, "min_context": 1000},
          "qwen2-1.5b": {"trajectories": 16, "steps": 4, "k": 5, "new_tokens": 256, "min_context": 3000},
          "smoke": {"trajectories": 2, "steps": 2, "k": 3, "new_tokens": 4, "min_context": 40}}
RANDOM_MODELS = {"qwen2-1.5b": dict(vocab_size=151_936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                    num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
                 "smoke": dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)}
TOOLS = [("count_objects", "path: str, colour: str", "count connected regions of one colour in an image"),
         ("image_size", "path: str", "width and height of an image in pixels"),
         ("crop", "path: str, box: tuple[int, int, int, int]", "crop an image and save it, returning the new path"),
         ("colour_histogram", "path: str, bins: int", "per-channel colour histogram"),
         ("ocr", "path: str", "text printed in the image, via Tesseract"),
         ("read_file", "path: str", "text of a text, CSV, JSON or PDF file"),
         ("calculator", "expression: str", "evaluate an arithmetic expression exactly"),
         ("final_answer", "answer: str", "end the task with this answer")]
OBSERVATION = "\nObservation: (640, 480)\n"
ORDER = "dfecba"  # the batched sampler first (the others' ratios are to it), then by expected speed
NAMES = {"a": "(a) SPORT: generate x2, re-prefill", "b": "(b) generate(num_return_sequences=K)",
         "c": "(c) sport_fast PrefixSampler", "d": "(d) sport_fast PrefixSampler, batched",
         "e": "(e) sport_fast PrefixSampler, batched, decode=graph",
         "f": "(f) sport_fast PrefixSampler, batched, each context prefilled whole"}


# -- models and contexts ---------------------------------------------------------------------------
def load(model_name: str):
    """(model, tokenizer or None, device): SmolLM2 from its package, or a random-init configuration."""
    if model_name == "smollm2":
        from sport_fast.model.loader import load_smollm2
        return (*load_smollm2(), "cpu")
    from transformers import Qwen2Config, Qwen2ForCausalLM
    device = "cuda" if model_name != "smoke" and torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    cfg = Qwen2Config(**RANDOM_MODELS[model_name], max_position_embeddings=32768, attn_implementation="sdpa")
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16 if device == "cuda" else torch.float32)
    return model.eval(), None, device


def contexts(tok, shape, vocab: int) -> list[list[int]]:
    """One context per trajectory, each at least ``min_context`` tokens: chat-templated tool docs with a
    tokenizer, random ids without one."""
    if tok is None:
        rng = random.Random(0)
        return [[rng.randrange(vocab) for _ in range(shape["min_context"])] for _ in range(shape["trajectories"])]
    lines = [f"- {name}({sig}) -> {doc}. Example: print({name}(...))" for name, sig, doc in TOOLS]
    system = ("You are an agent that solves tasks by writing Python code that calls tools. At each step write "
              "'Thought:' with your reasoning, then one fenced Python block ending with <end_action>. "
              "Tools:\n" + "\n".join(lines))
    out = []
    for i in range(shape["trajectories"]):
        user = f"Task {i}: how many red squares are in image_{i}.png, and what is their total area?"
        padding = ""
        while True:
            msgs = [{"role": "system", "content": system + padding}, {"role": "user", "content": user}]
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            if len(ids) >= shape["min_context"]:
                out.append(ids)
                break
            padding += "\n" + "\n".join(lines)  # the tool list repeated as longer documentation
    return out


def observation(tok) -> list[int]:
    return tok.encode(OBSERVATION, add_special_tokens=False) if tok is not None else [5, 6, 7, 8, 9, 10, 11, 12]


# -- peers -----------------------------------------------------------------------------------------
def hf_generate(model, ids, n, temperature, seed, new):
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    out = model.generate(torch.tensor([ids], device=device), do_sample=True, temperature=temperature,
                         num_return_sequences=n, max_new_tokens=new, min_new_tokens=new, pad_token_id=0, top_k=0)
    return out[:, len(ids):].tolist(), n * len(ids)  # generate expands the prompt n-fold before prefill


def run_hf(model, tok, peer, shape, sync):
    obs, k, new = observation(tok), shape["k"], shape["new_tokens"]
    steps = []
    for t, ctx in enumerate(contexts(tok, shape, model.config.vocab_size)):
        for s in range(shape["steps"]):
            sync()
            t0 = time.perf_counter()
            if peer == "a":
                first, p0 = hf_generate(model, ctx, 1, 0.7, 100 * t + s, new)
                rest, p1 = hf_generate(model, ctx, k - 1, 1.2, 100 * t + s + 50, new)
                cands, prefilled = first + rest, p0 + p1
            else:
                cands, prefilled = hf_generate(model, ctx, k, 1.0, 100 * t + s, new)
            sync()
            steps.append({"seconds": time.perf_counter() - t0, "context": len(ctx), "prefilled": prefilled,
                          "generated": sum(map(len, cands)), "step": s})
            ctx = ctx + cands[0] + obs
    return steps, None


def _params(t, s, shape):
    from sport_fast.sampler.sampling import SamplingParams
    new = shape["new_tokens"]
    return [SamplingParams(temperature=0.7, max_new_tokens=new, seed=1000 * t + 10 * s)] + \
           [SamplingParams(temperature=1.2, max_new_tokens=new, seed=1000 * t + 10 * s + i) for i in range(1, shape["k"])]


def run_ours(model, tok, peer, shape, sync):
    from sport_fast.backends import decode_mode
    from sport_fast.sampler.prefix_sampler import PrefixSampler
    obs, mode = observation(tok), "graph" if peer == "e" else "dynamic"
    sampler, steps = PrefixSampler(model, tok, seed=0, decode=mode, share_prompt=peer != "f"), []
    trajs = [sampler.start(ctx) for ctx in contexts(tok, shape, model.config.vocab_size)]
    groups = [list(range(len(trajs)))] if peer in "def" else [[t] for t in range(len(trajs))]
    for group in groups:
        for s in range(shape["steps"]):
            sync()
            t0 = time.perf_counter()
            results = sampler.sample_many([(trajs[t], _params(t, s, shape)) for t in group])
            for t in group:  # the chosen step's observation prefill belongs to this step's cost
                sampler.commit(trajs[t], 0, obs)
            sync()
            seconds = (time.perf_counter() - t0) / len(group)
            for t, cands in zip(group, results):
                c = trajs[t].steps[-1]
                steps.append({"seconds": seconds, "context": c.context_tokens, "prefilled": c.prefilled_tokens,
                              "generated": sum(len(x.token_ids) for x in cands), "step": s})
    return steps, decode_mode(mode, next(model.parameters()).device)


def run_peer(peer: str, loaded, shape, own_process: bool = False) -> dict:
    """One peer's steps and its peak memory: CUDA allocator peak, or (alone in a process) peak RSS."""
    model, tok, device = loaded
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:  # the sampler's model as the loader gives a run (FlexAttention on CUDA); generate() on SDPA, as SPORT
        from sport_fast.model.loader import resolve_attention
        model.set_attn_implementation((resolve_attention("auto") or "sdpa") if peer in "cdef" else "sdpa")
    base = reset_peak(cuda)
    with torch.no_grad():
        steps, decode = run_ours(model, tok, peer, shape, sync) if peer in "cdef" else run_hf(model, tok, peer, shape, sync)
    return {"peer": peer, "steps": steps, "decode": decode, "peak_rss_mib": peak_rss_mib() if own_process else None,
            "peak_mem_above_model_gib": peak_gib(cuda, base)}


def summarise(result: dict) -> dict:
    steps = result["steps"]
    later = [s for s in steps if s["step"] > 0] or steps  # steps after each trajectory's first
    total = sum(s["seconds"] for s in steps)
    return {"peer": NAMES[result["peer"]], "decode": result["decode"], "seconds_per_step": total / len(steps),
            "generated_tokens_per_s": sum(s["generated"] for s in steps) / total,
            "prefilled_per_context_token": sum(s["prefilled"] for s in steps) / sum(s["context"] for s in steps),
            "cache_reuse_after_first_step": 1 - sum(s["prefilled"] for s in later) / sum(s["context"] for s in later),
            "mean_context_tokens": sum(s["context"] for s in steps) / len(steps),
            "peak_rss_mib": result["peak_rss_mib"], "peak_mem_above_model_gib": result["peak_mem_above_model_gib"]}


# -- the run ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["smollm2", "qwen2-1.5b"], default="smollm2")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, tiny shapes, in one process")
    parser.add_argument("--peers", nargs="+", default=list(NAMES), choices=list(NAMES))
    for key in ("trajectories", "steps", "k", "new_tokens"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, dest=key)
    parser.add_argument("--context", type=int, dest="min_context", help="context tokens (at least)")
    parser.add_argument("--peer", choices=list(NAMES), help=argparse.SUPPRESS)  # one CPU peer in a child
    args = parser.parse_args()
    name = "smoke" if args.smoke else args.model
    shape = {**SHAPES[name], **{k: v for k, v in vars(args).items() if k in SHAPES[name] and v is not None}}
    if args.peer:
        print(json.dumps(run_peer(args.peer, load(name), shape, own_process=True)))
        return
    if name == "qwen2-1.5b" and not torch.cuda.is_available():
        raise SystemExit("--model qwen2-1.5b is the GPU variant of W3: it needs CUDA")
    base = {**stamp(), "workload": "W3-gpu" if name == "qwen2-1.5b" else "W3-cpu", "smoke": args.smoke,
            "model": {"smollm2": "SmolLM2-135M-Instruct fp32", "qwen2-1.5b": "Qwen2-1.5B config, random init, bf16",
                      "smoke": "tiny random Qwen2 fp32"}[name], "shape": shape}
    rows = []
    for result in results(name, sorted(args.peers, key=ORDER.index), shape):  # (d) first: the rest relate to it
        rows.append(_relate(summarise(result), rows[0] if rows and rows[0]["peer"] == NAMES["d"] else None))
        append_rows("w3", [{**base, **rows[-1]}])
    report(rows)
    print(f"rows appended to {results_dir() / 'w3.jsonl'}")


def results(name: str, peers: list[str], shape: dict):
    """Every peer's steps, one peer at a time: in this process on CUDA and in smoke runs, else in a child
    process per peer (its peak RSS its own)."""
    if name != "smollm2":
        loaded = load(name)
        yield from (run_peer(p, loaded, shape) for p in peers)
        return
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in shape.items() if k != "min_context"] + \
        [f"--context={shape['min_context']}"]
    for p in peers:
        yield json.loads(subprocess.run([sys.executable, __file__, "--peer", p, *flags], check=True, capture_output=True,
                                        text=True).stdout.splitlines()[-1])


def _relate(row: dict, ours: dict | None) -> dict:
    """Seconds per step over the batched sampler's (d), which runs first (no ratio when (d) was not run)."""
    ours = row if row["peer"] == NAMES["d"] else ours
    if ours is not None:
        row["time_ratio_vs_sport_fast"] = row["seconds_per_step"] / ours["seconds_per_step"]
    return row


def report(rows: list[dict]) -> None:
    print(f"{'peer':52s} {'s/step':>7s} {'gen tok/s':>9s} {'prefill/ctx':>11s} {'reuse>1st':>9s} {'ctx':>6s} "
          f"{'MiB/GiB':>8s} {'x vs ours':>9s}")
    for r in rows:
        mem = r["peak_rss_mib"] if r["peak_rss_mib"] is not None else r["peak_mem_above_model_gib"]
        print(f"{r['peer']:52s} {r['seconds_per_step']:7.2f} {r['generated_tokens_per_s']:9.1f} "
              f"{r['prefilled_per_context_token']:11.3f} {r['cache_reuse_after_first_step']:9.3f} "
              f"{r['mean_context_tokens']:6.0f} {format(mem, '8.1f') if mem is not None else '-':>8s} "
              f"{format(r['time_ratio_vs_sport_fast'], '9.2f') if 'time_ratio_vs_sport_fast' in r else '-':>9s}" + (f"  decode {r['decode']}" if r["decode"] else ""))


if __name__ == "__main__":
    main()
