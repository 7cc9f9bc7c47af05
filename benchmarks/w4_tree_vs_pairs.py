"""W4 (BENCHMARKS.md): CPU proxy of one step-DPO step, tree-packed vs pairs-as-sequences.

SmolLM2-135M-Instruct, fp32; 4 step groups, context 512 tokens, K = 5 candidates of 48 tokens, 3 pairs
per group. Policy: LoRA r=16 on every linear layer with non-zero adapters, so policy and reference differ
and the loss agreement is a real check. Forward + backward, timed per peer:

(a) pairs as sequences (SPORT via LLaMA-Factory, TRL): every (context + chosen) and (context + rejected)
    a full sequence, one concatenated forward with full logits, reference by a second forward with the
    adapters disabled;
(d) sport_fast: the paired candidates tree-packed (each context once), lm-head on scored positions only,
    reference sums precomputed once (not timed, as in training).

Each peer runs in its own process so its peak memory is its own. Usage:
    python benchmarks/w4_tree_vs_pairs.py [--runs 7]
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import append_rows, median_seconds, peak_rss_mib, stamp  # noqa: E402

from sport_fast import StepGroup, dpo_loss, pair_indices  # noqa: E402
from sport_fast.dpo.branch_logps import packed_branch_logps  # noqa: E402
from sport_fast.dpo.pairs import segment_ref_logps  # noqa: E402
from sport_fast.dpo.reference_logps import compute_ref_logps, reference_mode  # noqa: E402
from sport_fast.tree.batch import make_tree_batch  # noqa: E402

SHAPE = {"groups": 4, "context": 512, "k": 5, "candidate": 48, "pairs_per_group": 3}
BETA = 0.1


def make_groups(vocab: int, seed: int = 0) -> list[StepGroup]:
    rng = random.Random(seed)
    rand = lambda n: [rng.randrange(vocab) for _ in range(n)]  # noqa: E731
    return [StepGroup(context_ids=rand(SHAPE["context"]),
                      candidate_ids=[rand(SHAPE["candidate"]) for _ in range(SHAPE["k"])],
                      chosen=0, rejected=list(range(1, 1 + SHAPE["pairs_per_group"])))
            for _ in range(SHAPE["groups"])]


def make_policy():
    from peft import LoraConfig, get_peft_model

    from sport_fast.model.loader import load_smollm2
    model, _ = load_smollm2()
    torch.manual_seed(0)
    cfg = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    policy = get_peft_model(model, cfg)
    with torch.no_grad():  # small adapters: the policy is near, not equal to, the reference
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)
    return policy


def pairs_as_sequences_step(policy, groups, pairs_per_microbatch: int = 2):
    """(a): full sequences, full logits, the reference by a second forward (adapters disabled).

    Micro-batches of pairs with gradient accumulation, as LLaMA-Factory runs it: all 24 sequences'
    full logits at once (24 x 560 x 49,152 fp32 plus log-softmax and their gradients) exceed 24 GiB.
    Same compute and the same mean loss over all pairs.
    """
    seqs = [(g.context_ids + g.candidate_ids[c], g.context_ids + g.candidate_ids[r], len(g.context_ids))
            for g in groups for c, r in g.pairs]
    total, tokens = 0.0, 0
    for i in range(0, len(seqs), pairs_per_microbatch):
        part = seqs[i:i + pairs_per_microbatch]
        ids = torch.tensor([s[0] for s in part] + [s[1] for s in part])  # equal lengths: no padding
        starts = [s[2] for s in part] * 2
        policy_sums = _sequence_sums(policy(input_ids=ids).logits, ids, starts)
        with torch.no_grad(), reference_mode(policy):
            ref_sums = _sequence_sums(policy(input_ids=ids).logits, ids, starts)
        policy.train()
        idx = torch.arange(len(part))
        loss, _ = dpo_loss(policy_sums, ref_sums, idx, idx + len(part), beta=BETA)
        (loss * len(part) / len(seqs)).backward()
        total += loss.item() * len(part) / len(seqs)
        tokens += ids.numel() * 2
    return total, tokens


def _sequence_sums(logits, ids, starts):
    logp = logits.float().log_softmax(-1)[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2)  # (B, L-1)
    mask = torch.zeros_like(logp, dtype=torch.bool)
    for b, s in enumerate(starts):
        mask[b, s - 1:] = True
    return (logp * mask).sum(1)


def tree_step(policy, groups, batch, ref, chosen, rejected):
    """(d): one tree-packed forward of the paired candidates, precomputed reference."""
    sums = packed_branch_logps(policy, batch)
    loss, _ = dpo_loss(sums, ref, chosen, rejected, beta=BETA)
    loss.backward()
    return loss.item(), batch.tree.num_tokens


def run_peer(peer: str, runs: int) -> dict:
    torch.set_num_threads(torch.get_num_threads())
    policy = make_policy()
    groups = make_groups(policy.config.vocab_size)
    policy.train()
    if peer == "a":
        step = lambda: pairs_as_sequences_step(policy, groups)  # noqa: E731
    else:
        compute_ref_logps(policy, groups)
        batch = make_tree_batch(policy, groups, candidates="paired")
        chosen, rejected = pair_indices(groups, batch.tree.segments)
        ref = segment_ref_logps(groups, batch.tree.segments)
        step = lambda: tree_step(policy, groups, batch, ref, chosen, rejected)  # noqa: E731
    policy.zero_grad(set_to_none=True)
    loss, tokens = step()
    policy.zero_grad(set_to_none=True)
    seconds = median_seconds(lambda: (step(), policy.zero_grad(set_to_none=True)), warmup=1, runs=runs)
    return {"peer": peer, "loss_step0": loss, "tokens_computed": tokens, "median_s": seconds,
            "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--peer", choices=["a", "d"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        print(json.dumps(run_peer(args.peer, args.runs)))
        return
    results = {p: json.loads(subprocess.run([sys.executable, __file__, "--peer", p, "--runs", str(args.runs)],
                                            check=True, capture_output=True, text=True).stdout.splitlines()[-1])
               for p in ("a", "d")}
    report(results)


def report(results: dict) -> None:
    a, d = results["a"], results["d"]
    pairs = SHAPE["groups"] * SHAPE["pairs_per_group"]
    base = {**stamp(), "workload": "W4", "shape": SHAPE, "threads": torch.get_num_threads()}
    rows = []
    for r, name in ((a, "pairs-as-sequences"), (d, "sport_fast tree")):
        rows.append({**base, "peer": name, "median_s": r["median_s"], "pairs_per_s": pairs / r["median_s"],
                     "tokens_computed": r["tokens_computed"], "tokens_per_s": r["tokens_computed"] / r["median_s"],
                     "peak_rss_mib": r["peak_rss_mib"], "loss_step0": r["loss_step0"]})
    agree = abs(a["loss_step0"] - d["loss_step0"])
    rows.append({**base, "peer": "ratio (a)/(d)", "time_ratio": a["median_s"] / d["median_s"],
                 "token_ratio": a["tokens_computed"] / d["tokens_computed"], "loss_abs_diff": agree,
                 "losses_agree_1e-4": agree < 1e-4})
    print(f"{'peer':24s} {'median s':>9s} {'pairs/s':>8s} {'tokens':>7s} {'peak MiB':>9s} {'loss':>10s}")
    for r in rows[:2]:
        print(f"{r['peer']:24s} {r['median_s']:9.3f} {r['pairs_per_s']:8.2f} {r['tokens_computed']:7d} "
              f"{r['peak_rss_mib']:9.0f} {r['loss_step0']:10.6f}")
    print(f"time ratio (a)/(d) = {rows[2]['time_ratio']:.2f}x, token ratio = {rows[2]['token_ratio']:.2f}x, "
          f"|loss a - loss d| = {agree:.2e} ({'agree' if agree < 1e-4 else 'DISAGREE'} at 1e-4)")
    print(f"rows appended to {append_rows('w4', rows)}")


if __name__ == "__main__":
    main()
