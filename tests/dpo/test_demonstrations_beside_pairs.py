"""``train.demonstration_weight``: the warm start's demonstrations trained in the same batches and optimizer
steps as a round's pairs. The packed loss against separate float64 forwards (DPO over the pairs from each
pair's own sums, plus w x the demonstrations' NLL per token), a batch of demonstrations alone, the round's
trainer and its summary, and the config rule."""
import math

import pytest
import torch
from tiny_models import demonstrations, random_groups, separate_forward_logps, separate_nll, tiny_qwen2

from sport_fast.config import ConfigError, TrainSection, load_config
from sport_fast.dpo.reference_logps import compute_ref_logps
from sport_fast.dpo.step_loss import tree_step_dpo_loss
from sport_fast.dpo.trainer import train_round
from sport_fast.tree.batch import make_tree_batch


def demo_groups(seed: int) -> list:
    return [g for d in demonstrations(seed) for g in d.groups()]


def reference_loss(model, pairs, demos, beta: float, w: float) -> float:
    """float64, one forward per (context + candidate): mean DPO over every pair, + w x mean NLL per demo token."""
    losses = []
    for g in pairs:
        pi = separate_forward_logps(model, g)
        for c, r in g.pairs:
            delta = (pi[c] - g.ref_logps[c]) - (pi[r] - g.ref_logps[r])
            losses.append(-math.log(1 / (1 + math.exp(-beta * delta))))
    dpo = sum(losses) / len(losses) if losses else 0.0
    return dpo + (w * separate_nll(model, demos) if demos else 0.0)


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_pairs_and_demonstrations_in_one_packed_batch_match_separate_forwards(w):
    model = tiny_qwen2(11).double()
    pairs, demos = random_groups(4), demo_groups(6)
    with torch.no_grad():
        for g in pairs:  # a reference other than the policy, so that the DPO term is not at its start value
            shifted = torch.tensor([x - 0.3 * i for i, x in enumerate(separate_forward_logps(model, g))])
            g.ref_logps = shifted.float().double().tolist()  # exact in float32, as the packed path stores them
    groups = pairs + demos
    batch = make_tree_batch(model, groups, candidates="paired")
    loss, metrics = tree_step_dpo_loss(model, batch, groups, beta=0.3, demonstration_weight=w, kernel_impl="torch")
    assert loss.item() == pytest.approx(reference_loss(model, pairs, demos, 0.3, w), rel=1e-9)
    assert metrics["nll/demonstrations"].item() == pytest.approx(separate_nll(model, demos), rel=1e-9)
    plain, _ = tree_step_dpo_loss(model, make_tree_batch(model, pairs, candidates="paired"), pairs, beta=0.3,
                                  kernel_impl="torch")
    assert loss.item() == pytest.approx(plain.item() + w * metrics["nll/demonstrations"].item(), rel=1e-9)


def test_a_batch_of_demonstrations_alone_is_their_nll_and_has_no_pair_metrics():
    model = tiny_qwen2(12).double()
    demos = demo_groups(7)
    batch = make_tree_batch(model, demos, candidates="paired")
    loss, metrics = tree_step_dpo_loss(model, batch, demos, demonstration_weight=2.0, kernel_impl="torch")
    assert loss.item() == pytest.approx(2.0 * separate_nll(model, demos), rel=1e-9)
    assert "rewards/accuracies" not in metrics
    loss.backward()
    reached = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert reached, "no gradient reached the model"


def test_the_rounds_trainer_trains_demonstrations_beside_the_pairs_and_counts_them_apart():
    after = {}
    for shown in (None, demo_groups(9)):
        model = tiny_qwen2(13)
        pairs, demos = random_groups(8), demo_groups(9)
        compute_ref_logps(model, pairs)
        before = separate_nll(model, demos)
        cfg = TrainSection(lr=3e-2, epochs=3, max_tokens_per_batch=10_000, demonstration_weight=1.0)
        summary = train_round(model, pairs, cfg, seed=0, demonstrations=shown)
        assert summary["pairs"] == sum(len(g.rejected) for g in pairs) and summary["groups"] == len(pairs)
        assert summary["train_steps"] == 3 and summary["reward_accuracy"] is not None
        assert summary.get("demonstration_groups") == (len(shown) if shown else None)
        after[shown is not None] = separate_nll(model, demos)
    assert after[True] < 0.85 * before, f"three steps with the demonstrations: NLL {before:.3f} -> {after[True]:.3f}"
    assert after[True] < after[False] - 0.3, \
        f"NLL with the demonstrations {after[True]:.3f}, without {after[False]:.3f}"


def test_without_a_weight_the_demonstrations_change_nothing_and_a_rejected_one_is_refused():
    torch.manual_seed(0)
    trained = []
    for demos in (None, demo_groups(9)):
        model = tiny_qwen2(14)
        pairs = random_groups(10)
        compute_ref_logps(model, pairs)
        # demonstrations in the batch with weight 0: the same loss, so the same gradients and weights
        train_round(model, pairs, TrainSection(lr=1e-2, epochs=2, max_tokens_per_batch=100_000), seed=0,
                    demonstrations=demos)
        trained.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    # the packed trees differ (the demonstrations' tokens sit among the pairs'), so the sums round differently in
    # the last bit, which AdamW's per-element scaling can lift to ~1e-6; the weights moved by ~1e-2 per step
    torch.testing.assert_close(trained[1], trained[0], rtol=1e-4, atol=1e-5)
    wrong = demo_groups(9)
    wrong[0].candidate_ids.append(list(wrong[0].candidate_ids[0]))
    wrong[0].rejected = [1]
    with pytest.raises(ValueError, match="demonstration group has rejected"):
        train_round(tiny_qwen2(14), random_groups(10), TrainSection(), seed=0, demonstrations=wrong)


def test_a_demonstration_weight_needs_a_warm_start_and_must_not_be_negative():
    with pytest.raises(ConfigError, match="needs sft.enabled"):
        load_config("default", ["train.demonstration_weight=1"])
    with pytest.raises(ConfigError, match="demonstration_weight must be >= 0"):
        load_config("default", ["sft.enabled=true", "train.demonstration_weight=-1"])
    assert load_config("default", ["sft.enabled=true", "train.demonstration_weight=1"]).train.demonstration_weight == 1
