"""bf16 training through float32 master weights, and gradient checkpointing, in the one-process trainer
(CPU here; the same code paths run on a GPU)."""
import math

import pytest
import torch

from ds_case import case
from sport_fast.config import TrainSection
from sport_fast.model.loader import enable_checkpointing
from sport_fast.dpo.stepper import LocalStepper
from sport_fast.dpo.totals import TrainingTotals
from sport_fast.dpo.trainer import train_round
from tiny_models import tiny_qwen2


def _fixed_directions(params, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=g).to(p.dtype) for p in params]


def test_bf16_parameters_step_through_float32_masters_exactly_as_float32_adamw():
    """Gradients fixed by hand: the masters follow float32 AdamW on the same gradients exactly, the policy
    holds the masters rounded to bf16, and updates below bf16's resolution accumulate in the masters."""
    cfg = TrainSection(lr=1e-5, weight_decay=0.01, grad_accum=2, max_grad_norm=1.0)
    model = tiny_qwen2(0).to(torch.bfloat16)
    stepper = LocalStepper(model, cfg)
    params = stepper.params
    start = [p.detach().float().clone() for p in params]
    ref = [s.clone().requires_grad_(True) for s in start]
    ref_opt = torch.optim.AdamW(ref, lr=cfg.lr, weight_decay=cfg.weight_decay)
    totals = TrainingTotals()
    for step in range(3):
        for micro in range(2):
            directions = _fixed_directions(params, seed=10 * step + micro)
            loss = sum((p.float() * d.float()).sum() for p, d in zip(params, directions))
            stepper.backward_and_step(loss, boundary=micro == 1, totals=totals)
            for r, d in zip(ref, directions):  # float32 reference: the same gradients, halved (grad_accum=2)
                r.grad = d.float() / 2 if r.grad is None else r.grad + d.float() / 2
        torch.nn.utils.clip_grad_norm_(ref, cfg.max_grad_norm)
        ref_opt.step()
        ref_opt.zero_grad(set_to_none=True)
    assert totals.steps == 3 and totals.refused == 0
    for p, master, r, s in zip(params, stepper.masters, ref, start):
        assert p.dtype == torch.bfloat16 and master.dtype == torch.float32
        torch.testing.assert_close(master, r.detach(), rtol=0, atol=1e-7)
        assert torch.equal(p.detach(), master.to(torch.bfloat16))
    moved = sum(int((m != s).sum()) for m, s in zip(stepper.masters, start))
    moved_bf16 = sum(int((p.float() != s).sum()) for p, s in zip(params, start))
    assert moved > 0.99 * sum(s.numel() for s in start)
    assert moved_bf16 < 0.5 * moved, "lr=1e-5 should mostly sit below bf16 resolution: masters carry it"


def test_float32_parameters_are_stepped_directly():
    model, _, cfg = case(grad_accum=1)
    stepper = LocalStepper(model, cfg)
    assert all(m is p for m, p in zip(stepper.masters, stepper.params))


@pytest.mark.parametrize("lora", [False, True])
def test_a_bf16_round_trains_with_finite_losses(lora):
    model, groups, cfg = case(grad_accum=2)
    model = model.to(torch.bfloat16)
    if lora:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary = train_round(model, groups, cfg, seed=3)
    assert summary["train_steps"] > 0 and summary["refused_steps"] == 0
    assert math.isfinite(summary["loss_mean"]) and math.isfinite(summary["grad_norm_mean"])
    changed = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
    assert changed and (not lora or all("lora_" in k for k in changed)), changed[:5]


def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_gradients():
    grads, calls = {}, {}
    for checkpointing in (False, True):
        model, groups, cfg = case(grad_accum=1)
        if checkpointing:
            enable_checkpointing(model)
        model.train()
        count = [0]  # inside the checkpointed layer: its attention runs again in the backward
        model.model.layers[0].self_attn.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
        stepper = LocalStepper(model, cfg)
        loss, _ = stepper.forward(groups[:2])
        loss.backward()
        grads[checkpointing] = {n: p.grad.clone() for n, p in model.named_parameters()}
        calls[checkpointing] = count[0]
    assert calls == {False: 1, True: 2}, "checkpointing runs each layer again in the backward"
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, rtol=1e-5, atol=1e-7, msg=lambda m: f"{name}: {m}")
