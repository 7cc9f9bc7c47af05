"""The device checks of ``gpu_check.sh`` that are neither kernel tests nor benchmarks, one section per call.

    env      versions, nvidia-smi, the device's properties, its bf16 matmul rate and copy bandwidth
    compile  ``torch.library.opcheck`` of the kernel's custom ops (every gate and backward variant) and
             ``torch.compile(fullgraph=True)`` through ``linear_logprobs`` (trainable and frozen weight) against eager
    flex     the tree-packed step-DPO loss on the Qwen2-1.5B configuration (random init, a small packed tree):
             FlexAttention BlockMask against the dense mask, forward (hidden states, loss) and backward (every
             parameter's gradient), each bf16 run's error against an fp32 dense run of the same weights
    decode   the sampler's decode modes (static, graph = CUDA-graph replay) against dynamic on the same fed
             tokens, twice (the second call replays the first's graph on reloaded buffers), and dynamic against
             an uncached forward; greedy candidates of each mode; ms per decode step
    summary  the table of every row under the output folder (``summary.py``)

Each check is a JSON row ``{"section", "check", "ok", ...}`` appended to ``$SPORT_BENCH_OUT/checks.jsonl``;
``ok`` is None for a figure that is reported, not judged. ``--smoke`` (or no CUDA) runs tiny shapes on the CPU:
the same code paths, the Triton kernel through its interpreter, no CUDA graph (graph runs as static), no
FlexAttention backward (the CPU has none).

    python benchmarks/gpu_check.py flex [--smoke]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from common import append_rows, matmul_tflops, median_ms, stamp  # noqa: E402

QWEN2_1_5B = dict(vocab_size=151_936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True)
TINY = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=True)


class Checks:
    """The rows of one section: ``run(name, fn)`` appends fn's dict, or the error it raised, as soon as it is
    known (a section cut at its time cap keeps the rows it made)."""

    def __init__(self, section: str, base: dict):
        self.section, self.base, self.rows = section, base, []

    def run(self, check: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            row = {"ok": None, **fn()}
        except Exception as err:  # noqa: BLE001 - a failed check is a row, and the section goes on
            row = {"ok": False, "error": f"{type(err).__name__}: {str(err)[:300]}",
                   "traceback": traceback.format_exc()[-1500:]}
        row = {"section": self.section, "check": check, **row, "seconds": round(time.perf_counter() - t0, 2)}
        print(json.dumps({k: v for k, v in row.items() if k != "traceback"}, default=str)[:700], flush=True)
        append_rows("checks", [{**self.base, **row}])
        self.rows.append(row)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def random_model(cfg: dict, device: str, dtype, attn: str = "sdpa", seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    config = Qwen2Config(**cfg, max_position_embeddings=32768, attn_implementation=attn)
    with torch.device(device):
        return Qwen2ForCausalLM(config).to(dtype)


# -- env -------------------------------------------------------------------------------------------
def env_section(checks: Checks, cuda: bool) -> None:
    checks.run("versions", lambda: {"python": platform.python_version(), **_versions()})
    checks.run("cuda available", lambda: {"ok": cuda or None, "cuda": torch.cuda.is_available(),
                                          "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET")})
    checks.run("interpreter and numpy", _interpreter_numpy)
    checks.run("native trie", _native_trie)
    if cuda:
        checks.run("nvidia-smi", _nvidia_smi)
        checks.run("device", _device_properties)
        checks.run("bf16 matmul 8192^3", lambda: {"tflops": matmul_tflops(True)})
        checks.run("device-to-device copy 1 GiB", _copy_bandwidth)


def _versions() -> dict:
    from importlib import metadata
    out = {"cuda": torch.version.cuda}
    for dist in ("torch", "triton", "transformers", "peft", "numpy", "liger-kernel", "cut-cross-entropy", "deepspeed"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _interpreter_numpy() -> dict:
    """Triton < 3.7's interpreter fails with numpy >= 2.4 (``backends.interpreter_problem``): smoke runs on such
    a machine (the GPU image) cannot run kernels; a failure only when this run interprets."""
    import numpy
    try:
        import triton
    except ImportError:
        return {"note": "triton is not installed"}
    version = lambda v: tuple(int(x) for x in v.split(".")[:2])  # noqa: E731
    clash = version(triton.__version__) < (3, 7) and version(numpy.__version__) >= (2, 4)
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    return {"ok": False if clash and interpreting else None, "triton": triton.__version__, "numpy": numpy.__version__,
            "note": "this Triton's interpreter fails with this numpy: smoke runs here cannot run kernels" if clash else ""}


def _native_trie() -> dict:
    from sport_fast import backends
    return {"built": backends.NATIVE_TRIE is not None, "error": str(backends.NATIVE_TRIE_ERROR or "")}


def _nvidia_smi() -> dict:
    query = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu,memory.used"
    out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                         text=True, timeout=30)
    return {"query": query, "answer": out.stdout.strip() or out.stderr.strip()}


def _device_properties() -> dict:
    p = torch.cuda.get_device_properties(0)
    return {"name": p.name, "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
            "memory_gib": p.total_memory / 2**30, "l2_mib": getattr(p, "L2_cache_size", 0) / 2**20}


def _copy_bandwidth() -> dict:
    x = torch.randint(0, 255, (2**30,), dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = median_ms(lambda: y.copy_(x), True, budget_ms=200.0)
    return {"tb_per_s_read_plus_write": 2 * 2**30 / (ms * 1e-3) / 1e12}


# -- compile ---------------------------------------------------------------------------------------
def compile_section(checks: Checks, cuda: bool) -> None:
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(40, 64, generator=g).to(device, dtype)
    weight = torch.randn(300, 64, generator=g).to(device, dtype) / 8
    targets = torch.randint(0, 300, (40,), generator=g).to(device)
    checks.run("opcheck", lambda: _opcheck(hidden, weight, targets, every_case=cuda))
    for backend in ("aot_eager", "inductor") if cuda else ("aot_eager",):
        for frozen in (False, True):
            checks.run(f"compile fullgraph {backend}, {'frozen' if frozen else 'trainable'} weight",
                       lambda b=backend, f=frozen: _compiled_vs_eager(hidden, weight, targets, b, f))


def _opcheck(hidden, weight, targets, every_case: bool) -> dict:
    """Both ops; the backward for every variant and gradient gate (smoke: one of each, the interpreter is slow)."""
    from sport_fast.kernels.linear_logprobs import BACKWARD_VARIANTS, _bwd_op, _fwd_op
    torch.library.opcheck(_fwd_op, (hidden, weight, targets))
    _, lse = _fwd_op(hidden, weight, targets)
    grad = torch.randn(hidden.shape[0], device=hidden.device)
    gates = ((True, True), (True, False), (False, True))
    done = 0
    for variant in BACKWARD_VARIANTS if every_case else BACKWARD_VARIANTS[:1]:
        for need_dh, need_dw in gates if every_case else gates[:1]:
            torch.library.opcheck(_bwd_op, (hidden, weight, targets, lse, grad, need_dh, need_dw, variant))
            done += 1
    return {"ok": True, "backward_cases": done, "dtype": str(hidden.dtype)}


def _compiled_vs_eager(hidden, weight, targets, backend: str, frozen: bool) -> dict:
    import torch._dynamo
    from sport_fast.kernels import linear_logprobs
    grad = torch.randn(hidden.shape[0], device=hidden.device)
    loss = lambda h, w, t: (linear_logprobs(h, w, t, impl="triton") * grad).sum()  # noqa: E731
    torch._dynamo.reset()
    compiled = torch.compile(loss, backend=backend, fullgraph=True)
    got, want = (_value_and_grads(fn, hidden, weight, targets, frozen) for fn in (compiled, loss))
    diffs = {"value_rel": rel(got[0], want[0]), "d_hidden_rel": rel(got[1], want[1])}
    if not frozen:
        diffs["d_weight_rel"] = rel(got[2], want[2])
    return {"ok": max(diffs.values()) < 1e-3, **diffs}


def _value_and_grads(fn, hidden, weight, targets, frozen):
    h, w = hidden.detach().requires_grad_(), weight.detach().requires_grad_(not frozen)
    value = fn(h, w, targets)
    value.backward()
    return value.detach(), h.grad, w.grad


# -- flex ------------------------------------------------------------------------------------------
def flex_section(checks: Checks, cuda: bool) -> None:
    device, cfg = ("cuda", QWEN2_1_5B) if cuda else ("cpu", TINY)
    groups = _small_groups(cfg["vocab_size"], cuda)
    runs = {}
    for name, dtype, attn in (("dense fp32", torch.float32, "dense"), ("dense", _low(cuda), "dense"),
                              ("flex", _low(cuda), "flex")):
        checks.run(f"tree step, {name}", lambda n=name, d=dtype, a=attn: _tree_run(runs, n, cfg, groups, device, d, a))
    checks.run("flex vs dense, against fp32", lambda: _flex_verdict(runs, cuda))


def _low(cuda: bool):
    return torch.bfloat16 if cuda else torch.float32


def _small_groups(vocab: int, cuda: bool):
    """3 step groups (4 candidates, 2 sharing a stem) and one trajectory continuation: ~1.5k tokens on CUDA."""
    from sport_fast import StepGroup
    rng = random.Random(0)
    ids = lambda n: [rng.randrange(vocab) for _ in range(n)]  # noqa: E731
    ctx, cand = ((300, 500), (20, 80)) if cuda else ((10, 20), (2, 6))
    groups = []
    for _ in range(3):
        stem = ids(3)
        cands = [stem + ids(rng.randint(*cand)) if k % 2 else ids(rng.randint(*cand)) for k in range(4)]
        groups.append(StepGroup(context_ids=ids(rng.randint(*ctx)), candidate_ids=cands, chosen=0, rejected=[1, 2, 3],
                                ref_logps=[-rng.uniform(50, 400) for _ in range(4)]))
    first = groups[0]
    groups.append(StepGroup(context_ids=first.context_ids + first.candidate_ids[0] + ids(12),
                            candidate_ids=[ids(7), ids(11)], chosen=1, rejected=[0], ref_logps=[-100.0, -150.0]))
    return groups


def _tree_run(runs: dict, name: str, cfg: dict, groups, device: str, dtype, attn: str) -> dict:
    """Hidden states, loss and every gradient of one tree-packed step-DPO forward + backward."""
    from sport_fast.dpo.step_loss import tree_step_dpo_loss
    from sport_fast.tree.batch import make_tree_batch
    from sport_fast.tree.forward import tree_hidden_states
    model = random_model(cfg, device, dtype, "flex_attention" if attn == "flex" else "sdpa").train()
    batch = make_tree_batch(model, groups, candidates="paired")
    backward = device == "cuda" or attn != "flex"  # FlexAttention has no backward on the CPU
    with torch.no_grad():
        hidden = tree_hidden_states(model, batch, attn=attn)
    with torch.set_grad_enabled(backward):
        loss, _ = tree_step_dpo_loss(model, batch, groups, beta=0.1, attn=attn)
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True) if backward else None
    runs[name] = {"hidden": hidden.detach().float(), "loss": loss.detach().double(),
                  "grads": [x.float() if x is not None else None for x in grads] if grads else None}
    del model
    return {"packed_tokens": int(batch.tree.num_tokens), "loss": loss.item(), "dtype": str(dtype),
            "backward": backward}


def _flex_verdict(runs: dict, cuda: bool) -> dict:
    """Each figure of flex against fp32 dense within twice dense's own (same dtype), plus a floor."""
    ref, dense, flex = runs["dense fp32"], runs["dense"], runs["flex"]
    figures = {"hidden_rel": [rel(r["hidden"], ref["hidden"]) for r in (flex, dense)],
               "loss_abs": [abs(r["loss"] - ref["loss"]).item() for r in (flex, dense)]}
    if flex["grads"] is not None:
        figures["grad_rel_max"] = [max(_grad_errors(r["grads"], ref["grads"])) for r in (flex, dense)]
    floor = 1e-3 if cuda else 1e-5
    out = {f"{name}_{who}": value for name, pair in figures.items() for who, value in zip(("flex", "dense"), pair)}
    out["ok"] = all(f <= 2 * d + floor for f, d in figures.values())
    if flex["grads"] is None:
        out["note"] = "no FlexAttention backward on the CPU: forward compared only"
    return out


def _grad_errors(grads, ref) -> list[float]:
    return [rel(g, r) for g, r in zip(grads, ref) if g is not None and r is not None and r.norm() > 0]


# -- decode ----------------------------------------------------------------------------------------
def decode_section(checks: Checks, cuda: bool) -> None:
    device = "cuda" if cuda else "cpu"
    cfg, lengths, steps = (QWEN2_1_5B, (37, 300, 1000), 16) if cuda else (TINY, (5, 20, 40), 4)
    for dtype in ((torch.float32, torch.bfloat16) if cuda else (torch.float32,)):
        model = random_model(cfg, device, dtype).eval()
        checks.run(f"decode step vs dynamic, {str(dtype)[6:]}", lambda m=model: _decode_steps(m, lengths, steps, device))
        checks.run(f"greedy candidates vs dynamic, {str(dtype)[6:]}", lambda m=model: _greedy(m, lengths, device))
        del model


@torch.no_grad()
def _decode_steps(model, lengths, steps: int, device: str) -> dict:
    """Feed the same random tokens through every mode's decode steps, twice on fresh contexts of the same
    lengths (the second call reuses the first's decoder: its captured graph is replayed on reloaded buffers);
    the worst log-prob difference per mode over both calls, and ms per step of the second."""
    from sport_fast.backends import decode_mode
    decoders = {mode: {} for mode in DECODE_MODES}  # kept across the calls, as the sampler keeps them
    ran = {mode: decode_mode(mode, torch.device(device)) for mode in DECODE_MODES}
    row = {f"{m}_ran_as": ran[m] for m in DECODE_MODES[1:]}
    for call in (1, 2):
        contexts, repeats, feed, positions, caches = _decode_inputs(model, lengths, steps, device, seed=call)
        got, ms = {}, {}
        for mode in DECODE_MODES:
            got[mode], ms[mode] = _run_steps(model, ran[mode], caches, repeats, feed, positions, decoders[mode])
        figures = {"dynamic_vs_uncached": _logp_diff(got["dynamic"], _uncached(model, contexts, repeats, feed)),
                   **{f"{m}_vs_dynamic": _logp_diff(got[m], got["dynamic"]) for m in DECODE_MODES[1:]}}
        row.update({k: max(v, row.get(k, 0.0)) for k, v in figures.items()})
    row.update({f"{m}_ms_per_step": t for m, t in ms.items()})
    tol = max(2 * row["dynamic_vs_uncached"], 1e-3 if model.dtype == torch.float32 else 5e-2)
    row["ok"] = all(row[f"{m}_vs_dynamic"] <= tol for m in DECODE_MODES[1:])
    return row


DECODE_MODES = ("dynamic", "static", "graph")


def _decode_inputs(model, lengths, steps: int, device: str, seed: int):
    """Random contexts (prefilled into growing caches), K per context, random tokens to feed, positions."""
    from sport_fast.sampler.growing_cache import growing_cache
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    contexts = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]
    repeats = [3, 1, 4][:len(contexts)]
    caches = [_prefill(model, c, growing_cache(model.config), device) for c in contexts]
    feed = torch.randint(0, vocab, (sum(repeats), steps), generator=g).to(device)
    positions = torch.tensor([n for n, k in zip(lengths, repeats) for _ in range(k)], device=device)[:, None]
    return contexts, repeats, feed, positions, caches


def _logp_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.log_softmax(-1) - b.log_softmax(-1)).abs().max().item()


def _prefill(model, ids, cache, device):
    model(input_ids=torch.tensor([ids], device=device), past_key_values=cache, use_cache=True, logits_to_keep=1)
    return cache


def _run_steps(model, mode, caches, repeats, feed, positions, decoders):
    """(rows, steps, V) logits after each fed token, and the median ms of the steps after the first."""
    from sport_fast.sampler.decode_steps import decode_steps
    backend = decode_steps(mode, model, caches, repeats, capacity=feed.shape[1], decoders=decoders)
    logits, times = [], []
    for i in range(feed.shape[1]):
        sync(str(feed.device.type))
        t0 = time.perf_counter()
        logits.append(backend.step(feed[:, i:i + 1], positions + i, i))
        sync(str(feed.device.type))
        times.append(1e3 * (time.perf_counter() - t0))
    later = sorted(times[1:]) or times
    return torch.stack(logits, 1), later[len(later) // 2]


def _uncached(model, contexts, repeats, feed):
    """The same logits from one plain forward of context + fed tokens per row (what training computes)."""
    out, row = [], 0
    for ctx, k in zip(contexts, repeats):
        for _ in range(k):
            ids = torch.cat([torch.tensor(ctx, device=feed.device), feed[row]])[None]
            out.append(model(input_ids=ids).logits[0, len(ctx):].float())
            row += 1
    return torch.stack(out)


def _greedy(model, lengths, device: str) -> dict:
    """Greedy candidates over two steps (a commit between): how many are token-identical to dynamic's."""
    from sport_fast.sampler.prefix_sampler import PrefixSampler
    from sport_fast.sampler.sampling import SamplingParams
    g = torch.Generator().manual_seed(2)
    contexts = [torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist() for n in lengths]
    params = [SamplingParams(temperature=0, max_new_tokens=12)] * 3
    got = {}
    for mode in ("dynamic", "static", "graph"):
        sampler = PrefixSampler(model, decode=mode, seed=0)
        trajs = [sampler.start(c) for c in contexts]
        first = sampler.sample_many([(t, params) for t in trajs])
        for t in trajs:
            sampler.commit(t, 0, [5, 6, 7])
        second = sampler.sample_many([(t, params) for t in trajs])
        got[mode] = [c.token_ids for step in (first, second) for cands in step for c in cands]
    same = {m: sum(a == b for a, b in zip(got[m], got["dynamic"])) for m in ("static", "graph")}
    return {"candidates": len(got["dynamic"]), **{f"{m}_identical": n for m, n in same.items()},
            "note": "random-init logits are nearly flat: a near-tie may part bf16 runs without a bug"}


# -- the run ---------------------------------------------------------------------------------------
SECTIONS = {"env": env_section, "compile": compile_section, "flex": flex_section, "decode": decode_section}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=[*SECTIONS, "summary"])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    args = parser.parse_args()
    if args.section == "summary":
        from summary import summary
        return summary()
    cuda = torch.cuda.is_available() and not args.smoke
    checks = Checks(args.section, {**stamp(), "smoke": not cuda})
    SECTIONS[args.section](checks, cuda)
    return 1 if any(r["ok"] is False for r in checks.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
