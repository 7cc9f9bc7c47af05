"""W2 (BENCHMARKS.md): one step-DPO optimizer step, SPORT-shaped step groups, four peers in one run.

Models (random init, bf16): Qwen2-1.5B configuration with LoRA r=64 on every linear layer, and Qwen2-0.5B
fully fine-tuned. Step groups: context 2,048-4,096 tokens, K = 5 candidates of 64-384 tokens, chosen = one,
rejected = three others, 8 groups per step; the trajectory variant is 2 tasks x 4 consecutive steps, each
step's context = the previous context + its chosen step + an observation of 64-256 tokens.

  (a) pairs as sequences (SPORT via LLaMA-Factory, TRL): every (context + chosen), (context + rejected) a full
      sequence, forward with full logits, reference by a second forward (adapters disabled / frozen copy);
      micro-batches of one pair with gradient accumulation (full logits of all pairs at once do not fit);
  (b) (a) with reference log-probs precomputed before the step;
  (c) (b)'s sequences with liger-kernel's fused linear DPO loss. Liger takes no precomputed reference
      log-probs, only the reference's hidden states, so (c) runs the reference body forward each step;
  (d) sport_fast: tree packing (FlexAttention BlockMask), fused lm-head kernel, precomputed reference.

Reports pairs/s, unique tokens/s (the tree's packed tokens, the same count for every peer), MFU on unique
tokens (matmul FLOPs: forward 2P, backward 2P + 2P_trainable per token, attention excluded, against the bf16
matmul rate measured in this run), peak memory, and the step-0 loss of every peer next to (a)'s.

    python benchmarks/w2_step_dpo.py              # CUDA; rows to results/w2.jsonl
    python benchmarks/w2_step_dpo.py --smoke      # CPU, tiny model and groups, Triton interpreter; no rows
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
from common import append_rows, stamp  # noqa: E402
from w1_linear_logprobs import matmul_tflops  # noqa: E402

from sport_fast import StepGroup, dpo_loss, pack_step_groups  # noqa: E402
from sport_fast.dpo.reference_logps import compute_ref_logps, reference_mode  # noqa: E402
from sport_fast.tree.batch import decoder_of, make_tree_batch  # noqa: E402
from sport_fast.dpo.step_loss import tree_step_dpo_loss  # noqa: E402

QWEN2 = dict(vocab_size=151_936, tie_word_embeddings=True, num_key_value_heads=2, max_position_embeddings=32768)
MODELS = {
    "qwen2-1.5b-lora64": dict(QWEN2, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                              num_attention_heads=12, lora_r=64),
    "qwen2-0.5b-full": dict(QWEN2, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                            num_attention_heads=14, lora_r=None),
}
SMOKE_MODEL = dict(vocab_size=1000, tie_word_embeddings=True, num_key_value_heads=2, hidden_size=64,
                   intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, lora_r=8)
SHAPE = {"groups": 8, "context": (2048, 4096), "k": 5, "candidate": (64, 384), "rejected": 3, "observation": (64, 256)}
SMOKE_SHAPE = {"groups": 4, "context": (40, 80), "k": 5, "candidate": (4, 12), "rejected": 3, "observation": (4, 8)}
BETA = 0.1


def make_groups(shape: dict, vocab: int, variant: str, seed: int = 0) -> list[StepGroup]:
    rng = random.Random(seed)
    rand = lambda n: [rng.randrange(vocab) for _ in range(n)]  # noqa: E731
    cands = lambda: [rand(rng.randint(*shape["candidate"])) for _ in range(shape["k"])]  # noqa: E731
    rejected = list(range(1, 1 + shape["rejected"]))
    if variant == "independent":
        return [StepGroup(context_ids=rand(rng.randint(*shape["context"])), candidate_ids=cands(), chosen=0,
                          rejected=rejected) for _ in range(shape["groups"])]
    groups = []
    for _ in range(shape["groups"] // 4):  # 4 consecutive steps per task
        context = rand(rng.randint(*shape["context"]))
        for _ in range(4):
            groups.append(StepGroup(context_ids=context, candidate_ids=cands(), chosen=0, rejected=rejected))
            context = context + groups[-1].candidate_ids[0] + rand(rng.randint(*shape["observation"]))
    return groups


def build(cfg: dict, device, attn: str, seed: int = 0):
    """(policy, frozen reference or None for LoRA, trainable parameters), same weights for every peer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model_cfg = Qwen2Config(**{k: v for k, v in cfg.items() if k != "lora_r"}, attn_implementation=attn)
    model = Qwen2ForCausalLM(model_cfg).to(device, dtype)
    if cfg["lora_r"] is None:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
        return model, reference
    from peft import LoraConfig, get_peft_model
    policy = get_peft_model(model, LoraConfig(r=cfg["lora_r"], lora_alpha=2 * cfg["lora_r"],
                                              target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():  # near the base model, not equal to it: a loss agreement that means something
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.mul_(0.01)
    return policy, None


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


def step_pairs(policy, reference, pairs, device, precomputed=None, liger=None):
    """Peers (a), (b), (c): one pair per micro-batch, gradients accumulated; returns the mean loss."""
    total = 0.0
    for i, (ctx, c, r) in enumerate(pairs):
        ids, attn, scored = batch_ids(ctx, c, r, device)
        if liger is not None:
            loss = _liger_pair_loss(policy, reference, liger, ids, attn, scored)
        else:
            sums = sequence_sums(policy(input_ids=ids, attention_mask=attn).logits, ids, scored)
            ref = precomputed[i] if precomputed is not None else reference_sums(policy, reference, ids, attn, scored)
            loss, _ = dpo_loss(sums, ref, torch.tensor([0], device=device), torch.tensor([1], device=device), BETA)
        (loss / len(pairs)).backward()
        total += loss.item() / len(pairs)
    return total


def _liger_pair_loss(policy, reference, liger, ids, attn, scored):
    hidden = decoder_of(policy)(input_ids=ids, attention_mask=attn).last_hidden_state[:, :-1]
    with torch.no_grad(), reference_mode(reference or policy) as ref:
        ref_hidden = decoder_of(ref)(input_ids=ids, attention_mask=attn).last_hidden_state[:, :-1]
    target = ids[:, 1:].masked_fill(~scored, -100)
    head = policy.get_output_embeddings().weight
    ref_head = (reference or policy).get_output_embeddings().weight
    return liger(head, hidden, target, ref_input=ref_hidden, ref_weight=ref_head)[0]


def run_peer(peer, cfg, groups, device, steps):
    cuda = device == "cuda"
    attn = "flex_attention" if peer == "d" and cuda else "sdpa"
    policy, reference = build(cfg, device, attn)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    pairs = pair_sequences(groups)
    step = _peer_step(peer, policy, reference, groups, pairs, device)
    losses, times = [], []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(steps + 1):  # the first is the warm-up, and gives the step-0 loss
        _sync(cuda)
        t0 = time.perf_counter()
        losses.append(step())
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(cuda)
        times.append(time.perf_counter() - t0)
    return {"loss_step0": losses[0], "median_s": statistics.median(times[1:]),
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "params": sum(p.numel() for p in policy.parameters()), "trainable": sum(p.numel() for p in trainable)}


def _peer_step(peer, policy, reference, groups, pairs, device):
    if peer == "a":
        return lambda: step_pairs(policy, reference, pairs, device)
    if peer in ("b", "c"):
        precomputed = [reference_sums(policy, reference, *batch_ids(*p, device)) for p in pairs]
        if peer == "b":
            return lambda: step_pairs(policy, reference, pairs, device, precomputed=precomputed)
        from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss
        liger = LigerFusedLinearDPOLoss(beta=BETA, use_ref_model=True, compiled=device == "cuda")
        return lambda: step_pairs(policy, reference, pairs, device, liger=liger)
    compute_ref_logps(reference or policy, groups)
    batch = make_tree_batch(policy, groups, candidates="paired")

    def tree_step():
        loss, _ = tree_step_dpo_loss(policy, batch, groups, beta=BETA, kernel_impl="triton")
        loss.backward()
        return loss.item()
    return tree_step


def _sync(cuda):
    if cuda:
        torch.cuda.synchronize()


PEERS = {"a": "(a) pairs as sequences", "b": "(b) pairs, precomputed reference",
         "c": "(c) pairs, liger fused DPO", "d": "(d) sport_fast tree + fused kernel"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        raise SystemExit("W2 needs a CUDA GPU; use --smoke for a CPU check of the script")
    device = "cuda" if cuda else "cpu"
    models = {"smoke": SMOKE_MODEL} if args.smoke else {m: MODELS[m] for m in args.models}
    shape, peak = (SMOKE_SHAPE if args.smoke else SHAPE), matmul_tflops(device, cuda)
    rows = []
    for name, cfg in models.items():
        for variant in ("independent", "trajectory"):
            groups = make_groups(shape, cfg["vocab_size"], variant)
            unique = pack_step_groups(groups, candidates="paired").num_tokens
            for peer in PEERS:
                row = {"model": name, "variant": variant, "peer": PEERS[peer], "unique_tokens": unique,
                       "pairs": len(pair_sequences(groups))}
                try:
                    row.update(run_peer(peer, cfg, groups, device, args.steps))
                    row.update(_rates(row, peak))
                except Exception as err:  # noqa: BLE001 - a failing peer (often OOM) is reported, not hidden
                    row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
                if cuda:
                    torch.cuda.empty_cache()
                rows.append(row)
    _report(rows, peak, args.smoke)


def _rates(row, peak):
    flops = row["unique_tokens"] * (4 * row["params"] + 2 * row["trainable"])
    return {"pairs_per_s": row["pairs"] / row["median_s"], "unique_tokens_per_s": row["unique_tokens"] / row["median_s"],
            "mfu": flops / row["median_s"] / (peak * 1e12) if peak else None}


def _report(rows, peak, smoke):
    print(f"bf16 matmul 8192^3: {peak:.1f} TF/s" if peak else "(smoke run: no matmul reference)")
    print(f"{'model':18s} {'variant':11s} {'peer':36s} {'s/step':>8s} {'pairs/s':>8s} {'tok/s':>9s} {'MFU':>6s} "
          f"{'GiB':>6s} {'loss0':>10s}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:18s} {r['variant']:11s} {r['peer']:36s} {r['error']}")
            continue
        mfu = f"{100 * r['mfu']:5.1f}%" if r.get("mfu") else "-"
        mem = f"{r['peak_mem_gib']:6.1f}" if r.get("peak_mem_gib") else "-"
        print(f"{r['model']:18s} {r['variant']:11s} {r['peer']:36s} {r['median_s']:8.3f} {r['pairs_per_s']:8.2f} "
              f"{r['unique_tokens_per_s']:9.0f} {mfu:>6s} {mem:>6s} {r['loss_step0']:10.6f}")
    if not smoke:
        print(f"rows appended to {append_rows('w2', [{**stamp(), 'workload': 'W2', **r} for r in rows])}")


if __name__ == "__main__":
    main()
