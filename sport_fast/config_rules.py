"""The config's rules: which values and combinations of keys are refused, each in one line naming the key.

``Config.__post_init__`` calls ``check_config``: a value outside a key's choices, a key that needs another,
and a key set for a backend that does not read it (it would silently do nothing) are all refused here.
"""
from __future__ import annotations

from sport_fast.backends import DECODES, KERNELS, TREE_ATTENTIONS, TRIES
from sport_fast.dpo.loss import LOSS_TYPES
from sport_fast.sampler.engines import ENGINES
from sport_fast.tools.backends import WHERE as TOOL_BACKENDS
from sport_fast.tools.registry import STYLES as TOOL_STYLES
from sport_fast.tools.tool_sets import SETS as TOOL_SETS


class ConfigError(ValueError):
    """A config problem, in one line naming the key."""


# fields of the explore section that only mean something with inference servers (refused otherwise)
EXPLORE_SERVER_FIELDS = ("base_urls", "model", "engine", "timeout_s")

# fields of the judge section that only mean something for some backends (refused elsewhere unless default)
JUDGE_FIELDS_FOR = {"judge_model": ("serve",), "base_url": ("openai",), "model": ("openai",),
                    "timeout_s": ("serve", "openai"), "max_retries": ("serve", "openai"),
                    "max_concurrency": ("serve", "openai"), "structured": ("serve", "openai")}


def check_config(cfg) -> None:
    """``cfg``: a ``config.Config``; raises ``ConfigError`` on the first problem."""
    _check_choices(cfg)
    _check_combinations(cfg)
    check_judge_fields(cfg.judge)
    check_tool_backends(cfg.tools.backends)
    _check_explore_backend(cfg)


def _check_choices(cfg) -> None:
    _check_choice("tasks.source", cfg.tasks.source, ("suite", "file", "synth"))
    _check_choice("judge.backend", cfg.judge.backend, ("serve", "openai", "local"))
    _check_choice("judge.rule", cfg.judge.rule, ("sport", "all", "worst"))
    _check_choice("train.reference", cfg.train.reference, ("initial", "round_start"))
    _check_choice("train.loss_type", cfg.train.loss_type, LOSS_TYPES)
    _check_choice("model.dtype", cfg.model.dtype, ("auto", "float32", "bfloat16", "float16"))
    _check_choice("model.attn_implementation", cfg.model.attn_implementation, ("auto", "sdpa", "eager", "flex_attention"))
    for key, choices in (("kernel", KERNELS), ("trie", TRIES), ("tree_attention", TREE_ATTENTIONS),
                         ("decode", DECODES)):
        _check_choice(f"backends.{key}", getattr(cfg.backends, key), choices)
    _check_choice("sft.source", cfg.sft.source, ("suite", "file"))
    _check_choice("tools.set", cfg.tools.set, ("default", *TOOL_SETS))
    _check_choice("tools.style", cfg.tools.style, TOOL_STYLES)


def _check_combinations(cfg) -> None:
    if cfg.model.dtype == "float16" and not cfg.distributed.deepspeed:
        raise ConfigError("model.dtype=float16 trains only under DeepSpeed (its fp16 section scales the loss); "
                          "in one process use bfloat16")
    if cfg.train.sft_weight < 0:
        raise ConfigError(f"train.sft_weight must be >= 0 (the chosen steps' NLL weight), got {cfg.train.sft_weight}")
    if cfg.train.demonstration_weight < 0:
        raise ConfigError(f"train.demonstration_weight must be >= 0, got {cfg.train.demonstration_weight}")
    if cfg.train.demonstration_weight > 0 and not cfg.sft.enabled:
        raise ConfigError("train.demonstration_weight trains the warm start's demonstrations beside each round's "
                          "pairs: it needs sft.enabled=true")
    if cfg.tasks.source == "file" and not cfg.tasks.train_file:
        raise ConfigError("tasks.source=file needs tasks.train_file")
    if cfg.judge.backend == "openai" and not (cfg.judge.base_url and cfg.judge.model):
        raise ConfigError("judge.backend=openai needs judge.base_url and judge.model")
    if cfg.sft.enabled and cfg.sft.source == "file" and not cfg.sft.file:
        raise ConfigError("sft.source=file needs sft.file")
    if cfg.sft.continue_from:
        _check_continue_from(cfg.sft)
    if cfg.sft.enabled and cfg.distributed.deepspeed:
        raise ConfigError("the warm start (sft.enabled) runs in one process: run python -m sport_fast.sft first, "
                          "then train from the folder it writes (model.path=...)")
    if min(cfg.explore.k, cfg.explore.batch, cfg.train.epochs, cfg.train.grad_accum,
           cfg.eval.batch, cfg.explore.sandbox_workers, cfg.explore.batches_in_flight) < 1:
        raise ConfigError("explore.k, explore.batch, explore.batches_in_flight, explore.sandbox_workers, "
                          "train.epochs, train.grad_accum and eval.batch must be >= 1")
    if cfg.rounds < 0:
        raise ConfigError("rounds must be >= 0 (0: the warm start and the evaluation before it only)")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"config key {key} must be one of {', '.join(choices)}, got {value!r}")


def _check_explore_backend(cfg) -> None:
    """explore.backend=openai needs its servers and a way to give them each round's weights; its fields mean
    nothing to the embedded sampler."""
    e = cfg.explore
    _check_choice("explore.backend", e.backend, ("embedded", "openai"))
    _check_choice("explore.engine", e.engine, ENGINES)
    if e.backend == "embedded":
        default = type(e)()
        for key in EXPLORE_SERVER_FIELDS:
            if getattr(e, key) != getattr(default, key):
                raise ConfigError(f"explore.{key} does not apply to explore.backend=embedded (only to openai); "
                                  f"remove it")
        return
    if not e.base_urls or not e.model:
        raise ConfigError("explore.backend=openai needs explore.base_urls (one URL per server) and explore.model "
                          "(the name they serve the base model under)")
    if e.timeout_s <= 0 or e.flush_wait_s < 0:
        raise ConfigError("explore.timeout_s must be > 0 and explore.flush_wait_s >= 0")
    if e.engine == "vllm" and not cfg.model.lora.enabled:
        raise ConfigError("explore.engine=vllm hot-loads LoRA adapters only; full fine-tuning "
                          "(model.lora.enabled=false) needs explore.engine=sglang or sport_fast "
                          "(update_weights_from_disk)")
    if cfg.sft.enabled:
        raise ConfigError("explore.backend=openai samples from the model the servers loaded: run python -m "
                          "sport_fast.sft first and start them (and model.path) on the folder it writes")


def check_judge_fields(judge) -> None:
    """A judge field set for a backend that does not read it would silently do nothing: refuse it."""
    default = type(judge)()
    for key, backends in JUDGE_FIELDS_FOR.items():
        if judge.backend not in backends and getattr(judge, key) != getattr(default, key):
            raise ConfigError(f"judge.{key} does not apply to judge.backend={judge.backend} "
                              f"(only to {', '.join(backends)}); remove it")


def check_tool_backends(backends: dict) -> None:
    """Names and locations only: the models themselves load when the run starts (``tools.backends``)."""
    for name, entry in backends.items():
        if name not in TOOL_BACKENDS:
            raise ConfigError(f"unknown config key tools.backends.{name} (known here: {', '.join(TOOL_BACKENDS)})")
        if entry and (not isinstance(entry, dict) or
                      sum(k in entry for k in ("base_url", "hf_folder", "url")) != 1):
            raise ConfigError(f"config key tools.backends.{name} must be a mapping with one of "
                              f"{', '.join(TOOL_BACKENDS[name])}")


def _check_continue_from(sft) -> None:
    from pathlib import Path
    if not sft.enabled:
        raise ConfigError("sft.continue_from needs sft.enabled=true (it continues a warm start)")
    if not (Path(sft.continue_from) / "COMPLETE").exists():
        raise ConfigError(f"sft.continue_from={sft.continue_from} is not a complete checkpoint folder "
                          f"(a run's checkpoints/sft, with its COMPLETE marker)")
