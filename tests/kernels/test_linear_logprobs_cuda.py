"""The lm-head kernel on a real GPU: the paths the interpreter cannot reach (skipped without CUDA).

Compiled bf16 at the default tiles against float64, bitwise determinism of the chunked backward, the
opt-in autotuner and TMA descriptors against the defaults, the device-side target check, and launches
on a device other than the current one.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sport_fast.kernels import linear_logprobs_triton as tk

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
VARIANTS = ("chunked", "atomic")


def inputs(n=1000, h=256, v=5003, device="cuda", seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g) / h ** 0.25
    weight = torch.randn(v, h, generator=g) / h ** 0.25
    targets = torch.randint(0, v, (n,), generator=g)
    grad = torch.randn(n, generator=g)
    return (hidden.to(device, torch.bfloat16), weight.to(device, torch.bfloat16), targets.to(device),
            grad.to(device))


def run(hidden, weight, targets, grad, variant="chunked", **kw):
    logp, lse = tk.forward(hidden, weight, targets, **{k: v for k, v in kw.items() if k != "chunk_rows"})
    d_h, d_w = tk.backward(hidden, weight, targets, lse, grad, variant=variant, **kw)
    return logp, d_h, d_w


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_default_tiles_are_within_the_plain_computations_error(variant):
    hidden, weight, targets, grad = inputs()
    got = run(hidden, weight, targets, grad, variant)
    h64, w64 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    ref = (h64 @ w64.T).log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    want = (ref.detach(), *torch.autograd.grad((ref * grad.double()).sum(), [h64, w64]))
    h_lp, w_lp = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    plain = (h_lp @ w_lp.T).float().log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    plains = (plain.detach(), *torch.autograd.grad((plain * grad).sum(), [h_lp, w_lp]))
    for name, g, p, w in zip(("logp", "d_hidden", "d_weight"), got, plains, want):
        err, plain_err = (g.double() - w).abs().max().item(), (p.double() - w).abs().max().item()
        assert err <= 2 * plain_err + 1e-6, f"{name} {variant}: error {err:.3g} vs plain {plain_err:.3g}"


def test_chunked_backward_is_bitwise_deterministic():
    hidden, weight, targets, grad = inputs()
    first = run(hidden, weight, targets, grad, chunk_rows=256)
    second = run(hidden, weight, targets, grad, chunk_rows=256)
    for name, a, b in zip(("logp", "d_hidden", "d_weight"), first, second):
        assert torch.equal(a, b), f"{name}: two identical runs differ by {(a.float() - b.float()).abs().max()}"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("option", ["autotune", "tma"])
def test_autotune_and_tma_agree_with_the_default_tiles(variant, option):
    if option == "tma" and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("TMA descriptors need sm_90+")
    hidden, weight, targets, grad = inputs(seed=1)
    base = run(hidden, weight, targets, grad, variant)
    kw = {"autotune": True} if option == "autotune" else {"tiles": {"TMA": True}}
    other = run(hidden, weight, targets, grad, variant, **kw)
    for name, a, b in zip(("logp", "d_hidden", "d_weight"), base, other):
        torch.testing.assert_close(b.float(), a.float(), rtol=2e-2, atol=2e-2,
                                   msg=lambda m, name=name: f"{name} {variant} with {option}: {m}")


def test_out_of_range_target_trips_the_device_side_assert():
    """A device-side assert poisons the CUDA context, so it runs in a child process."""
    code = ("import torch; from sport_fast.kernels import linear_logprobs_triton as tk; "
            "h = torch.randn(4, 16, device='cuda'); w = torch.randn(10, 16, device='cuda'); "
            "t = torch.tensor([0, 1, 10, 2], device='cuda'); tk.forward(h, w, t); torch.cuda.synchronize()")
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                           check=False)
    assert child.returncode != 0, "an out-of-range target went through without an error"
    assert "assert" in child.stderr.lower(), f"unexpected failure:\n{child.stderr[-2000:]}"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_launches_on_the_tensors_device_not_the_current_one():
    hidden, weight, targets, grad = inputs(n=64, h=64, v=300, device="cuda:1")
    with torch.cuda.device(0):
        logp, d_h, d_w = run(hidden, weight, targets, grad)
    ref = (hidden.double() @ weight.double().T).log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    for name, x in (("logp", logp), ("d_hidden", d_h), ("d_weight", d_w)):
        assert x.device == torch.device("cuda:1") and torch.isfinite(x).all(), f"{name}: {x.device}, or not finite"
    torch.testing.assert_close(logp.double(), ref, rtol=2e-2, atol=2e-2)
