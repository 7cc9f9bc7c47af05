"""Reference log-probs: adapters disabled, computed once, batched, persisted."""
import copy

import torch

from sport_fast import StepStore, branch_logps
from sport_fast.dpo.reference_logps import compute_ref_logps
from sport_fast.tree.batching import token_budget_batches
from tiny_models import random_groups, tiny_qwen2


def lora(model):
    from peft import LoraConfig, get_peft_model
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    return get_peft_model(model, cfg)


def test_lora_reference_is_the_base_model_with_adapters_off(tmp_path):
    base = tiny_qwen2(4)
    frozen_copy = copy.deepcopy(base)
    policy = lora(base)
    policy.train()
    groups = random_groups(4)
    store = StepStore(tmp_path)
    for g in groups:
        store.append(g)
    assert compute_ref_logps(policy, groups, store=store, max_tokens=60) == len(groups)
    assert policy.training, "training mode was not restored"
    want = [s.tolist() for s in branch_logps(frozen_copy, groups)]
    for g, w in zip(groups, want):
        torch.testing.assert_close(torch.tensor(g.ref_logps), torch.tensor(w), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        policy_sums = torch.cat(branch_logps(policy.eval(), groups))
    assert not torch.allclose(policy_sums, torch.tensor([x for w in want for x in w]), atol=1e-3), \
        "adapters had no effect: the test would not tell reference from policy"
    reopened = StepStore(tmp_path)
    assert [reopened.get(g.content_hash()).ref_logps for g in groups] == [g.ref_logps for g in groups]


def test_groups_with_ref_logps_are_skipped_unless_forced():
    model, groups = tiny_qwen2(5), random_groups(5)
    groups[0].ref_logps = [0.0] * groups[0].num_candidates
    assert compute_ref_logps(model, groups) == len(groups) - 1
    assert groups[0].ref_logps == [0.0] * groups[0].num_candidates
    assert compute_ref_logps(model, groups, force=True) == len(groups)
    assert groups[0].ref_logps != [0.0] * groups[0].num_candidates


def test_token_budget_batches_keep_order_and_respect_the_budget_in_packed_tokens():
    """The budget counts packed tokens (what the forward computes): every batch packs within it, and groups
    that share a long prefix fit many more to a batch than their unpacked sizes would allow."""
    from sport_fast import pack_step_groups
    from sport_fast.data.step_group import StepGroup
    groups = random_groups(6, n_groups=8)
    batches = list(token_budget_batches(groups, 80))
    assert [g for b in batches for g in b] == groups
    for b in batches:
        assert len(b) == 1 or pack_step_groups(b).num_tokens <= 80, [len(g.context_ids) for g in b]
    prompt = list(range(60))  # a long shared system prompt, as every task's context has
    shared = [StepGroup(context_ids=prompt + [60 + i], candidate_ids=[[1, 2, 3 + i], [1, 2, 4]], chosen=0, rejected=[1])
              for i in range(10)]
    packed = list(token_budget_batches(shared, 150))
    assert len(packed) == 1 and pack_step_groups(packed[0]).num_tokens <= 150, [len(b) for b in packed]
    assert sum(len(g.context_ids) + 6 for g in shared) > 600, "unpacked, these would need five batches"
