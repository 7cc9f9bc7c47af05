"""W2 (BENCHMARKS.md): one step-DPO optimizer step, SPORT-shaped step groups, every peer in one run.

Models (random init, bf16): Qwen2-1.5B configuration with LoRA r=64 on every linear layer, and Qwen2-0.5B
fully fine-tuned; each built once, and every peer starts from the same weights (trainable ones restored).
Step groups: context 2,048-4,096 tokens, K = 5 candidates of 64-384 tokens, chosen = one, rejected = three
others, 8 groups per step; the trajectory variant is 2 tasks x 4 consecutive steps, each step's context =
the previous context + its chosen step + an observation of 64-256 tokens.

  (a) pairs as sequences (SPORT via LLaMA-Factory, TRL): every (context + chosen), (context + rejected) a full
      sequence, forward with full logits, reference by a second forward (adapters disabled / frozen copy);
      micro-batches of one pair with gradient accumulation (full logits of all pairs at once do not fit);
  (b) (a) with reference log-probs precomputed before the step;
  (c) (b)'s sequences with liger-kernel's fused linear DPO loss. Liger takes no precomputed reference
      log-probs, only the reference's hidden states, so (c) runs the reference body forward each step;
  (d) sport_fast as training runs it: ``TreeDPOModule`` (tree packing inside the timed step) on the
      backends ``sport_fast.backends.resolve`` gives the model as the loader loads it (``attn_implementation``
      auto: FlexAttention on CUDA, so the tree attention resolves to flex), reference precomputed by
      ``compute_ref_logps`` on those backends (not timed: once per round);
  (e) (d) with the model on SDPA, so the tree attention resolves to the dense mask (CUDA only: on the CPU
      (d) is already that).
Every peer steps through the trainer's ``LocalStepper`` (fp32 master weights, clipping, AdamW): the same
optimizer for all. The 8 groups go into one packed batch (a run needs train.max_tokens_per_batch at least
their packed size for that; the GPU recipes' 16,384 would split 8 independent groups in two or three). ``--checkpointing`` turns on gradient
checkpointing for every peer, as the GPU recipes do (off by default, as the workload says nothing of it).

Reports pairs/s, unique tokens/s (the tree's packed tokens, the same count for every peer), MFU on unique
tokens (matmul FLOPs: forward 2P, backward 2P + 2P_trainable per token, attention excluded, against the bf16
matmul rate measured in this run), peak memory, each peer's step time over (d)'s, and the step-0 loss of
every peer and its difference to (d)'s (all must agree with (a); (d) runs first so that every row, appended as
soon as it is measured, carries its ratios).

    python benchmarks/w2_step_dpo.py                                   # CUDA; rows to results/w2.jsonl
    python benchmarks/w2_step_dpo.py --models qwen2-1.5b-lora64 --groups 2 --context 1024 2048 --steps 1
    python benchmarks/w2_step_dpo.py --smoke      # CPU, one tiny model, tiny groups, Triton interpreter
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import sys
import time
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from common import append_rows, matmul_tflops, peak_gib, reset_peak, results_dir, stamp  # noqa: E402

from sport_fast import StepGroup, dpo_loss, pack_step_groups  # noqa: E402
from sport_fast.backends import resolve  # noqa: E402
from sport_fast.config import BackendsSection, TrainSection  # noqa: E402
from sport_fast.dpo.reference_logps import compute_ref_logps, reference_mode  # noqa: E402
from sport_fast.dpo.stepper import LocalStepper  # noqa: E402
from sport_fast.dpo.totals import TrainingTotals  # noqa: E402
from sport_fast.model.introspect import decoder_of  # noqa: E402
from sport_fast.model.loader import resolve_attention  # noqa: E402

QWEN2 = dict(vocab_size=151_936, tie_word_embeddings=True, num_key_value_heads=2, max_position_embeddings=32768)
MODELS = {
    "qwen2-1.5b-lora64": dict(QWEN2, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                              num_attention_heads=12, lora_r=64),
    "qwen2-0.5b-full": dict(QWEN2, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                            num_attention_heads=14, lora_r=None),
}
SMOKE_MODEL = dict(vocab_size=300, tie_word_embeddings=True, num_key_value_heads=2, hidden_size=32,
                   intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, lora_r=4)
SHAPE = {"groups": 8, "context": (2048, 4096), "k": 5, "candidate": (64, 384), "rejected": 3, "observation": (64, 256)}
SMOKE_SHAPE = {"groups": 4, "context": (20, 40), "k": 5, "candidate": (3, 8), "rejected": 3, "observation": (2, 4)}
BETA = 0.1
ORDER = "dabce"  # the order peers run in
PEERS = {"a": "(a) pairs as sequences", "b": "(b) pairs, precomputed reference",
         "c": "(c) pairs, liger fused DPO", "d": "(d) sport_fast TreeDPOModule",
         "e": "(e) sport_fast TreeDPOModule, dense tree mask"}


# -- inputs and models -----------------------------------------------------------------------------
def make_groups(shape: dict, vocab: int, variant: str, seed: int = 0) -> list[StepGroup]:
    rng = random.Random(seed)
    rand = lambda n: [rng.randrange(vocab) for _ in range(n)]  # noqa: E731
    cands = lambda: [rand(rng.randint(*shape["candidate"])) for _ in range(shape["k"])]  # noqa: E731
    rejected = list(range(1, 1 + shape["rejected"]))
    if variant == "independent":
        return [StepGroup(context_ids=rand(rng.randint(*shape["context"])), candidate_ids=cands(), chosen=0,
                          rejected=rejected) for _ in range(shape["groups"])]
    groups = []
    for _ in range(max(1, shape["groups"] // 4)):  # 4 consecutive steps per task
        context = rand(rng.randint(*shape["context"]))
        for _ in range(4):
            groups.append(StepGroup(context_ids=context, candidate_ids=cands(), chosen=0, rejected=rejected))
            context = context + groups[-1].candidate_ids[0] + rand(rng.randint(*shape["observation"]))
    return groups


def build(cfg: dict, device: str, checkpointing: bool = False, seed: int = 0):
    """(policy, frozen reference or None for LoRA): random init on the device, bf16 on CUDA, sdpa attention
    (what ``model.loader`` gives a run), gradient checkpointing as ``loader.load_policy`` turns it on."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sport_fast.model.loader import enable_checkpointing
    torch.manual_seed(seed)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model_cfg = Qwen2Config(**{k: v for k, v in cfg.items() if k != "lora_r"}, attn_implementation="sdpa")
    with torch.device(device):
        model = Qwen2ForCausalLM(model_cfg).to(dtype)
    reference = copy.deepcopy(model).eval().requires_grad_(False) if cfg["lora_r"] is None else None
    if checkpointing:
        enable_checkpointing(model)
    if reference is not None:
        return model, reference
    from peft import LoraConfig, get_peft_model
    policy = get_peft_model(model, LoraConfig(r=cfg["lora_r"], lora_alpha=2 * cfg["lora_r"],
                                              target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():  # near the base model, not equal to it: a loss agreement that means something
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.mul_(0.01)
    return policy, None


def trainable_snapshot(policy) -> dict:
    return {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}


def restore(policy, reference, snapshot: dict, attn: str) -> None:
    """The weights every peer starts from, and the attention implementation it runs (the reference too: a
    run loads both the same way)."""
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if n in snapshot:
                p.copy_(snapshot[n])
    for m in (policy, reference):
        if m is not None:
            m.set_attn_implementation(attn)


# -- peers (a)-(c): pairs as padded sequences ------------------------------------------------------
def pair_sequences(groups):
    return [(g.context_ids, g.candidate_ids[c], g.candidate_ids[r]) for g in groups for c, r in g.pairs]


def batch_ids(ctx, chosen, rejected, device):
    """(2, L) right-padded ids, attention mask, and a (2, L-1) mask of scored next-token positions."""
    seqs = [ctx + chosen, ctx + rejected]
    length = max(map(len, seqs))
    ids = torch.zeros(2, length, dtype=torch.long)
    attn = torch.zeros(2, length, dtype=torch.long)
    scored = torch.zeros(2, length - 1, dtype=torch.bool)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s)
        attn[b, :len(s)] = 1
        scored[b, len(ctx) - 1:len(s) - 1] = True
    return ids.to(device), attn.to(device), scored.to(device)


def sequence_sums(logits, ids, scored):
    logp = logits[:, :-1].float().log_softmax(-1).gather(2, ids[:, 1:, None]).squeeze(2)
    return (logp * scored).sum(1)


def reference_sums(policy, reference, ids, attn, scored):
    with torch.no_grad(), reference_mode(reference or policy) as ref:
        return sequence_sums(ref(input_ids=ids, attention_mask=attn).logits, ids, scored)


def pair_loss(policy, reference, batch, device, precomputed=None, liger=None):
    if liger is not None:
        return _liger_pair_loss(policy, reference, liger, *batch)
    sums = sequence_sums(policy(input_ids=batch[0], attention_mask=batch[1]).logits, batch[0], batch[2])
    ref = precomputed if precomputed is not None else reference_sums(policy, reference, *batch)
    return dpo_loss(sums, ref, torch.tensor([0], device=device), torch.tensor([1], device=device), BETA)[0]


def _liger_pair_loss(policy, reference, liger, ids, attn, scored):
    hidden = decoder_of(policy)(input_ids=ids, attention_mask=attn).last_hidden_state[:, :-1]
    with torch.no_grad(), reference_mode(reference or policy) as ref:
        ref_hidden = decoder_of(ref)(input_ids=ids, attention_mask=attn).last_hidden_state[:, :-1]
    target = ids[:, 1:].masked_fill(~scored, -100)
    head = policy.get_output_embeddings().weight
    ref_head = (reference or policy).get_output_embeddings().weight
    return liger(head, hidden, target, ref_input=ref_hidden, ref_weight=ref_head)[0]


def pairs_step(peer, policy, reference, groups, device, cuda):
    """A step function for peers (a)-(c): one pair per micro-batch through the stepper; the mean loss."""
    pairs = pair_sequences(groups)
    stepper = LocalStepper(policy, TrainSection(beta=BETA, lr=1e-5, grad_accum=len(pairs)))
    precomputed = [reference_sums(policy, reference, *batch_ids(*p, device)) for p in pairs] if peer != "a" else None
    liger = None
    if peer == "c":
        from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss
        liger = LigerFusedLinearDPOLoss(beta=BETA, use_ref_model=True, compiled=cuda)

    def step() -> float:
        totals = TrainingTotals()
        for i, p in enumerate(pairs):
            batch = batch_ids(*p, device)
            loss = pair_loss(policy, reference, batch, device, None if peer != "b" else precomputed[i], liger)
            totals.add({"loss": loss.detach(), "acc": None, "margin": None, "tokens": 0})
            stepper.backward_and_step(loss, i + 1 == len(pairs), totals)  # the step's one sync: its last pair
        return sum(totals.losses) / len(pairs)
    return step, None


# -- peers (d), (e): the training step -------------------------------------------------------------
def tree_step(policy, reference, groups, device):
    """TreeDPOModule through LocalStepper, as ``trainer.train_round`` calls them; the resolved backends."""
    backends = resolve(BackendsSection(), device, policy)
    for g in groups:
        g.ref_logps = None
    compute_ref_logps(reference or policy, groups, attn=backends.tree_attention, kernel_impl=backends.kernel,
                      trie_impl=backends.trie, max_tokens=10**9)
    stepper = LocalStepper(policy, TrainSection(beta=BETA, lr=1e-5), backends=backends)

    def step() -> float:
        totals = TrainingTotals()
        loss, record = stepper.forward(groups)  # packs the groups: part of the timed step
        totals.add(record)
        stepper.backward_and_step(loss, True, totals)
        return totals.losses[0]
    return step, backends.to_json()


# -- one peer's run --------------------------------------------------------------------------------
def run_peer(peer, model, groups, device, steps) -> dict:
    policy, reference, snapshot = model
    cuda = device == "cuda"
    loaded = (resolve_attention("auto") or "sdpa") if cuda else "sdpa"  # the loader's choice (smoke: the CPU's)
    restore(policy, reference, snapshot, loaded if peer == "d" else "sdpa")
    policy.train()
    step, backends = tree_step(policy, reference, groups, device) if peer in "de" else \
        pairs_step(peer, policy, reference, groups, device, cuda)
    losses, times = [], []
    base = reset_peak(cuda)
    for _ in range(steps + 1):  # the first is the warm-up (timed only when it is all: smoke), and gives the step-0 loss
        _sync(cuda)
        t0 = time.perf_counter()
        losses.append(step())
        _sync(cuda)
        times.append(time.perf_counter() - t0)
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    return {"loss_step0": losses[0], "median_s": statistics.median(times[1:] or times), "backends": backends,
            "peak_mem_gib": peak_gib(cuda), "peak_mem_above_model_gib": peak_gib(cuda, base),
            "params": sum(p.numel() for p in policy.parameters()), "trainable": trainable}


def _sync(cuda):
    if cuda:
        torch.cuda.synchronize()


def peer_rows(model, groups, peers, device, steps, peak, emit) -> list[dict]:
    """Every peer's row, (d) first so that each later row carries its ratios to it; each row goes to ``emit``
    as soon as it is measured (a run cut short keeps what it measured)."""
    unique = pack_step_groups(groups, candidates="paired").num_tokens
    rows = []
    for peer in sorted(peers, key=ORDER.index):
        row = {"peer": PEERS[peer], "unique_tokens": unique, "pairs": len(pair_sequences(groups)),
               "groups": len(groups), "context_tokens": sum(len(g.context_ids) for g in groups)}
        if peer == "e" and device != "cuda":
            row["error"] = "not run: without CUDA (d) is this already (the loader's auto attention is sdpa)"
        else:
            try:
                row.update(run_peer(peer, model, groups, device, steps))
                row.update(_rates(row, peak))
            except Exception as err:  # noqa: BLE001 - a failing peer (often OOM) is reported, not hidden
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        if device == "cuda":
            torch.cuda.empty_cache()
        rows.append(_relate(row, rows[0] if rows and rows[0]["peer"] == PEERS["d"] else row))
        emit(row)
    return rows


def _rates(row, peak):
    flops = row["unique_tokens"] * (4 * row["params"] + 2 * row["trainable"])
    return {"pairs_per_s": row["pairs"] / row["median_s"], "unique_tokens_per_s": row["unique_tokens"] / row["median_s"],
            "mfu": flops / row["median_s"] / (peak * 1e12) if peak else None}


def _relate(row, ours):
    """The row's step time over (d)'s and its step-0 loss minus (d)'s (the peers' agreement is the spread)."""
    if ours["peer"] == PEERS["d"] and "median_s" in ours and "median_s" in row:
        row["time_vs_sport_fast"] = row["median_s"] / ours["median_s"]
        row["loss_step0_minus_sport_fast"] = row["loss_step0"] - ours["loss_step0"]
    return row


# -- the run ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run of every code path")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up step")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=["independent", "trajectory"],
                        choices=["independent", "trajectory"])
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--groups", type=int, help=f"step groups per optimizer step (default {SHAPE['groups']})")
    parser.add_argument("--context", type=int, nargs=2, metavar=("MIN", "MAX"), help="context tokens, uniform")
    parser.add_argument("--checkpointing", action="store_true",
                        help="gradient checkpointing for every peer (the GPU recipes turn it on)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        raise SystemExit("W2 needs a CUDA GPU; use --smoke for a CPU check of the script")
    device = "cuda" if cuda else "cpu"
    models = {"smoke": SMOKE_MODEL} if args.smoke else {m: MODELS[m] for m in args.models}
    shape = dict(SMOKE_SHAPE if args.smoke else SHAPE)
    shape.update({k: v for k, v in (("groups", args.groups), ("context", args.context)) if v})
    base = {**stamp(), "workload": "W2", "smoke": args.smoke, "shape": shape, "checkpointing": args.checkpointing}
    base["matmul_tflops_8192"] = peak = matmul_tflops(cuda)
    rows = []
    for name, cfg in models.items():
        policy, reference = build(cfg, device, args.checkpointing)
        model = (policy, reference, trainable_snapshot(policy))
        for variant in args.variants:
            groups = make_groups(shape, cfg["vocab_size"], variant)
            head = {**base, "model": name, "variant": variant}
            emit = lambda r, head=head: append_rows("w2", [{**head, **r}])  # noqa: E731
            rows += [{**head, **r} for r in peer_rows(model, groups, args.peers, device,
                                                       0 if args.smoke else args.steps, peak, emit)]
        print(f"rows appended to {results_dir() / 'w2.jsonl'}", flush=True)
        del policy, reference, model
    report(rows, peak)


def report(rows, peak):
    print(f"bf16 matmul 8192^3: {peak:.1f} TF/s" if peak else "(no GPU: no matmul reference, no MFU)")
    print(f"{'model':18s} {'variant':11s} {'peer':40s} {'s/step':>8s} {'pairs/s':>8s} {'tok/s':>9s} {'MFU':>6s} "
          f"{'GiB':>6s} {'x (d)':>6s} {'loss0':>10s} {'- (d)':>9s}")
    for r in rows:
        head = f"{r['model']:18s} {r['variant']:11s} {r['peer']:40s}"
        if "error" in r:
            print(f"{head} {r['error']}")
            continue
        mfu = f"{100 * r['mfu']:5.1f}%" if r.get("mfu") else "-"
        mem = f"{r['peak_mem_gib']:6.1f}" if r.get("peak_mem_gib") else "-"
        ratio = f"{r['time_vs_sport_fast']:6.2f}" if "time_vs_sport_fast" in r else "-"
        print(f"{head} {r['median_s']:8.3f} {r['pairs_per_s']:8.2f} {r['unique_tokens_per_s']:9.0f} {mfu:>6s} "
              f"{mem:>6s} {ratio:>6s} {r['loss_step0']:10.6f} {r.get('loss_step0_minus_sport_fast', 0):9.1e}")


if __name__ == "__main__":
    main()
