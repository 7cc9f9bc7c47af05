"""Structured output for flat JSON objects: the decoder behind ``response_format`` in ``sport_fast.serve``
and behind the local judge backend.

Supported schema: ``{"type": "object", "properties": {name: {"type": "string", "enum": [...]?}}}`` with
every property required (the judge's ``{"best": <tag>, "reason": <text>}`` and synthesis's records). The
object is written property by property in schema order:

- the literal text between values (``{"best": "``) is forced, never sampled;
- an ``enum`` value is chosen among the options by the log-prob of each option's tokens (greedy at
  temperature 0, else sampled from softmax(logp / T)), each option scored on top of the cached prefix;
- a free string is sampled token by token until the model writes a closing quote or the token budget
  runs out; what it wrote is JSON-escaped, so the reply always parses. Running out is reported as
  ``finish_reason="length"`` (a cut-off reply), never hidden.

The prefix's KV is kept in one cache; scoring an option and then cropping the cache back is cheaper than
re-running the prompt, and token boundaries between forced and sampled text do not matter here (the
reply is text, not training data).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from sport_fast.model.forward_lock import forward_lock
from sport_fast.sampler.prefix_attention import cached_forward_attention
from sport_fast.sampler.sampling import SamplingParams, draw, sample_rows


class SchemaError(ValueError):
    """The schema is outside the supported subset; the message names what is not supported."""


@dataclass(frozen=True)
class Field:
    name: str
    enum: tuple[str, ...] | None


@dataclass
class GuidedReply:
    text: str
    finish_reason: str       # "stop", or "length" when a free string ran out of tokens
    generated_tokens: int


def parse_flat_schema(schema: dict) -> list[Field]:
    """The fields of a supported schema, in order; SchemaError naming the first unsupported part."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise SchemaError("schema must be an object schema ({'type': 'object', 'properties': ...})")
    props = schema.get("properties")
    if not isinstance(props, dict) or not props:
        raise SchemaError("schema needs a non-empty 'properties' object")
    required = schema.get("required", list(props))
    if sorted(required) != sorted(props):
        raise SchemaError("every property must be required (optional properties are not supported)")
    return [_field(name, spec) for name, spec in props.items()]


def _field(name: str, spec: dict) -> Field:
    if not isinstance(spec, dict) or spec.get("type") != "string":
        raise SchemaError(f"property {name!r}: only string properties (optionally with enum) are supported")
    enum = spec.get("enum")
    if enum is None:
        return Field(name, None)
    if not isinstance(enum, list) or not enum or not all(isinstance(e, str) and e for e in enum):
        raise SchemaError(f"property {name!r}: enum must be a non-empty list of non-empty strings")
    return Field(name, tuple(enum))


class GuidedDecoder:
    """Writes one schema-valid JSON object per call with a Hugging Face causal LM."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        eos = getattr(tokenizer, "eos_token_id", None)
        self.stop_ids = () if eos is None else (int(eos),)

    @torch.no_grad()
    def generate(self, prompt_ids: list[int], schema: dict, params: SamplingParams) -> GuidedReply:
        """One reply; holds the model's ``forward_lock`` (the policy may be decoding in another thread)."""
        fields = parse_flat_schema(schema)
        with forward_lock(self.model):
            return self._generate(prompt_ids, fields, params)

    def _generate(self, prompt_ids: list[int], fields: list[Field], params: SamplingParams) -> GuidedReply:
        gen = torch.Generator().manual_seed(params.seed if params.seed is not None else 0)
        cache, state = DynamicCache(), _State(text="", generated=0, finish="stop")
        logits = self._feed(cache, list(prompt_ids))
        for i, f in enumerate(fields):
            literal = ("{" if i == 0 else ", ") + json.dumps(f.name) + ': "'
            state.text += literal
            logits = self._feed(cache, self._encode(literal))
            value, logits = (self._choose(cache, logits, f.enum, params, gen) if f.enum is not None
                             else self._free_string(cache, logits, params, gen, state))
            state.text += value + '"'
        state.text += "}"
        return GuidedReply(text=state.text, finish_reason=state.finish, generated_tokens=state.generated)

    def _choose(self, cache, logits, options, params, gen):
        """(escaped option, logits after it): options scored by their tokens' summed log-prob."""
        start = cache.get_seq_length()
        scores = []
        for option in options:
            ids = self._encode(json.dumps(option)[1:-1] + '"')
            out = self._forward(cache, ids)  # (len, V): predictions after each option token
            logp = torch.log_softmax(torch.cat([logits[None], out[:-1]]).float(), -1)
            scores.append(float(logp[torch.arange(len(ids)), torch.tensor(ids)].sum()))
            _crop_to(cache, start)
        scores_t = torch.tensor(scores)
        pick = int(scores_t.argmax()) if params.temperature == 0 else \
            draw(torch.softmax(scores_t / params.temperature, -1), gen)
        escaped = json.dumps(options[pick])[1:-1]
        return escaped, self._after(cache, escaped)

    def _after(self, cache, escaped: str) -> torch.Tensor:
        """Feed the chosen value and its closing quote; the logits after them."""
        return self._feed(cache, self._encode(escaped + '"'))

    def _free_string(self, cache, logits, params, gen, state):
        """Sample until the model closes the string (or the budget ends); (escaped text, logits after it)."""
        start, ids = cache.get_seq_length(), []
        budget = params.max_new_tokens - state.generated
        content = None
        while budget > 0:
            token = sample_rows(logits[None], [params], [ids], [gen])[0][0]
            ids.append(token)
            budget -= 1
            text = self.tokenizer.decode(ids)
            if '"' in text or token in self.stop_ids:
                content = text.split('"')[0] if '"' in text else self.tokenizer.decode(ids[:-1])
                break
            logits = self._feed(cache, [token])
        state.generated += len(ids)
        if content is None:
            content, state.finish = self.tokenizer.decode(ids), "length"
        escaped = json.dumps(content)[1:-1]
        _crop_to(cache, start)
        return escaped, self._after(cache, escaped)

    def _feed(self, cache, ids: list[int]) -> torch.Tensor:
        """Run ``ids`` on top of ``cache``; the logits after the last one (V,)."""
        return self._forward(cache, ids)[-1]

    def _forward(self, cache, ids: list[int]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        with cached_forward_attention(self.model):
            out = self.model(input_ids=torch.tensor([ids], device=device), past_key_values=cache, use_cache=True)
        return out.logits[0].float()

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)


def _crop_to(cache, length: int) -> None:
    """Keep the first ``length`` positions (this transformers' ``crop`` takes a negative count to remove)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


@dataclass
class _State:
    text: str
    generated: int
    finish: str
