"""Building a run's parts from its config, in the order that fails fastest: tasks (the likeliest bad input),
then the models, the judge, and only then the run directory, so that a failed start writes nothing there.

Each failure here is a user's input problem (a missing model path, an empty or corrupt task file, an
unreachable judge) and comes out as one line naming it (``SetupError`` and the loaders' own errors).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sport_fast.run.errors import SetupError


@dataclass
class RunParts:
    """Everything a run's phases use, built once at its start; on a rank other than 0, what it needs to
    explore, evaluate and train (``build_rank``: no run directory, tasks or metrics)."""
    cfg: object
    backends: object           # sport_fast.backends.Backends
    model: object
    tokenizer: object
    processor: object          # the image processor of a vision-language policy, else None
    vision: object             # agent.vision_prompt.VisionPrompt, else None
    judge_backend: object
    stop_judge: object
    tools: object
    sandbox: object
    sampler: object            # the policy exploration samples from (run.policy: embedded or servers)
    chat: object
    parallel: object = None    # dpo.distributed.DataParallel, or None in one process
    dir: object = None         # run.run_dir.RunDir (rank 0)
    tasks: object = None       # run.task_sets.TaskSets (rank 0)
    metrics: object = None     # run.metrics.RunMetrics (rank 0)
    frozen: dict = field(default_factory=dict)   # a frozen initial model, once loaded (full fine-tuning)
    sandbox_report: str = ""   # the sandbox's self-test: its layers, and the tools imported in the isolated child

    @property
    def rank(self) -> int:
        return self.parallel.rank if self.parallel is not None else 0

    @property
    def world(self) -> int:
        return self.parallel.world if self.parallel is not None else 1


def build_run(cfg, config_yaml: str, parallel=None, reread=None) -> RunParts:
    """The run's parts (``cfg``: a ``Config``, ``config_yaml`` its resolved text; ``reread``: see ``RunDir``):
    see the module docstring for the order. With several ranks, every rank's set-up must succeed before the run
    directory is opened."""
    from sport_fast.run.metrics import RunMetrics
    from sport_fast.run.run_dir import RunDir
    from sport_fast.run.task_sets import load_task_sets
    root = Path(cfg.out_dir)

    def prepare():
        tools, sandbox, report = _tools_and_sandbox(cfg)  # a broken sandbox is one line, before anything loads
        tasks = load_task_sets(cfg, root)
        run = build_rank(cfg, parallel, (tools, sandbox, report))
        run.tasks = tasks
        return run
    run = agreed(parallel, prepare)
    run.dir = RunDir(root, config_yaml, run.backends.to_json(), reread)
    if run.dir.extended:
        print(f"sport_fast.train: {root} was a run of {run.dir.extended[0]} round(s); it goes on to "
              f"{run.dir.extended[1]} from where it stopped")
    run.tasks.place(root)
    run.metrics = RunMetrics(run.dir.root)
    return run


def build_rank(cfg, parallel=None, sandboxed=None) -> RunParts:
    """What every rank needs to explore, evaluate and train: the policy and what samples from it, the
    judge, the sandbox and its tools (``sandboxed``: those three, when already built)."""
    from sport_fast import backends as backend_choice
    from sport_fast.agent.vision_prompt import VisionPrompt
    from sport_fast.model.chat_format import ChatFormat
    from sport_fast.model.introspect import model_device
    from sport_fast.model.loader import load_image_processor, load_policy
    from sport_fast.run.policy import exploration_policy
    tools, sandbox, report = sandboxed or _tools_and_sandbox(cfg)
    model, tok = load_policy(cfg.model)
    processor = load_image_processor(cfg.model.path, model)
    chosen = backend_choice.resolve(cfg.backends, model_device(model), model)
    vision = VisionPrompt.for_model(model, tok, processor)
    policy = exploration_policy(cfg, model, tok, chosen, vision)
    rank = parallel.rank if parallel is not None else 0
    judge_backend, stop_judge = start_judge(cfg.judge, Path(cfg.out_dir), policy=(model, tok), dtype=cfg.model.dtype,
                                            cache="judge_cache.jsonl" if rank == 0 else f"judge_cache.rank{rank}.jsonl")
    return RunParts(cfg, chosen, model, tok, processor, vision, judge_backend, stop_judge, tools, sandbox, policy,
                    ChatFormat(tok), parallel, sandbox_report=report)


def agreed(parallel, build):
    """``build()``, and with several ranks the agreement that every rank's set-up succeeded: a rank whose
    set-up failed raises its own error; the others raise one naming it (none waits for it)."""
    if parallel is None:
        return build()
    from sport_fast.dpo.distributed import DistributedError
    try:
        parts = build()
    except Exception as err:  # noqa: BLE001 - told to the other ranks, then raised here as it was
        try:
            parallel.agree(f"{type(err).__name__}: {err}")
        except DistributedError:
            pass
        raise
    parallel.agree(None)
    return parts


def _tools_and_sandbox(cfg):
    """(tools, sandbox, its self-test line); a sandbox that cannot run the tools is a ``SetupError``."""
    from sport_fast.sandbox.layers import self_test
    from sport_fast.sandbox.sandbox import Sandbox
    from sport_fast.tools.tool_sets import describe_set, registry_for
    try:
        tools = registry_for(cfg.tools)
        print(f"  {describe_set(tools)}", flush=True)
    except (ValueError, TypeError, OSError) as err:
        raise SetupError(f"tools: {err}") from None
    try:
        sandbox = Sandbox(timeout_s=cfg.explore.sandbox_timeout_s, memory_mb=cfg.explore.sandbox_memory_mb,
                          tools=tools)
        return tools, sandbox, self_test(sandbox)
    except RuntimeError as err:
        raise SetupError(str(err)) from None


# -- judge -------------------------------------------------------------------------------------------
def start_judge(cfg, root: Path, policy=None, dtype: str = "auto", cache: str = "judge_cache.jsonl"):
    """(chat backend behind a request cache, a stop function). ``cfg``: a ``JudgeSection``; ``dtype``: what a
    served judge model loads in (the recipe's ``model.dtype``); ``cache``: the cache file's name in ``root``
    (one per rank: each appends only to its own)."""
    from sport_fast.llm.client import CachedBackend, LocalChatBackend, OpenAIChatBackend
    stop = lambda: None  # noqa: E731
    if cfg.backend == "local":
        if policy is None:
            raise SetupError("judge.backend=local needs the policy model")
        backend = LocalChatBackend(*policy, name="policy")
    else:
        base_url, model = cfg.base_url, cfg.model
        if cfg.backend == "serve":
            base_url, model, stop = _serve_judge(cfg.judge_model, dtype)
        backend = OpenAIChatBackend(base_url, model, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                                    max_concurrency=cfg.max_concurrency, structured=cfg.structured)
        _check_reachable(backend, base_url)
    return CachedBackend(backend, root / cache, follows_weights=cfg.backend == "local"), stop


def _serve_judge(name: str, dtype: str):
    """The project's own OpenAI-compatible server on a loopback port, in this process."""
    from sport_fast.model.loader import load_base
    from sport_fast.sampler.server import SamplerService, start_server
    model, tok = load_base(name, dtype)
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
