"""End to end: a tiny model trained a few step-DPO steps with the fused kernel and with the plain-PyTorch
path, from one seed, shows the same losses and ends at the same weights.

The Triton path takes CUDA tensors, or CPU ones under TRITON_INTERPRET=1 (tests/conftest.py sets it when
there is no GPU): on a CUDA machine the models and their inputs go to the GPU, both halves alike."""
import pytest
import torch

from sport_fast.backends import INTERPRETING
from sport_fast.dpo.reference_logps import compute_ref_logps
from sport_fast.tree.batch import make_tree_batch
from sport_fast.dpo.step_loss import tree_step_dpo_loss
from tiny_models import random_groups, tiny_llama, tiny_qwen2

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(DEVICE == "cpu" and not INTERPRETING,
                                  reason="the Triton half needs CUDA or TRITON_INTERPRET=1 (CPU tensors)")


# Plain SGD, not AdamW: Adam divides each gradient by its own running scale, so where a gradient is near zero a
# last-bit difference between two correct paths becomes a visible weight difference (seen on an AMD EPYC: one
# element of 1,024 off by 1.2e-5 after 4 AdamW steps). SGD moves the weights by lr x the gradient, so the
# comparison below measures the paths' gradients, not Adam's amplification of their rounding.
LR = 1.0


def train(make_model, kernel_impl: str, steps: int = 4):
    model = make_model(21).to(DEVICE)
    groups = random_groups(21)
    compute_ref_logps(model, groups)
    batch = make_tree_batch(model, groups, candidates="paired")
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    model.train()
    losses = []
    for _ in range(steps):
        loss, _ = tree_step_dpo_loss(model, batch, groups, beta=0.5, kernel_impl=kernel_impl)
        assert torch.isfinite(loss), "non-finite loss"
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, model


@needs_triton
@pytest.mark.parametrize("make_model", [tiny_qwen2, tiny_llama], ids=["qwen2", "llama-tied"])
def test_fused_and_plain_paths_train_identically(make_model):
    plain_losses, plain_model = train(make_model, "torch")
    fused_losses, fused_model = train(make_model, "triton")
    assert plain_losses[-1] < plain_losses[0], f"the loss did not go down: {plain_losses}"
    torch.testing.assert_close(torch.tensor(fused_losses), torch.tensor(plain_losses), rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(plain_model.named_parameters(), fused_model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
