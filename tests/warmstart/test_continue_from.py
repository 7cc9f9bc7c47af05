"""``sft.continue_from``: a warm start that continues another run's. The earlier adapters are merged into the
weights and this run's adapters train on top; a resumed run and ``eval --checkpoint`` (``restore``) apply both,
in that order. Checked against the weights summed by hand: W + s B1 A1 + s B2 A2 on a plain copy of the model."""
import copy
from types import SimpleNamespace

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from tiny_models import tiny_qwen2

from sport_fast.run.warm_start import continued, restore

R, ALPHA = 4, 8


def lora_cfg(tmp_path, continue_from: str = "") -> SimpleNamespace:
    lora = SimpleNamespace(enabled=True, r=R, alpha=ALPHA, dropout=0.0, target_modules=["q_proj", "down_proj"])
    return SimpleNamespace(seed=0, model=SimpleNamespace(lora=lora),
                           sft=SimpleNamespace(enabled=True, continue_from=continue_from))


def peft_of(base, cfg):
    lora = cfg.model.lora
    return get_peft_model(base, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0,
                                           target_modules=lora.target_modules)).eval()


def random_adapters(model, seed: int) -> dict[str, torch.Tensor]:
    """Adapter tensors as a checkpoint stores them (peft's state-dict names), every one non-zero."""
    from peft import get_peft_model_state_dict
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) * 0.1 for k, v in get_peft_model_state_dict(model).items()}


def write_checkpoint(folder, tensors) -> str:
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "weights.safetensors"))
    (folder / "COMPLETE").write_text("ok\n")
    return str(folder)


def by_hand(base, *adapter_sets) -> torch.nn.Module:
    """A plain copy of ``base`` with every adapter set added to its weights: W += (alpha / r) B A."""
    model = copy.deepcopy(base)
    weights = dict(model.named_parameters())
    for tensors in adapter_sets:
        for key, a in tensors.items():
            if ".lora_A." not in key:
                continue
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            with torch.no_grad():
                weights[name] += (ALPHA / R) * (b @ a)
    return model


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.double()


def test_a_continued_warm_start_merges_the_earlier_one_and_restores_both_in_order(tmp_path):
    base, ids = tiny_qwen2(0), torch.randint(0, 64, (2, 9))
    cfg0 = lora_cfg(tmp_path)
    first = random_adapters(peft_of(copy.deepcopy(base), cfg0), seed=1)
    cfg = lora_cfg(tmp_path, write_checkpoint(tmp_path / "earlier" / "checkpoints" / "sft", first))

    model = continued(peft_of(copy.deepcopy(base), cfg), cfg)  # what this run's warm start trains on
    assert torch.allclose(logits(model, ids), logits(by_hand(base, first), ids), atol=1e-4)
    assert not torch.allclose(logits(model, ids), logits(base, ids), atol=1e-2)  # the earlier one does something

    second = random_adapters(model, seed=2)
    write_checkpoint(tmp_path / "run" / "checkpoints" / "sft", second)
    restored = restore(peft_of(copy.deepcopy(base), cfg), cfg, tmp_path / "run")
    expected = by_hand(base, first, second)
    assert torch.allclose(logits(restored, ids), logits(expected, ids), atol=1e-4)
    only_second = restore(peft_of(copy.deepcopy(base), cfg0), cfg0, tmp_path / "run")  # without continue_from
    assert not torch.allclose(logits(only_second, ids), logits(expected, ids), atol=1e-2)
