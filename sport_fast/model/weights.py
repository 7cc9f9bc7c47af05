"""What a checkpoint holds: the LoRA adapter weights, or every parameter for full fine-tuning."""
from __future__ import annotations


class WeightsError(ValueError):
    """A checkpoint does not fit the model; the message names what differs."""


def trainable_state(model) -> dict:
    """The tensors a round's checkpoint saves: the adapters of a peft model, else the whole state dict."""
    if hasattr(model, "peft_config"):
        from peft import get_peft_model_state_dict
        return get_peft_model_state_dict(model)
    return dict(model.state_dict())


def load_trainable_state(model, tensors: dict) -> None:
    """Put a checkpoint's tensors back (adapters into a peft model, strictly all weights otherwise)."""
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict
        result = set_peft_model_state_dict(model, tensors)
        if getattr(result, "unexpected_keys", None):
            raise WeightsError(f"checkpoint has unknown adapter weights {result.unexpected_keys[:3]}")
        return
    model.load_state_dict(tensors, strict=True)
