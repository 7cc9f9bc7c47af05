"""Building a run's parts from its config: the policy, the task sets, the judge and the sandbox.

Each failure here is a user's input problem (a missing model path, an empty or corrupt task file, an
unreachable judge) and comes out as ``SetupError`` with one line naming it.
"""
from __future__ import annotations

from pathlib import Path

import torch


class SetupError(RuntimeError):
    """A run cannot start; the message names what is wrong."""


def load_policy(cfg):
    """(model, tokenizer): ``cfg`` is a ``ModelSection``; LoRA adapters added when enabled."""
    model, tok = load_base(cfg)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    if cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                                                 lora_dropout=cfg.lora.dropout, target_modules=cfg.lora.target_modules))
    return model.eval(), tok


def load_image_processor(cfg, model):
    """The image processor of a vision-language policy (from ``model.path``); None for a text-only one."""
    from sport_fast.model.vision import image_token_id
    if image_token_id(model.config) is None:
        return None
    from transformers import AutoImageProcessor
    try:
        return AutoImageProcessor.from_pretrained(cfg.path)
    except (OSError, ValueError) as err:
        raise SetupError(f"model path {cfg.path}: no image processor for this vision-language model ({err})") from None


def enable_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward (training mode only: the sampler, in eval
    mode, keeps its KV cache)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns there
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = True


def load_base(cfg):
    dtype = resolve_dtype(cfg.dtype)
    if cfg.path == "smollm2":
        from sport_fast.model.loader import load_smollm2
        try:
            return load_smollm2(dtype)
        except FileNotFoundError as err:
            raise SetupError(str(err)) from None
    path = Path(cfg.path)
    if not path.is_dir():
        raise SetupError(f"model path {path} does not exist (no hub access: give a local Hugging Face folder "
                         f"or 'smollm2')")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # a vision-language model (Qwen2-VL) is an image-text-to-text model, not a causal LM, to the Auto classes
    vision = getattr(AutoConfig.from_pretrained(path), "vision_config", None) is not None
    loader = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    return loader.from_pretrained(path, dtype=dtype).to(device), AutoTokenizer.from_pretrained(path)


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, name)


def trainable_state(model) -> dict:
    """What a checkpoint holds: the LoRA adapter weights, or every parameter for full fine-tuning."""
    if hasattr(model, "peft_config"):
        from peft import get_peft_model_state_dict
        return get_peft_model_state_dict(model)
    return {k: v for k, v in model.state_dict().items()}


def load_trainable_state(model, tensors: dict) -> None:
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict
        result = set_peft_model_state_dict(model, tensors)
        if getattr(result, "unexpected_keys", None):
            raise SetupError(f"checkpoint has unknown adapter weights {result.unexpected_keys[:3]}")
        return
    model.load_state_dict(tensors, strict=True)


# -- tasks ------------------------------------------------------------------------------------------
def load_task_sets(cfg, root: Path):
    """(train tasks, held-out tasks) as the config says; the suite is generated under the run folder."""
    from sport_fast.tasks.task import load_tasks
    t = cfg.tasks
    suite = None
    if t.source == "suite" or not t.heldout_file:
        from sport_fast.tasks.suite import generate_suite
        folder = root / "suite"
        if not (folder / "heldout.jsonl").exists():
            generate_suite(folder, t.n_train, t.n_heldout, t.suite_seed)
        suite = folder
    try:
        heldout = load_tasks(t.heldout_file) if t.heldout_file else load_tasks(suite / "heldout.jsonl")
        if t.source == "file":
            train = load_tasks(t.train_file)
        elif t.source == "suite":
            train = load_tasks(suite / "train.jsonl")
        else:
            train = []  # written per round by synthesis
    except (OSError, ValueError) as err:
        raise SetupError(str(err)) from None
    for task in train + heldout:
        _check_files(task)
    return train, heldout


def _check_files(task) -> None:
    """Every image a task names must open: a corrupt one is named here, not deep in a sandbox run."""
    from sport_fast.tasks.drawing import image_problem
    for name, path in task.files.items():
        problem = image_problem(path)
        if problem:
            raise SetupError(f"task {task.id}: image {name}: {problem}")


def round_tasks(tasks: list, per_round: int, round_: int) -> list:
    """A fixed rotation through the task list: round r takes the next ``per_round`` tasks."""
    if not tasks:
        return []
    start = (round_ * per_round) % len(tasks)
    return [tasks[(start + i) % len(tasks)] for i in range(min(per_round, len(tasks)))]


# -- judge -------------------------------------------------------------------------------------------
def start_judge(cfg, root: Path, policy=None):
    """(chat backend behind a request cache, a stop function). ``cfg``: a ``JudgeSection``."""
    from sport_fast.llm.client import CachedBackend, LocalChatBackend, OpenAIChatBackend
    stop = lambda: None  # noqa: E731
    if cfg.backend == "local":
        if policy is None:
            raise SetupError("judge.backend=local needs the policy model")
        backend = LocalChatBackend(*policy, name="policy")
    else:
        base_url, model = cfg.base_url, cfg.model
        if cfg.backend == "serve":
            base_url, model, stop = _serve_judge(cfg.judge_model)
        backend = OpenAIChatBackend(base_url, model, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                                    max_concurrency=cfg.max_concurrency, structured=cfg.structured)
        _check_reachable(backend, base_url)
    return CachedBackend(backend, root / "judge_cache.jsonl"), stop


def _serve_judge(name: str):
    """The project's own OpenAI-compatible server on a loopback port, in this process."""
    from sport_fast.serve import SamplerService, _load, start_server
    try:
        model, tok = _load(name)
    except SystemExit as err:
        raise SetupError(str(err)) from None
    server = start_server(SamplerService(model, tok, name))
    return f"http://127.0.0.1:{server.server_address[1]}/v1", name, server.shutdown


def _check_reachable(backend, base_url: str) -> None:
    try:
        models = backend.client.with_options(timeout=10, max_retries=1).models.list()
        served = [m.id for m in models.data]
    except Exception as err:  # noqa: BLE001 - any failure here means the judge cannot be used
        raise SetupError(f"judge endpoint {base_url} is unreachable: {type(err).__name__}: {err}") from None
    if backend.model not in served:
        raise SetupError(f"judge endpoint {base_url} does not serve model {backend.model!r} (it serves {served})")
