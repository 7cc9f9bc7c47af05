"""What the rest of the package needs to know about a Hugging Face model, under a peft wrapper or not.

One place for the unwrapping: ``base_model`` (peft -> the *ForCausalLM), ``decoder_of`` (its transformer
body), ``lm_head_weight`` (the output projection the fused kernel reads), ``compute_dtype``.
"""
from __future__ import annotations

import torch


def base_model(model):
    """The Hugging Face model under a peft wrapper (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_of(model):
    """The transformer body of a causal LM (under a peft wrapper too): ``CausalLM.model``."""
    base = base_model(model)
    decoder = getattr(base, "model", None)
    if decoder is None:
        raise TypeError(f"{type(base).__name__} has no .model body; expected a Hugging Face *ForCausalLM")
    return decoder


def lm_head_weight(model) -> torch.Tensor:
    """The (V, H) lm-head weight; refuses heads whose logits are more than ``hidden @ weight.T``."""
    base = base_model(model)
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        if getattr(config, name, None) not in (None, 1, 1.0):
            raise NotImplementedError(f"{type(base).__name__} transforms its logits ({name}); "
                                      "branch_logps supports plain lm-head logits only")
    head = base.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise NotImplementedError(f"{type(base).__name__}'s lm-head has a bias; not supported")
    return head.weight


def compute_dtype(model) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (what its activations run in)."""
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def model_device(model) -> torch.device:
    return next(model.parameters()).device
