"""How our server takes new weights at run time, the way vLLM and SGLang do (``sampler.engines`` is the
client side): a LoRA adapter folder loaded by name, or full weights loaded in place from a folder.

- ``with_adapter(model, folder)``: the served model becomes the base plus the peft LoRA adapter saved in
  ``folder`` (``adapter_config.json`` + ``adapter_model.safetensors``, what peft's ``save_pretrained``
  writes); an adapter loaded before is dropped first (one adapter at a time).
- ``load_full_weights(model, folder)``: every ``*.safetensors`` file of a Hugging Face folder into the base
  model, in place (an adapter, if any, is dropped: it was trained on other weights). Weights tied to a
  loaded one (a tied lm-head) may be absent; anything else missing or unknown is refused by name.
The server then invalidates every cached prefix (``SamplerService.swap``), so nothing computed with the old
weights is served again.
"""
from __future__ import annotations

from pathlib import Path


class WeightsLoadError(ValueError):
    """A folder that cannot be loaded as asked; the message names the folder and what is wrong."""


def without_adapter(model):
    """The base model, the adapter (if any) removed without merging it."""
    from peft import PeftModel
    return model.unload() if isinstance(model, PeftModel) else model


def with_adapter(model, folder: str):
    """The base of ``model`` wrapped with the LoRA adapter saved in ``folder``, eval mode."""
    from peft import PeftModel
    path = Path(folder)
    if not (path / "adapter_config.json").is_file():
        raise WeightsLoadError(f"lora_path {folder} holds no adapter_config.json (a peft save_pretrained folder)")
    try:
        return PeftModel.from_pretrained(without_adapter(model), str(path), is_trainable=False).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise WeightsLoadError(f"lora_path {folder}: {type(err).__name__}: {err}") from None


def load_full_weights(model, folder: str):
    """The base of ``model`` with the weights of ``folder`` loaded in place; returns it."""
    from safetensors.torch import load_file
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise WeightsLoadError(f"model_path {folder} holds no .safetensors files")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    current = _base_state(model)
    given = {current[k].data_ptr() for k in state if k in current}
    untied = [k for k in current if k not in state and current[k].data_ptr() not in given]
    unknown = [k for k in state if k not in current]
    if unknown or untied:  # checked before anything is copied: a refused folder leaves the weights as they were
        raise WeightsLoadError(f"model_path {folder} does not fit the served model: missing {untied[:3]}, "
                               f"unknown {unknown[:3]}")
    base = without_adapter(model)
    base.load_state_dict(state, strict=False)
    return base.eval()


def _base_state(model) -> dict:
    """The state dict the base model has under its adapter (peft's ``base_layer`` names, no ``lora_`` keys)."""
    from sport_fast.model.introspect import base_model
    return {k.replace(".base_layer", ""): v for k, v in base_model(model).state_dict().items() if "lora_" not in k}
