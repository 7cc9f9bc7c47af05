"""Parsing and answering OpenAI-style completion requests; every bad field is a 400 naming the field."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sport_fast.sampler.sampling import Candidate, SamplingParams

MAX_N = 16
MAX_TOKENS = 4096


class RequestError(ValueError):
    """A client error: HTTP ``status`` with an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status == 400 else "not_found_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": None}}


@dataclass
class ParsedRequest:
    params: list[SamplingParams]   # one per candidate (n)
    logprobs: bool


def parse_sampling(body: dict, chat: bool, eos_ids: tuple[int, ...]) -> ParsedRequest:
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    if body.get("stream"):
        raise RequestError("stream=true is not supported", "stream")
    n = _int(body, "n", 1, 1, MAX_N)
    max_key = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
    base = dict(temperature=_float(body, "temperature", 1.0, 0.0, 2.0), top_p=_float(body, "top_p", 1.0, 1e-9, 1.0),
                top_k=_int(body, "top_k", 0, 0, 1 << 20), max_new_tokens=_int(body, max_key, 256, 1, MAX_TOKENS),
                repetition_penalty=_float(body, "repetition_penalty", 1.0, 1e-3, 10.0),
                stop=_stop(body.get("stop")), stop_token_ids=eos_ids)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise RequestError("seed must be an integer", "seed")
    params = [SamplingParams(**base, seed=None if seed is None else seed + i) for i in range(n)]
    return ParsedRequest(params=params, logprobs=_logprobs(body, chat))


def parse_response_format(body: dict) -> dict | None:
    """The JSON schema of ``response_format`` (type json_schema), None for plain text; 400 otherwise."""
    fmt = body.get("response_format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise RequestError("response_format must be {'type': 'json_schema', 'json_schema': {'schema': ...}} "
                           "or {'type': 'text'}", "response_format")
    schema = (fmt.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise RequestError("response_format.json_schema.schema must be a JSON schema object", "response_format")
    return schema


def _logprobs(body: dict, chat: bool) -> bool:
    value = body.get("logprobs")
    if chat:
        if value not in (None, True, False):
            raise RequestError("logprobs must be a boolean", "logprobs")
        if body.get("top_logprobs"):
            raise RequestError("top_logprobs is not supported; the sampled token's log-prob is returned",
                               "top_logprobs")
        return bool(value)
    if value is None:
        return False
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1:
        raise RequestError("logprobs must be 0 or 1 (the sampled token's log-prob)", "logprobs")
    return True


def _int(body, name, default, low, high) -> int:
    value = body.get(name, default)
    if value is None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(f"{name} must be an integer in [{low}, {high}], got {value!r}", name)
    return value


def _float(body, name, default, low, high) -> float:
    value = body.get(name, default)
    if value is None:
        value = default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(f"{name} must be a number in [{low}, {high}], got {value!r}", name)
    return float(value)


def _stop(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value) or len(value) > 8:
        raise RequestError("stop must be a non-empty string or a list of up to 8 of them", "stop")
    return tuple(value)


def completion_response(model: str, cands: list[Candidate], prompt_len: int, cached: int, chat: bool,
                        logprobs: bool, tokenizer) -> dict:
    """The OpenAI response body, plus the token ids of prompt and choices (token-in, token-out clients)."""
    choices = [_choice(i, c, chat, logprobs, tokenizer) for i, c in enumerate(cands)]
    generated = sum(len(c.token_ids) for c in cands)
    return {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": choices,
            "usage": {"prompt_tokens": prompt_len, "completion_tokens": generated,
                      "total_tokens": prompt_len + generated, "prompt_tokens_details": {"cached_tokens": cached}}}


def _choice(i: int, c: Candidate, chat: bool, logprobs: bool, tokenizer) -> dict:
    pieces = [tokenizer.decode([t]) for t in c.token_ids] if logprobs else []
    if chat:
        lp = {"content": [{"token": p, "logprob": x, "bytes": list(p.encode()), "top_logprobs": []}
                          for p, x in zip(pieces, c.logprobs)]} if logprobs else None
        return {"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": lp,
                "finish_reason": c.finish_reason, "token_ids": c.token_ids}
    lp = {"tokens": pieces, "token_logprobs": c.logprobs, "top_logprobs": None, "text_offset": None} if logprobs else None
    return {"index": i, "text": c.text, "logprobs": lp, "finish_reason": c.finish_reason, "token_ids": c.token_ids}
