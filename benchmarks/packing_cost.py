"""Packing cost (issue 2): 64 step groups with 4,096-token contexts, K = 5 candidates of 64-384 tokens.

Times ``pack_step_groups`` with the C++ trie and with the pure-Python twin, and, for scale, one
tree-packed forward of SmolLM2-135M over a single group of the same shape on this machine (the full
64-group forward is 64 such groups' worth of tokens). Usage: python benchmarks/packing_cost.py
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import append_rows, median_seconds, stamp  # noqa: E402

from sport_fast import StepGroup, pack_step_groups  # noqa: E402
from sport_fast.tree.trie import native_available  # noqa: E402

SHAPE = {"groups": 64, "context": 4096, "k": 5, "candidate": [64, 384]}


def make_groups(n: int, vocab: int = 49152, seed: int = 0) -> list[StepGroup]:
    rng = random.Random(seed)
    rand = lambda m: [rng.randrange(vocab) for _ in range(m)]  # noqa: E731
    return [StepGroup(context_ids=rand(SHAPE["context"]),
                      candidate_ids=[rand(rng.randint(*SHAPE["candidate"])) for _ in range(SHAPE["k"])],
                      chosen=0, rejected=[1, 2, 3]) for _ in range(n)]


def one_group_forward_seconds(group: StepGroup) -> tuple[float, int]:
    from sport_fast.dpo.branch_logps import tree_hidden_states
    from sport_fast.model.loader import load_smollm2
    from sport_fast.tree.batch import make_tree_batch
    model, _ = load_smollm2()
    batch = make_tree_batch(model, [group])
    with torch.no_grad():
        seconds = median_seconds(lambda: tree_hidden_states(model, batch), warmup=1, runs=3)
    return seconds, batch.tree.num_tokens


def main() -> None:
    groups = make_groups(SHAPE["groups"])
    impls = ["cpp", "python"] if native_available() else ["python"]
    rows, base = [], {**stamp(), "workload": "packing", "shape": SHAPE}
    for impl in impls:
        t0 = time.perf_counter()
        tree = pack_step_groups(groups, candidates="all", impl=impl)
        first = time.perf_counter() - t0
        seconds = median_seconds(lambda: pack_step_groups(groups, candidates="all", impl=impl), warmup=1, runs=5)
        rows.append({**base, "peer": f"pack_step_groups[{impl}]", "median_s": seconds, "first_call_s": first,
                     "unpacked_tokens": tree.unpacked_tokens, "packed_tokens": tree.num_tokens,
                     "tokens_per_s": tree.unpacked_tokens / seconds})
        print(f"pack_step_groups[{impl:6s}] {seconds * 1e3:9.1f} ms median  "
              f"({tree.unpacked_tokens} unpacked -> {tree.num_tokens} packed tokens)")
    fwd, fwd_tokens = one_group_forward_seconds(groups[0])
    rows.append({**base, "peer": "SmolLM2-135M forward, one group (no grad)", "median_s": fwd,
                 "packed_tokens": fwd_tokens, "tokens_per_s": fwd_tokens / fwd})
    print(f"SmolLM2-135M forward of ONE packed group ({fwd_tokens} tokens): {fwd * 1e3:.0f} ms, against "
          f"{rows[0]['median_s'] * 1e3:.1f} ms to pack all {SHAPE['groups']} groups")
    print(f"rows appended to {append_rows('packing', rows)}")


if __name__ == "__main__":
    main()
