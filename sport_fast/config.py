"""The run's configuration: typed dataclasses, one YAML file per recipe (``configs/``), dotted overrides.

``load_config("configs/default.yaml", ["train.beta=0.05", "explore.k=4"])``. Every key is checked: an
unknown key, in the file or in an override, is an error naming it (with the keys that exist there), and a
value of the wrong type is an error naming the key and the type expected. Nothing is silently ignored.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sport_fast.agent.agent import AgentConfig
from sport_fast.config_rules import ConfigError, check_config
from sport_fast.judge.step_judge import JudgeConfig


CONFIGS = Path(__file__).resolve().parent / "configs"   # the recipes, shipped with the package


@dataclass
class LoraSection:
    enabled: bool = True             # LoRA adapters (false: full fine-tuning)
    r: int = 16                      # adapter rank
    alpha: int = 32                  # adapter scale numerator (scale = alpha / r)
    dropout: float = 0.0
    target_modules: str = "all-linear"  # which linear layers get adapters (peft syntax)


@dataclass
class ModelSection:
    path: str = "smollm2"            # 'smollm2' (the embedded default) or a local Hugging Face folder
    dtype: str = "auto"              # auto: bf16 on GPU, fp32 on CPU
    attn_implementation: str = "auto"  # auto: flex_attention on CUDA (the packed forward's BlockMask) | sdpa | eager
    lora: LoraSection = field(default_factory=LoraSection)
    gradient_checkpointing: bool = False  # recompute each decoder layer in the backward (training only)


@dataclass
class TasksSection:
    source: str = "suite"            # suite | file | synth
    train_file: str = ""             # source=file: task JSON lines
    heldout_file: str = ""           # optional with source=file or synth; else the suite's held-out split
    suite_seed: int = 0              # source=suite: the suite generator's seed
    n_train: int = 28                # tasks generated for the suite (source=suite)
    n_heldout: int = 14              # held-out tasks generated for the suite
    per_round: int = 8               # training tasks explored per round
    synth_per_seed: int = 2          # source=synth: queries per seed file
    seeds: str = ""                  # source=synth: seed folder or JSON lines (empty: the suite's files)


@dataclass
class ExploreSection(AgentConfig):
    """How the agent explores (``agent.AgentConfig``'s fields) and what runs it."""
    batch: int = 4                   # tasks explored in lockstep: their candidates decode as one batch
    batches_in_flight: int = 2       # lockstep batches at once: one decodes while others run and are judged (eval too)
    sandbox_timeout_s: float = 20.0  # wall-clock limit of one candidate's run
    sandbox_memory_mb: int = 2048    # address-space limit of one run
    sandbox_workers: int = 4         # candidates executed at a time, over all batches in flight (eval too)
    backend: str = "embedded"        # embedded: the policy in this process | openai: inference servers
    base_urls: list[str] = field(default_factory=list)  # backend=openai: one URL per replica (.../v1)
    model: str = ""                  # backend=openai: the name the servers serve the base model under
    engine: str = "vllm"             # backend=openai: vllm | sglang | sport_fast (how weights are hot-loaded)
    timeout_s: float = 600.0         # backend=openai: per request
    flush_wait_s: float = 120.0      # backend=openai: how long a publish asks a busy engine again to reset its cache


@dataclass
class JudgeSection(JudgeConfig):
    """How the judge asks (``judge.JudgeConfig``'s fields), which model answers, and the rejection rule."""
    backend: str = "serve"           # serve: sport_fast.serve over loopback | openai: base_url | local: the policy
    judge_model: str = "smollm2"     # backend=serve: which model the loopback server loads
    base_url: str = ""               # backend=openai
    model: str = ""                  # backend=openai
    timeout_s: float = 120.0         # serve, openai: per request
    max_retries: int = 2             # serve, openai: retries of a failed request
    max_concurrency: int = 4         # serve, openai: requests in flight at once
    structured: bool = True          # ask for JSON-schema output
    rule: str = "sport"              # rejected candidates: sport | all | worst
    bleu_threshold: float = 0.3      # rule=sport: a candidate ran but this dissimilar to the pick is rejected


@dataclass
class TrainSection:
    beta: float = 0.1                # DPO temperature
    loss_type: str = "sigmoid"       # sigmoid | robust | ipo
    sft_weight: float = 0.0          # + w x the chosen steps' NLL per token (RPO; TRL's "sft" loss term)
    demonstration_weight: float = 0.0  # + w x the warm start's demonstrations' NLL per token, beside each round's pairs
    lr: float = 5e-5                 # AdamW, fresh each round
    weight_decay: float = 0.0
    epochs: int = 2                  # passes over the round's step groups
    grad_accum: int = 1              # micro batches per optimizer step
    max_tokens_per_batch: int = 4096  # batch budget (tokens of the groups unpacked)
    max_grad_norm: float = 1.0       # clipping; 0: none
    reference: str = "initial"       # initial | round_start


@dataclass
class SftSection:
    """The warm start: supervised fine-tuning on verified demonstrations before the first round."""
    enabled: bool = False
    source: str = "suite"            # suite: the training tasks' reference programs | file: trajectories
    file: str = ""                   # source=file: multi-turn sharegpt trajectories (MAT/T3-Agent style)
    families: str = ""               # source=suite: comma-separated families of the training tasks (empty: all)
    n_tasks: int = 0                 # source=suite: the first n of those tasks (0: all)
    epochs: int = 3
    lr: float = 1e-4
    continue_from: str = ""          # another run's warm start (its checkpoints/sft): merged first, then trained on
                                     # with fresh adapters for sft.epochs (W5's control continues (b) this way)


@dataclass
class EvalSection(AgentConfig):
    """The held-out evaluation (before the first round and after each): the agent's fields, and which tasks."""
    enabled: bool = True
    n_tasks: int = 7                 # the first n held-out tasks
    batch: int = 4                   # tasks evaluated in lockstep


@dataclass
class ToolsSection:
    """Which tools the agent has (``tools.tool_sets``) and how they are shown to it."""
    set: str = "default"             # default (the original seven) | offline | gta | sport
    style: str = "compact"           # the tool list in the prompt: compact (one line each) | sport (SPORT's format)
    backends: dict = field(default_factory=dict)  # model-backed tools: {vqa: {base_url, model}, detector: {hf_folder}}


@dataclass
class BackendsSection:
    """Which implementation runs each hot path (``sport_fast.backends``); auto: the variable, then the machine."""
    kernel: str = "auto"             # auto | triton | torch
    trie: str = "auto"               # auto | cpp | python
    tree_attention: str = "auto"     # auto | flex | dense
    decode: str = "auto"             # auto | dynamic | static | graph


@dataclass
class DistributedSection:
    deepspeed: str = ""              # a DeepSpeed JSON (a path, or one of the package's configs/deepspeed/)
    timeout_min: int = 360           # how long a rank waits for the others at a collective (work, results)


@dataclass
class Config:
    name: str = "default"
    out_dir: str = "runs/default"    # the run directory (resumable)
    seed: int = 0                    # with round, task, step and candidate: every sampling seed
    rounds: int = 1                  # 0: only the warm start (if any) and the held-out evaluation
    model: ModelSection = field(default_factory=ModelSection)
    tasks: TasksSection = field(default_factory=TasksSection)
    explore: ExploreSection = field(default_factory=ExploreSection)
    judge: JudgeSection = field(default_factory=JudgeSection)
    train: TrainSection = field(default_factory=TrainSection)
    sft: SftSection = field(default_factory=SftSection)
    eval: EvalSection = field(default_factory=EvalSection)
    tools: ToolsSection = field(default_factory=ToolsSection)
    backends: BackendsSection = field(default_factory=BackendsSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)

    def __post_init__(self) -> None:
        check_config(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """The config of a recipe (a YAML path, or a recipe shipped in the package: ``default``,
    ``configs/qwen2vl-7b-h100.yaml``), with ``section.key=value`` overrides."""
    raw: dict = {}
    if path is not None:
        path = recipe_path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        _set_dotted(raw, key.strip(), yaml.safe_load(value))
    return _build(Config, raw, "")


def _set_dotted(raw: dict, key: str, value) -> None:
    node = raw
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {p} is not a section")
    node[leaf] = value


def _build(cls, raw, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (known here: {', '.join(sorted(fields))})")
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            values[name] = _typed(value, hint, f"{prefix}{name}")
    try:
        return cls(**values)
    except ConfigError as err:
        raise err from None
    except ValueError as err:  # a component's own check (AgentConfig, JudgeConfig): name the section
        raise ConfigError(f"config section {prefix.rstrip('.') or 'config'}: {err}") from None


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _typed(value, hint, key: str):
    if typing.get_origin(hint) is list:  # list[str]; one string is a list of one
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"config key {key} must be a list of non-empty strings, got {value!r}")
        return list(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if hint is str and value is None:
        return ""
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"config key {key} must be {hint.__name__}, got {value!r}")
    return value


def recipe_path(name: str | Path) -> Path:
    """``name`` as a path if it exists; else a file in the package's ``configs/`` (``configs/`` prefix and
    ``.yaml`` suffix optional), so that a wheel install runs the same recipes as a checkout."""
    path = Path(name)
    if path.exists():
        return path
    relative = path.relative_to("configs") if path.parts[:1] == ("configs",) else path
    for candidate in (CONFIGS / relative, CONFIGS / relative.with_suffix(relative.suffix or ".yaml")):
        if candidate.is_file():
            return candidate
    return path


def reread_config(path: str | Path) -> str | None:
    """A run's saved config file as this release resolves it (keys added since at their defaults); None if it
    no longer loads (a key removed or renamed since)."""
    try:
        return dump_config(load_config(path))
    except ConfigError:
        return None


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
