"""Fused lm-head log-prob kernel and step-DPO loss vs float64 references (Triton via the interpreter on CPU)."""
import pytest
import torch

from sport_fast import dpo_loss
from sport_fast.backends import INTERPRETING
from sport_fast.dpo.step_loss import step_dpo_loss
from sport_fast.kernels import segment_logps
from sport_fast.kernels import linear_logprobs, linear_logprobs_triton as tk

if not torch.cuda.is_available() and not INTERPRETING:
    pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = [(5, 123, 123), (1, 16, 16), (37, 45, 301), (70, 64, 517)]  # N, H, V; none a multiple of every tile
SMALL_TILES = {"BLOCK_N": 16, "BLOCK_V": 32, "BLOCK_H": 16}  # several tiles per axis even at these sizes


def inputs(n, h, v, seed=0, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, h, generator=g, dtype=torch.float64) * scale / h ** 0.25)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64) / h ** 0.25
    targets = torch.randint(0, v, (n,), generator=g)
    return hidden.to(DEVICE, dtype), weight.to(DEVICE, dtype), targets.to(DEVICE)


def reference64(hidden, weight, targets):
    """float64 log-softmax gather, and its gradients for an upstream gradient."""
    h, w = hidden.double().detach().requires_grad_(), weight.double().detach().requires_grad_()
    logp = (h @ w.T).log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    return logp, h, w


def triton_fwd_bwd(hidden, weight, targets, grad, tiles=None):
    logp, lse = tk.forward(hidden, weight, targets, tiles=tiles)
    d_h, d_w = tk.backward(hidden, weight, targets, lse, grad, tiles=tiles)
    return logp, d_h, d_w


@pytest.mark.parametrize("n,h,v", SHAPES)
@pytest.mark.parametrize("tiles", [None, SMALL_TILES], ids=["default-tiles", "small-tiles"])
def test_fp32_forward_and_gradients_match_float64(n, h, v, tiles):
    hidden, weight, targets = inputs(n, h, v, seed=n)
    grad = torch.randn(n, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    logp, d_h, d_w = triton_fwd_bwd(hidden, weight, targets, grad, tiles)
    ref, h64, w64 = reference64(hidden, weight, targets)
    ref_dh, ref_dw = torch.autograd.grad((ref * grad.double()).sum(), [h64, w64])
    for name, got, want in (("logp", logp, ref), ("d_hidden", d_h, ref_dh), ("d_weight", d_w, ref_dw)):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5,
                                   msg=lambda m: f"{name} (N={n}, H={h}, V={v}): {m}")


def test_every_output_element_is_written():
    hidden, weight, targets = inputs(37, 45, 301)
    poisoned = (torch.full((37,), float("nan"), device=DEVICE), torch.full((37,), float("nan"), device=DEVICE))
    logp, lse = tk.forward(hidden, weight, targets, tiles=SMALL_TILES, out=poisoned)
    assert torch.isfinite(logp).all() and torch.isfinite(lse).all(), "an output element was never written"


def test_large_logits_stay_finite_and_exact():
    hidden, weight, targets = inputs(20, 32, 200, scale=300.0)  # logits in the thousands: naive exp overflows
    logp, _ = tk.forward(hidden, weight, targets, tiles=SMALL_TILES)
    ref, _, _ = reference64(hidden, weight, targets)
    assert torch.isfinite(logp).all()
    torch.testing.assert_close(logp.double(), ref, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_error_is_within_the_plain_computations_own_error(dtype):
    n, h, v = 48, 64, 400
    hidden, weight, targets = inputs(n, h, v, seed=3, dtype=dtype)
    grad = torch.randn(n, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    logp, d_h, d_w = triton_fwd_bwd(hidden, weight, targets, grad, SMALL_TILES)
    ref, h64, w64 = reference64(hidden, weight, targets)
    ref_dh, ref_dw = torch.autograd.grad((ref * grad.double()).sum(), [h64, w64])
    h_lp, w_lp = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    naive = (h_lp @ w_lp.T).float().log_softmax(-1).gather(1, targets[:, None]).squeeze(1)  # peer (a)
    naive_dh, naive_dw = torch.autograd.grad((naive * grad).sum(), [h_lp, w_lp])
    for name, got, plain, want in (("logp", logp, naive, ref), ("d_hidden", d_h, naive_dh, ref_dh),
                                   ("d_weight", d_w, naive_dw, ref_dw)):
        err = (got.double() - want).abs().max().item()
        plain_err = (plain.double() - want).abs().max().item()
        assert torch.isfinite(got).all(), f"{name}: NaN or inf"
        assert err <= 2 * plain_err + 1e-6, f"{name} {dtype}: kernel error {err:.3g} vs plain {plain_err:.3g}"


def test_tied_weights_get_both_gradients():
    """The lm-head weight is also the embedding the hidden states come from: autograd adds both paths."""
    n, h, v = 12, 32, 97
    g = torch.Generator().manual_seed(5)
    emb = torch.randn(v, h, generator=g).to(DEVICE).requires_grad_()
    ids, targets = torch.randint(0, v, (n,), generator=g).to(DEVICE), torch.randint(0, v, (n,), generator=g).to(DEVICE)
    mix = torch.randn(h, h, generator=g).to(DEVICE) / h ** 0.5
    grads = {}
    for impl in ("triton", "torch"):
        logp = linear_logprobs(torch.tanh(emb[ids] @ mix), emb, targets, impl=impl)
        grads[impl], = torch.autograd.grad(logp.sum(), [emb])
    emb64 = emb.double().detach().requires_grad_()
    ref = (torch.tanh(emb64[ids] @ mix.double()) @ emb64.T).log_softmax(-1).gather(1, targets[:, None]).sum()
    want, = torch.autograd.grad(ref, [emb64])
    for impl, got in grads.items():
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5, msg=lambda m: f"{impl}: {m}")


def test_step_dpo_loss_with_unscored_tokens_and_shared_segments_matches_float64():
    n, h, v = 60, 32, 150
    hidden, weight, targets = inputs(n, h, v, seed=7)
    g = torch.Generator().manual_seed(8)
    segment_ids = torch.randint(-1, 5, (n,), generator=g).to(DEVICE)  # -1: context tokens, never scored
    chosen, rejected = torch.tensor([0, 0, 0, 3]).to(DEVICE), torch.tensor([1, 2, 4, 4]).to(DEVICE)  # 0 in 3 pairs
    ref_logps = (-30 * torch.rand(5, generator=g)).to(DEVICE)
    hidden.requires_grad_()
    weight.requires_grad_()
    loss, metrics = step_dpo_loss(hidden, weight, targets, segment_ids, chosen, rejected, ref_logps, beta=0.2,
                                  impl="triton")
    d_h, d_w = torch.autograd.grad(loss, [hidden, weight])
    logp64, h64, w64 = reference64(hidden, weight, targets)
    sums = torch.zeros(5, dtype=torch.float64).index_add(0, segment_ids[segment_ids >= 0].cpu(),
                                                         logp64[segment_ids >= 0].cpu())
    want, want_metrics = dpo_loss(sums, ref_logps.double().cpu(), chosen.cpu(), rejected.cpu(), beta=0.2)
    want_dh, want_dw = torch.autograd.grad(want, [h64, w64])
    torch.testing.assert_close(loss.double().cpu(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["rewards/margins"].double().cpu(), want_metrics["rewards/margins"], rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(d_h.double(), want_dh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(d_w.double(), want_dw, rtol=1e-5, atol=1e-6)
    assert d_h[segment_ids < 0].abs().max() == 0, "unscored tokens received gradient"


def test_bad_inputs_are_refused():
    hidden, weight, targets = inputs(5, 16, 20)
    with pytest.raises(ValueError, match="shapes disagree"):
        linear_logprobs(hidden, weight[:, :8], targets, impl="triton")
    with pytest.raises(ValueError, match="int64"):
        linear_logprobs(hidden, weight, targets.int(), impl="triton")
    with pytest.raises(ValueError, match="float64"):
        linear_logprobs(hidden.double(), weight.double(), targets, impl="triton")
    with pytest.raises(ValueError, match="segment id"):
        segment_logps(hidden, weight, targets, torch.full((5,), 3, device=DEVICE), 2)
    with pytest.raises(ValueError, match="kernel impl"):
        linear_logprobs(hidden, weight, targets, impl="cuda")


def test_custom_ops_pass_opcheck_and_trace_under_compile():
    from sport_fast.kernels.linear_logprobs import _bwd_op, _fwd_op
    hidden, weight, targets = inputs(9, 16, 40)
    hidden.requires_grad_()
    weight.requires_grad_()
    torch.library.opcheck(_fwd_op, (hidden, weight, targets))
    logp, lse = _fwd_op(hidden.detach(), weight.detach(), targets)
    torch.library.opcheck(_bwd_op, (hidden.detach(), weight.detach(), targets, lse, torch.ones_like(logp)))
    compiled = torch.compile(lambda a, b, t: linear_logprobs(a, b, t, impl="triton").sum(), backend="aot_eager",
                             fullgraph=True)
    torch.testing.assert_close(compiled(hidden, weight, targets), logp.sum())
