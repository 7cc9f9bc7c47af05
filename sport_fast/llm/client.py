"""Chat backends for the two LLM roles (judge, task writer): one ``complete(ChatRequest) -> ChatReply`` shape
over any OpenAI-compatible endpoint or the local model, with an on-disk cache in front.

Failures never raise into the caller's loop: a timeout, a refused connection, a 5xx after the bounded
retries or a body that is not a completion comes back as ``ChatReply(error=...)``, and the caller decides
(the judge abstains). The ``openai`` client is built with an explicit timeout and retry count: its
defaults (600 s, 2 retries) can block one request for half an hour.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sport_fast.run.durable import append_jsonl, read_jsonl


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]   # (role, content)
    schema: dict | None = None              # JSON schema for structured output, if wanted
    temperature: float = 0.0
    max_tokens: int = 256
    seed: int = 0

    def payload(self) -> dict:
        return {"messages": [{"role": r, "content": c} for r, c in self.messages], "schema": self.schema,
                "temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed}


@dataclass
class ChatReply:
    text: str | None = None
    finish_reason: str | None = None
    refusal: str | None = None
    error: str | None = None       # the request did not produce a completion (timeout, 5xx, garbage)
    latency_s: float = 0.0
    cached: bool = False
    attempts: list[str] = field(default_factory=list)


class OpenAIChatBackend:
    """Any OpenAI-compatible chat endpoint (vLLM, SGLang, ``sport_fast.serve``)."""

    def __init__(self, base_url: str, model: str, *, api_key: str = "EMPTY", timeout_s: float = 60.0,
                 max_retries: int = 2, max_concurrency: int = 4, structured: bool = True):
        from openai import OpenAI
        if timeout_s <= 0 or max_retries < 0 or max_concurrency < 1:
            raise ValueError("timeout_s must be > 0, max_retries >= 0 and max_concurrency >= 1")
        self.model, self.structured, self.name = model, structured, f"openai:{base_url}:{model}"
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)
        self.slots = threading.BoundedSemaphore(max_concurrency)

    def complete(self, request: ChatRequest) -> ChatReply:
        import openai
        t0 = time.perf_counter()
        with self.slots:
            try:
                reply = self.client.chat.completions.create(**self._arguments(request))
            except openai.APITimeoutError:
                return ChatReply(error=f"timed out after {self.client.timeout}s", latency_s=time.perf_counter() - t0)
            except openai.APIStatusError as err:
                return ChatReply(error=f"HTTP {err.status_code}: {_short(err.message)}",
                                 latency_s=time.perf_counter() - t0)
            except openai.APIConnectionError as err:
                return ChatReply(error=f"cannot reach the endpoint: {_short(err)}", latency_s=time.perf_counter() - t0)
            except Exception as err:  # noqa: BLE001 - a body the client cannot read is a failed request
                return ChatReply(error=f"unreadable reply: {type(err).__name__}: {_short(err)}",
                                 latency_s=time.perf_counter() - t0)
        return _reply_of(reply, time.perf_counter() - t0)

    def _arguments(self, request: ChatRequest) -> dict:
        args = dict(model=self.model, messages=request.payload()["messages"], temperature=request.temperature,
                    max_tokens=request.max_tokens, seed=request.seed, n=1)
        if request.schema is not None and self.structured:
            args["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "reply", "schema": request.schema, "strict": True}}
        return args


def _reply_of(reply, latency: float) -> ChatReply:
    choices = getattr(reply, "choices", None)
    if not isinstance(choices, list) or not choices:
        return ChatReply(error=f"reply is not a chat completion with choices: {_short(reply)}", latency_s=latency)
    message = choices[0].message
    return ChatReply(text=message.content, finish_reason=choices[0].finish_reason,
                     refusal=getattr(message, "refusal", None), latency_s=latency)


class LocalChatBackend:
    """The local policy model as judge or writer: the prefix-caching sampler for free text, the guided
    decoder for structured output. One request at a time, and never during another forward of the same model
    (the policy's exploration decodes in other threads): both hold the model's ``forward_lock``."""

    def __init__(self, model, tokenizer, name: str = "local"):
        from sport_fast.model.forward_lock import forward_lock
        from sport_fast.sampler.guided import GuidedDecoder
        from sport_fast.sampler.prefix_sampler import PrefixSampler
        self.tokenizer, self.name = tokenizer, f"local:{name}"
        self.sampler = PrefixSampler(model, tokenizer)
        self.guided = GuidedDecoder(model, tokenizer)
        self.lock = forward_lock(model)

    def complete(self, request: ChatRequest) -> ChatReply:
        from sport_fast.model.chat_format import template_ids
        from sport_fast.sampler.sampling import SamplingParams
        t0 = time.perf_counter()
        ids = template_ids(self.tokenizer, request.payload()["messages"])
        eos = getattr(self.tokenizer, "eos_token_id", None)
        params = SamplingParams(temperature=request.temperature, max_new_tokens=request.max_tokens,
                                seed=request.seed, stop_token_ids=() if eos is None else (int(eos),))
        with self.lock:
            if request.schema is not None:
                out = self.guided.generate(ids, request.schema, params)
                return ChatReply(text=out.text, finish_reason=out.finish_reason, latency_s=time.perf_counter() - t0)
            cand = self.sampler.sample(self.sampler.start(ids), [params])[0]
        text = self.tokenizer.decode(cand.token_ids, skip_special_tokens=True)
        return ChatReply(text=text, finish_reason=cand.finish_reason, latency_s=time.perf_counter() - t0)


class CachedBackend:
    """A cache keyed by (backend, request) in front of a backend, appended to a JSON-lines file, so a resumed
    run does not pay twice. Only replies that came back are cached; failed requests are tried again.
    ``follows_weights``: the backend is the policy being trained (``judge.backend=local``), so a reply holds
    only for the weight version that gave it, and the key names that version (``use_weights``); version 0,
    the weights the rounds start from, keeps the keys that runs of earlier releases wrote."""

    def __init__(self, backend, path: str | Path, follows_weights: bool = False):
        self.backend, self.path = backend, Path(path)
        self.name, self.follows_weights, self.weights = backend.name, follows_weights, 0
        self.entries = {rec["key"]: rec["reply"] for _, rec in read_jsonl(self.path)}
        self.lock = threading.Lock()
        self.hits = 0

    def use_weights(self, version: int) -> None:
        """The policy now has weight version ``version`` (ignored unless the backend follows the weights)."""
        if self.follows_weights:
            self.weights = version

    def key(self, request: ChatRequest) -> str:
        scope = {"backend": self.name, **({"weights": self.weights} if self.weights else {})}
        blob = json.dumps({**scope, **request.payload()}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def complete(self, request: ChatRequest) -> ChatReply:
        key = self.key(request)
        with self.lock:
            hit = self.entries.get(key)
        if hit is not None:
            self.hits += 1
            return ChatReply(**{**hit, "cached": True, "latency_s": 0.0})
        reply = self.backend.complete(request)
        if reply.error is None:
            with self.lock:
                self.entries[key] = asdict(reply)
                self.path.parent.mkdir(parents=True, exist_ok=True)  # first write: the run directory exists by now
                append_jsonl(self.path, {"key": key, "reply": asdict(reply)})
        return reply


def _short(value, limit: int = 200) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
