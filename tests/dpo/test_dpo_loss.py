"""dpo_loss over per-candidate sums == TRL's DPOTrainer loss on the same pairs; float64 checks of the rest."""
import math
import tempfile

import pytest
import torch

from sport_fast import branch_logps, dpo_loss, pair_indices
from sport_fast.dpo.pairs import segment_lengths
from tiny_models import VOCAB, random_groups, tiny_qwen2


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {f"w{i}": i for i in range(VOCAB - 3)}
    vocab.update({"[PAD]": VOCAB - 3, "[EOS]": VOCAB - 2, "[UNK]": VOCAB - 1})
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]")


def trl_trainer(loss_type: str, beta: float, label_smoothing: float, sft_weight: float = 0.0):
    """TRL's DPOTrainer over two tiny models; ``sft_weight`` > 0 adds its "sft" loss with that weight."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    extra = {"loss_type": [loss_type, "sft"], "loss_weights": [1.0, sft_weight]} if sft_weight else \
        {"loss_type": [loss_type]}
    args = DPOConfig(output_dir=tempfile.mkdtemp(), beta=beta, label_smoothing=label_smoothing, report_to="none",
                     use_cpu=True, bf16=False, **extra)
    init_data = Dataset.from_list([{"prompt": "w1 w2 ", "chosen": "w3", "rejected": "w4"}])
    trainer = DPOTrainer(model=tiny_qwen2(0), ref_model=tiny_qwen2(1), args=args, train_dataset=init_data,
                         processing_class=word_tokenizer())
    trainer.model.eval()
    return trainer


def trl_and_our_inputs(trainer, groups):
    """TRL's loss on every (chosen, rejected) pair of ``groups``, and what dpo_loss takes for the same pairs:
    (trl_loss, policy sums, reference sums, chosen, rejected, lengths)."""
    examples = [{"prompt_ids": g.context_ids, "chosen_ids": g.candidate_ids[c], "rejected_ids": g.candidate_ids[r]}
                for g in groups for c, r in g.pairs]
    with torch.no_grad():
        trl_loss = trainer._compute_loss(trainer.model, trainer.data_collator(examples), False)
        policy = torch.cat(branch_logps(trainer.model, groups))
        ref = torch.cat(branch_logps(trainer.ref_model, groups))
    chosen, rejected = pair_indices(groups)
    lengths = segment_lengths(groups, [(g, k) for g, gr in enumerate(groups) for k in range(gr.num_candidates)])
    assert len(examples) == chosen.numel() > len(groups)  # several rejected per group
    return trl_loss, policy, ref, chosen, rejected, lengths


@pytest.mark.parametrize("loss_type,beta,eps", [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.0),
                                                ("robust", 0.2, 0.1), ("ipo", 0.3, 0.0)])
def test_matches_trl_dpo_trainer(loss_type, beta, eps):
    """TRL runs its own padded pairs-as-sequences forwards of policy and reference; we run trees."""
    trl_loss, policy, ref, chosen, rejected, lengths = trl_and_our_inputs(trl_trainer(loss_type, beta, eps),
                                                                          random_groups(11))
    ours, _ = dpo_loss(policy, ref, chosen, rejected, beta=beta, loss_type=loss_type, label_smoothing=eps,
                       lengths=lengths)
    torch.testing.assert_close(ours, trl_loss.float(), rtol=1e-5, atol=1e-6)


def random_sums(seed, s=7):
    g = torch.Generator().manual_seed(seed)
    return -20 * torch.rand(s, generator=g, dtype=torch.float64), -20 * torch.rand(s, generator=g, dtype=torch.float64)


def test_label_smoothed_sigmoid_is_conservative_dpo_in_float64():
    pol, ref = random_sums(0)
    chosen, rejected = torch.tensor([0, 0, 0, 4]), torch.tensor([1, 2, 3, 5])
    beta, eps = 0.25, 0.15
    want = 0.0
    for c, r in zip(chosen.tolist(), rejected.tolist()):
        z = beta * ((pol[c] - ref[c]) - (pol[r] - ref[r])).item()
        want += -(1 - eps) * math.log(1 / (1 + math.exp(-z))) - eps * math.log(1 / (1 + math.exp(z)))
    loss, _ = dpo_loss(pol, ref, chosen, rejected, beta=beta, label_smoothing=eps)
    assert loss.dtype == torch.float64
    assert abs(loss.item() - want / 4) < 1e-12


def test_metrics_are_per_pair_means():
    pol, ref = random_sums(1)
    chosen, rejected = torch.tensor([0, 0, 2]), torch.tensor([1, 3, 4])
    _, m = dpo_loss(pol, ref, chosen, rejected, beta=0.5)
    rc, rr = 0.5 * (pol - ref)[chosen], 0.5 * (pol - ref)[rejected]
    assert torch.allclose(m["rewards/chosen"], rc.mean()) and torch.allclose(m["rewards/rejected"], rr.mean())
    assert torch.allclose(m["rewards/margins"], (rc - rr).mean())
    assert m["rewards/accuracies"].item() == (rc > rr).double().mean().item()
    assert torch.allclose(m["logps/chosen"], pol[chosen].float().mean())


def test_gradient_flows_to_policy_only_and_matches_float64_autograd():
    pol, ref = random_sums(2)
    pol.requires_grad_(True)
    ref.requires_grad_(True)
    chosen, rejected = torch.tensor([0, 0, 3]), torch.tensor([1, 2, 4])
    loss, _ = dpo_loss(pol, ref, chosen, rejected, beta=0.1)
    loss.backward()
    assert ref.grad is None or torch.all(ref.grad == 0)
    z = 0.1 * ((pol.detach() - ref.detach())[chosen] - (pol.detach() - ref.detach())[rejected])
    dz = -(1 - torch.sigmoid(z)) * 0.1 / 3  # d mean(-logsig(z)) / d delta
    want = torch.zeros_like(pol).index_add(0, chosen, dz).index_add(0, rejected, -dz)
    torch.testing.assert_close(pol.grad, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kwargs,match", [
    ({"beta": 0.0}, "beta"), ({"label_smoothing": 0.5}, "label_smoothing"), ({"loss_type": "kto"}, "loss_type"),
    ({"loss_type": "ipo"}, "lengths")])
def test_bad_arguments_are_refused(kwargs, match):
    pol, ref = random_sums(3)
    with pytest.raises(ValueError, match=match):
        dpo_loss(pol, ref, torch.tensor([0]), torch.tensor([1]), **kwargs)


def test_shape_mismatch_is_refused():
    pol, ref = random_sums(4)
    with pytest.raises(ValueError, match="policy_logps"):
        dpo_loss(pol, ref[:3], torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="chosen"):
        dpo_loss(pol, ref, torch.tensor([0, 1]), torch.tensor([1]))


@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_the_chosen_nll_term_matches_trl_sigmoid_plus_sft(weight):
    """sft_weight w == TRL's loss_type=["sigmoid", "sft"], loss_weights=[1, w] on the same pairs."""
    trl_loss, policy, ref, chosen, rejected, lengths = trl_and_our_inputs(trl_trainer("sigmoid", 0.1, 0.0, weight),
                                                                          random_groups(12))
    ours, metrics = dpo_loss(policy, ref, chosen, rejected, beta=0.1, lengths=lengths, sft_weight=weight)
    plain, _ = dpo_loss(policy, ref, chosen, rejected, beta=0.1)
    torch.testing.assert_close(ours, trl_loss.float(), rtol=1e-5, atol=1e-6)
    assert float(ours - plain) == pytest.approx(weight * float(metrics["nll/chosen"]), rel=1e-5)
    assert float(metrics["nll/chosen"]) > 0


def test_the_chosen_nll_term_in_float64_and_its_refusals():
    pol, ref = random_sums(5)
    chosen, rejected, lengths = torch.tensor([0, 0, 3]), torch.tensor([1, 2, 4]), torch.tensor([2, 3, 1, 4, 5, 6, 7])
    loss, m = dpo_loss(pol, ref, chosen, rejected, beta=0.2, lengths=lengths, sft_weight=2.0)
    nll = -(2 * pol[0] + pol[3]) / (2 * 2 + 4)  # chosen tokens of every pair, a token mean
    delta = (pol - ref)[chosen] - (pol - ref)[rejected]
    want = -torch.nn.functional.logsigmoid(0.2 * delta).mean() + 2.0 * nll
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="sft_weight > 0 needs lengths"):
        dpo_loss(pol, ref, chosen, rejected, sft_weight=1.0)
    with pytest.raises(ValueError, match="sft_weight must be >= 0"):
        dpo_loss(pol, ref, chosen, rejected, lengths=lengths, sft_weight=-1.0)
