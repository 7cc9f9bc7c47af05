"""The lm-head kernel's variants against a float64 reference (Triton through the interpreter on CPU).

Vocabulary splits of the forward, both backward variants ("chunked", "atomic") with every gradient
gate, several row chunks, TMA descriptors, tied and frozen weights, frozen hidden states, masked tokens,
out-of-range targets. Every buffer the launchers allocate is poisoned with NaN first, so an element no
program wrote shows up, and the allocations are logged, so a gradient that was skipped provably had no
buffer.
"""
import pytest
import torch

from sport_fast.kernels import segment_logps
from sport_fast.kernels import linear_logprobs, lm_head_tile
from sport_fast.kernels import linear_logprobs_chunked as chunked
from sport_fast.kernels import linear_logprobs_triton as tk
from sport_fast.backends import INTERPRETING
from sport_fast.kernels.linear_logprobs_tiles import vocab_splits

if not torch.cuda.is_available() and not INTERPRETING:
    pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TILES = {"BLOCK_N": 16, "BLOCK_V": 32, "BLOCK_H": 16}  # several tiles per axis at these sizes
VARIANTS = ("chunked", "atomic")
GATES = [(True, True), (True, False), (False, True)]  # (d_hidden wanted, d_weight wanted)


@pytest.fixture
def allocations(monkeypatch):
    """Poison every launcher buffer with NaN (zeroed ones stay zero) and log (shape, dtype) of each."""
    log = []
    real = lm_head_tile.new_buffer

    def poisoned(shape, dtype, device, zero=False):
        log.append((tuple(torch.Size([shape]) if isinstance(shape, int) else shape), dtype))
        return real(shape, dtype, device, zero) if zero else real(shape, dtype, device).fill_(float("nan"))

    monkeypatch.setattr(lm_head_tile, "new_buffer", poisoned)
    return log


def inputs(n, h, v, seed=0, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64) * scale / h ** 0.25
    weight = torch.randn(v, h, generator=g, dtype=torch.float64) / h ** 0.25
    targets = torch.randint(0, v, (n,), generator=g)
    grad = torch.randn(n, generator=g, dtype=torch.float64)
    return hidden.to(DEVICE, dtype), weight.to(DEVICE, dtype), targets.to(DEVICE), grad.to(DEVICE, torch.float32)


def reference64(hidden, weight, targets, grad):
    """float64 log p and its gradients in hidden and weight for the upstream gradient ``grad``."""
    h, w = hidden.double().detach().requires_grad_(), weight.double().detach().requires_grad_()
    logp = (h @ w.T).log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    d_h, d_w = torch.autograd.grad((logp * grad.double()).sum(), [h, w])
    return logp.detach(), d_h, d_w


def assert_close(name, got, want, where, tol=1e-5):
    assert got is not None, f"{name} ({where}): missing"
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol, msg=lambda m: f"{name} ({where}): {m}")


@pytest.mark.parametrize("splits", [1, 2, 3, 4, 7])  # 4 vocabulary tiles of 32: 7 leaves three ranges empty
@pytest.mark.parametrize("n,h,v", [(5, 123, 123), (37, 45, 301)])
def test_forward_merges_vocabulary_splits_exactly(allocations, n, h, v, splits):
    hidden, weight, targets, grad = inputs(n, h, v, seed=splits)
    logp, lse = tk.forward(hidden, weight, targets, tiles=TILES, splits=splits)
    want, _, _ = reference64(hidden, weight, targets, grad)
    want_lse = (hidden.double() @ weight.double().T).logsumexp(-1)
    where = f"N={n}, H={h}, V={v}, splits={splits}"
    assert_close("logp", logp, want, where)
    assert_close("lse", lse, want_lse, where)
    assert ((splits, n), torch.float32) in allocations, f"{where}: no (splits, N) partials were allocated"


def test_forward_splits_stay_exact_at_large_logits(allocations):
    hidden, weight, targets, grad = inputs(20, 32, 200, scale=300.0)  # logits in the thousands
    logp, _ = tk.forward(hidden, weight, targets, tiles=TILES, splits=3)
    want, _, _ = reference64(hidden, weight, targets, grad)
    assert torch.isfinite(logp).all(), "non-finite log-prob at large logits"
    assert_close("logp", logp, want, "scale 300, splits=3", tol=1e-3)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("need_dh,need_dw", GATES)
@pytest.mark.parametrize("n,h,v", [(5, 123, 123), (37, 45, 301)])
def test_backward_variants_and_gates_match_float64(allocations, variant, need_dh, need_dw, n, h, v):
    hidden, weight, targets, grad = inputs(n, h, v, seed=n + v)
    _, lse = tk.forward(hidden, weight, targets, tiles=TILES)
    allocations.clear()
    d_h, d_w = tk.backward(hidden, weight, targets, lse, grad, tiles=TILES, need_d_hidden=need_dh,
                           need_d_weight=need_dw, variant=variant, chunk_rows=16)
    _, want_dh, want_dw = reference64(hidden, weight, targets, grad)
    where = f"{variant}, N={n}, H={h}, V={v}, d_hidden={need_dh}, d_weight={need_dw}"
    for name, got, want, needed, shape in (("d_hidden", d_h, want_dh, need_dh, (n, h)),
                                           ("d_weight", d_w, want_dw, need_dw, (v, h))):
        if needed:
            assert_close(name, got, want, where)
        else:
            assert got is None, f"{name} ({where}): computed though not needed"
            assert all(s != shape for s, _ in allocations), f"{name} ({where}): a {shape} buffer was allocated"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("variant", VARIANTS)
def test_low_precision_gradients_are_within_the_plain_computations_error(allocations, dtype, variant):
    """bf16/fp16 over three row chunks (the d_weight sum crosses chunks in fp32)."""
    n, h, v = 40, 64, 200
    hidden, weight, targets, grad = inputs(n, h, v, seed=3, dtype=dtype)
    logp, lse = tk.forward(hidden, weight, targets, tiles=TILES, splits=2)
    d_h, d_w = tk.backward(hidden, weight, targets, lse, grad, tiles=TILES, variant=variant, chunk_rows=16)
    want, want_dh, want_dw = reference64(hidden, weight, targets, grad)
    h_lp, w_lp = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    plain = (h_lp @ w_lp.T).float().log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    plain_dh, plain_dw = torch.autograd.grad((plain * grad).sum(), [h_lp, w_lp])
    for name, got, ref, want_ in (("logp", logp, plain, want), ("d_hidden", d_h, plain_dh, want_dh),
                                  ("d_weight", d_w, plain_dw, want_dw)):
        assert got.dtype == (torch.float32 if name == "logp" else dtype), f"{name}: dtype {got.dtype}"
        err = (got.double() - want_).abs().max().item()
        plain_err = (ref.double() - want_).abs().max().item()
        assert torch.isfinite(got).all(), f"{name} {dtype} {variant}: NaN or inf"
        assert err <= 2 * plain_err + 1e-6, f"{name} {dtype} {variant}: error {err:.3g} vs plain {plain_err:.3g}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_tma_descriptors_give_the_same_answer(allocations, variant):
    n, h, v = 37, 64, 301  # 64 fp32 = 256-byte rows: TMA-ready
    hidden, weight, targets, grad = inputs(n, h, v, seed=11)
    assert lm_head_tile.tma_ready(hidden, weight), "inputs not TMA-ready: the test would not use descriptors"
    tiles = {**TILES, "TMA": True}
    logp, lse = tk.forward(hidden, weight, targets, tiles=tiles, splits=3)
    d_h, d_w = tk.backward(hidden, weight, targets, lse, grad, tiles=tiles, variant=variant, chunk_rows=16)
    want, want_dh, want_dw = reference64(hidden, weight, targets, grad)
    for name, got, want_ in (("logp", logp, want), ("d_hidden", d_h, want_dh), ("d_weight", d_w, want_dw)):
        assert_close(name, got, want_, f"TMA, {variant}")


def _spy_d_weight(monkeypatch):
    calls = []
    real = chunked._launch_d_weight
    monkeypatch.setattr(chunked, "_launch_d_weight", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    return calls


@pytest.mark.parametrize("variant", VARIANTS)
def test_frozen_lm_head_lora_gets_no_weight_gradient(allocations, monkeypatch, variant):
    n, h, v = 21, 48, 150
    hidden, weight, targets, grad = inputs(n, h, v, seed=4)
    calls = _spy_d_weight(monkeypatch)
    hidden.requires_grad_()  # weight stays frozen
    logp = linear_logprobs(hidden, weight, targets, impl="triton", backward_variant=variant)
    (logp * grad).sum().backward()
    _, want_dh, _ = reference64(hidden, weight, targets, grad)
    assert weight.grad is None, "a frozen weight received a gradient"
    assert not calls, "the d_weight kernel ran for a frozen weight"
    assert all(s != (v, h) for s, _ in allocations), f"a (V, H) buffer was allocated: {allocations}"
    assert_close("d_hidden", hidden.grad, want_dh, f"frozen weight, {variant}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_hidden_without_grad_gets_only_the_weight_gradient(allocations, variant):
    n, h, v = 21, 48, 150
    hidden, weight, targets, grad = inputs(n, h, v, seed=6)
    weight.requires_grad_()
    logp = linear_logprobs(hidden, weight, targets, impl="triton", backward_variant=variant)
    (logp * grad).sum().backward()
    _, _, want_dw = reference64(hidden, weight, targets, grad)
    assert hidden.grad is None
    assert all(s != (n, h) for s, _ in allocations), f"an (N, H) gradient buffer was allocated: {allocations}"
    assert_close("d_weight", weight.grad, want_dw, f"hidden without grad, {variant}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_tied_weight_and_masked_tokens_match_float64(allocations, variant):
    """The lm-head is also the embedding the hidden states come from; tokens with segment -1 are skipped."""
    n, h, v, segments = 30, 32, 97, 4
    g = torch.Generator().manual_seed(9)
    emb = (torch.randn(v, h, generator=g) / h ** 0.25).to(DEVICE).requires_grad_()
    ids = torch.randint(0, v, (n,), generator=g).to(DEVICE)
    targets = torch.randint(0, v, (n,), generator=g).to(DEVICE)
    seg = torch.randint(-1, segments, (n,), generator=g).to(DEVICE)
    mix = (torch.randn(h, h, generator=g) / h ** 0.5).to(DEVICE)
    weights = torch.randn(segments, generator=g).to(DEVICE)
    sums = segment_logps(torch.tanh(emb[ids] @ mix), emb, targets, seg, segments, impl="triton")
    got, = torch.autograd.grad((sums * weights).sum(), [emb])
    emb64 = emb.double().detach().requires_grad_()
    scored = seg >= 0
    logp = (torch.tanh(emb64[ids] @ mix.double()) @ emb64.T).log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    want_sums = torch.zeros(segments, dtype=torch.float64).index_add(0, seg[scored], logp[scored])
    want, = torch.autograd.grad((want_sums * weights.double()).sum(), [emb64])
    assert_close("segment sums", sums, want_sums.detach(), f"tied, {variant}")
    assert_close("d_embedding", got, want, f"tied + masked, {variant}")


@pytest.mark.parametrize("bad", [-1, 123])
def test_out_of_range_target_raises_like_the_torch_path(bad):
    hidden, weight, targets, _ = inputs(5, 16, 123)
    targets[2] = bad
    with pytest.raises(IndexError, match=f"target {bad} is out of bounds"):
        linear_logprobs(hidden, weight, targets, impl="triton")
    with pytest.raises((IndexError, RuntimeError)):
        linear_logprobs(hidden, weight, targets, impl="torch")


def test_custom_ops_pass_opcheck_for_every_gate_and_compile_with_a_frozen_weight():
    from sport_fast.kernels.linear_logprobs import BACKWARD_VARIANTS, _bwd_op, _fwd_op
    assert BACKWARD_VARIANTS == tk.BACKWARD_VARIANTS, "the public API and the launcher list different variants"
    hidden, weight, targets, grad = inputs(9, 16, 40)
    torch.library.opcheck(_fwd_op, (hidden, weight, targets, "atomic"))
    _, lse = _fwd_op(hidden, weight, targets)
    for variant in VARIANTS:
        for need_dh, need_dw in GATES:
            torch.library.opcheck(_bwd_op, (hidden, weight, targets, lse, grad, need_dh, need_dw, variant))
    h = hidden.clone().requires_grad_()
    compiled = torch.compile(lambda a, b, t: (linear_logprobs(a, b, t, impl="triton") * grad).sum(),
                             backend="aot_eager", fullgraph=True)
    compiled(h, weight, targets).backward()
    _, want_dh, _ = reference64(hidden, weight, targets, grad)
    assert_close("d_hidden", h.grad, want_dh, "torch.compile, frozen weight")


def test_vocab_splits_fill_the_machine_and_leave_no_range_empty():
    for n in (1, 5, 100, 4096, 16384, 100_000):
        for v in (123, 32_000, 151_936):
            for block_n, block_v in ((64, 128), (128, 128), (16, 32)):
                s = vocab_splits(n, v, block_n, block_v, sms=132)
                tiles = -(-v // block_v)
                per_split = -(-tiles // s)
                where = f"N={n}, V={v}, tiles {block_n}x{block_v}: {s} splits"
                assert 1 <= s <= tiles and (s - 1) * per_split < tiles, f"{where}: a split is empty"
                programs = -(-n // block_n) * s
                if tiles // 8 >= -(-4 * 132 // -(-n // block_n)):  # enough vocabulary to reach 4 waves
                    assert programs >= 2 * 132, f"{where}: only {programs} programs for 132 SMs"
                assert s == vocab_splits(n, v, block_n, block_v, sms=132), f"{where}: not deterministic"
    assert vocab_splits(4096, 151_936, 64, 128, sms=132) > 1, "N=4,096 at V=151,936 was not split"


def test_autotune_off_the_gpu_warns_and_uses_the_default_tiles():
    hidden, weight, targets, grad = inputs(5, 16, 40)
    if hidden.is_cuda:
        pytest.skip("on a GPU autotuning runs; this checks the CPU refusal")
    with pytest.warns(UserWarning, match="autotuning needs CUDA"):
        logp, _ = tk.forward(hidden, weight, targets, autotune=True)
    want, _, _ = reference64(hidden, weight, targets, grad)
    assert_close("logp", logp, want, "autotune requested on CPU")
