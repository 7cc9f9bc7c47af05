"""An agent on a tiny random model that writes whole runnable steps (``tiny_models.step_tokenizer``), the real
sandbox and a judge behind the fake OpenAI-compatible server: exploration with real floats, sandbox runs,
judge calls and step groups, in seconds."""
from __future__ import annotations

import time

from fake_openai import FakeOpenAI, chat_reply
from tiny_models import step_tokenizer, tiny_qwen2

from sport_fast.config import load_config

TINY_EXPLORE = ["explore.k=3", "explore.batch=2", "explore.max_steps=3", "explore.max_new_tokens=8",
                "explore.first_temperature=1.0", "explore.other_temperature=1.0", "explore.sandbox_workers=3",
                "judge.rule=all", "judge.backend=openai", "judge.base_url=http://unused/v1", "judge.model=m",
                "eval.batch=2", "eval.max_steps=2", "eval.max_new_tokens=8", "eval.first_temperature=1.0"]


def picking_judge(delay_s: float = 0.0) -> FakeOpenAI:
    """A judge that picks the first tag offered (deterministic given the request), after ``delay_s``."""
    def respond(path, body, server):
        time.sleep(delay_s)
        tags = body["response_format"]["json_schema"]["schema"]["properties"]["best"]["enum"]
        return 200, chat_reply(f'{{"best": "{tags[0]}", "reason": "listed first"}}')
    return FakeOpenAI(respond)


def tiny_config(out_dir, *extra: str):
    return load_config(None, [f"out_dir={out_dir}", *TINY_EXPLORE, *extra])


def sandbox_and_tools():
    from sport_fast.sandbox.layers import REQUIRED_LAYERS, available_layers
    from sport_fast.sandbox.sandbox import Sandbox
    from sport_fast.tools import default_registry
    tools = default_registry()
    weak = not all(available_layers()[k] for k in REQUIRED_LAYERS)
    return Sandbox(timeout_s=20, tools=tools, allow_weak_isolation=weak), tools


def tiny_run_parts(cfg, judge_url: str, parallel=None, model_seed: int = 5):
    """What a rank needs to explore and evaluate (``run.setup.RunParts``), on the tiny step-writing model."""
    from sport_fast.llm.client import OpenAIChatBackend
    from sport_fast.model.chat_format import ChatFormat
    from sport_fast.run.setup import RunParts
    from sport_fast.sampler.prefix_sampler import PrefixSampler
    model, tok = tiny_qwen2(model_seed), step_tokenizer()
    sandbox, tools = sandbox_and_tools()
    judge = OpenAIChatBackend(judge_url, "m", timeout_s=30, max_retries=0, max_concurrency=cfg.judge.max_concurrency)
    return RunParts(cfg, None, model, tok, None, None, judge, lambda: None, tools, sandbox,
                    PrefixSampler(model, tok, seed=cfg.seed), ChatFormat(tok), parallel)


def untimed(value):
    """A record without what legitimately differs between runs: wall times, latencies, cache hits."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in ("wall_s", "latency_s", "cached")}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value
