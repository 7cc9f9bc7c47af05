"""An OpenAI-compatible HTTP server over the prefix-caching sampler (``python -m sport_fast.serve`` runs it).

Endpoints: GET /v1/models, POST /v1/completions (prompt: text or token ids), POST /v1/chat/completions.
Fields: n, temperature, top_p, top_k, max_tokens, stop, logprobs, seed, and for chat ``response_format``
with a JSON schema of flat string/enum properties (``sport_fast.sampler.guided``). Each choice also carries its
``token_ids`` (and the reply the prompt's), so token-in, token-out clients never re-tokenise. Prompts reuse
cached prefixes across requests (``usage.prompt_tokens_details.cached_tokens`` says how many). Requests are
served by threads; completions that arrive while the model is busy decode together as one batch
(``request_batcher.py``); structured-output requests run one at a time. A malformed request gets a 4xx
naming the field.

Weights at run time, as vLLM and SGLang take them (``served_weights.py``): POST /v1/load_lora_adapter (or
/load_lora_adapter) ``{"lora_name", "lora_path"}`` serves the base plus that peft adapter under
``lora_name`` (one adapter at a time: requests must then name it); /v1/unload_lora_adapter ``{"lora_name"}``
goes back to the base; /update_weights_from_disk ``{"model_path"}`` loads full weights in place; every one of
them, and /reset_prefix_cache (or /flush_cache), drops every cached prefix, so the first request after a
load reports ``cached_tokens`` 0. Replies carry ``weight_version``, bumped by every load.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sport_fast.model.chat_format import template_ids
from sport_fast.sampler.guided import GuidedDecoder, SchemaError
from sport_fast.sampler.protocol import RequestError, completion_response, parse_response_format, parse_sampling
from sport_fast.sampler.prefix_cache import PrefixCache
from sport_fast.sampler.prefix_sampler import PrefixSampler
from sport_fast.sampler.request_batcher import RequestBatcher
from sport_fast.sampler.sampling import Candidate
from sport_fast.sampler.served_weights import WeightsLoadError, load_full_weights, with_adapter, without_adapter

MAX_BODY = 16 << 20
ADMIN_ROUTES = {"/v1/load_lora_adapter": "load_adapter", "/load_lora_adapter": "load_adapter",
                "/v1/unload_lora_adapter": "unload_adapter", "/unload_lora_adapter": "unload_adapter",
                "/update_weights_from_disk": "update_weights", "/reset_prefix_cache": "reset_cache",
                "/flush_cache": "reset_cache"}


class SamplerService:
    """The model behind the server: tokenisation, the prefix cache and the sampler, under one lock."""

    def __init__(self, model, tokenizer, name: str, cache_entries: int = 32, seed: int = 0):
        self.name, self.base_name, self.tokenizer = name, name, tokenizer
        self.sampler = PrefixSampler(model, tokenizer, seed=seed)
        self.cache = PrefixCache(self.sampler, cache_entries)
        self.guided = GuidedDecoder(model, tokenizer)
        self.lock = threading.RLock()
        self.batcher = RequestBatcher(self)   # concurrent requests decode as one batch
        self.weight_version = 0
        eos = getattr(tokenizer, "eos_token_id", None)
        self.eos_ids = () if eos is None else (int(eos),)

    def handle(self, path: str, body: dict) -> dict:
        chat = path == "/v1/chat/completions"
        if body.get("model") not in (None, self.name):
            raise RequestError(f"model {body.get('model')!r} is not served here (serving {self.name!r})", "model", 404)
        request = parse_sampling(body, chat, self.eos_ids)
        prompt = self._chat_prompt(body) if chat else self._prompt(body)
        schema = parse_response_format(body) if chat else None
        if schema is not None:
            return self._guided(prompt, schema, request)
        cands, cached = self.batcher.sample(prompt, request.params)
        reply = completion_response(self.name, cands, len(prompt), cached, chat, request.logprobs, self.tokenizer)
        reply["prompt_token_ids"], reply["weight_version"] = prompt, self.weight_version
        return reply

    # -- weights at run time ------------------------------------------------------------------------
    def admin(self, path: str, body: dict) -> dict:
        """One of ``ADMIN_ROUTES``: load or drop weights, or reset the prefix cache; 400 naming what is wrong."""
        action = ADMIN_ROUTES[path]
        with self.lock:
            try:
                message = getattr(self, f"_{action}")(body if isinstance(body, dict) else {})
            except WeightsLoadError as err:
                raise RequestError(str(err), "lora_path" if "lora" in path else "model_path") from None
            return {"success": True, "message": message, "weight_version": self.weight_version}

    def _load_adapter(self, body: dict) -> str:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
            raise RequestError("load_lora_adapter needs lora_name and lora_path (non-empty strings)", "lora_name")
        if name == self.name:
            raise RequestError(f"the lora adapter {name!r} has already been loaded (unload it first)", "lora_name")
        self.swap(with_adapter(self.sampler.model, path), name)
        return f"adapter {name!r} from {path} serves now (weight version {self.weight_version})"

    def _unload_adapter(self, body: dict) -> str:
        if body.get("lora_name") != self.name or self.name == self.base_name:
            raise RequestError(f"no lora adapter {body.get('lora_name')!r} is loaded", "lora_name", 404)
        self.swap(without_adapter(self.sampler.model), self.base_name)
        return f"back to the base model {self.base_name!r}"

    def _update_weights(self, body: dict) -> str:
        path = body.get("model_path")
        if not isinstance(path, str) or not path:
            raise RequestError("update_weights_from_disk needs model_path (a folder of .safetensors)", "model_path")
        self.swap(load_full_weights(self.sampler.model, path), self.base_name)
        return f"weights from {path} serve now under {self.base_name!r} (weight version {self.weight_version})"

    def _reset_cache(self, body: dict) -> str:
        self.swap(self.sampler.model, self.name, bump=False)
        return "prefix cache reset"

    def swap(self, model, name: str, bump: bool = True) -> None:
        """Serve ``model`` as ``name``: every cached prefix is dropped and rebuilt on demand (never reused)."""
        self.sampler.model, self.guided.model, self.name = model, model, name
        self.sampler.load_weights()
        self.cache = PrefixCache(self.sampler, self.cache.max_entries)
        self.weight_version += bump

    def _guided(self, prompt: list[int], schema: dict, request) -> dict:
        if request.logprobs:
            raise RequestError("logprobs are not returned with response_format", "logprobs")
        cands = []
        for p in request.params:
            try:
                with self.lock:
                    reply = self.guided.generate(prompt, schema, p)
            except SchemaError as err:
                raise RequestError(f"response_format: {err}", "response_format") from None
            ids = self.tokenizer.encode(reply.text, add_special_tokens=False)
            cands.append(Candidate(token_ids=ids, finish_reason=reply.finish_reason, text=reply.text))
        out = completion_response(self.name, cands, len(prompt), 0, True, False, self.tokenizer)
        out["prompt_token_ids"], out["weight_version"] = prompt, self.weight_version
        return out

    def _prompt(self, body: dict) -> list[int]:
        prompt = body.get("prompt")
        if isinstance(prompt, str) and prompt:
            return self.tokenizer.encode(prompt, add_special_tokens=False)
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            vocab = len(self.tokenizer)
            if not all(0 <= t < vocab for t in prompt):
                raise RequestError(f"prompt token ids must be in [0, {vocab})", "prompt")
            return prompt
        raise RequestError("prompt must be a non-empty string or a non-empty list of token ids", "prompt")

    def _chat_prompt(self, body: dict) -> list[int]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages must be a non-empty list", "messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool") \
                    or not isinstance(m.get("content"), str):
                raise RequestError(f"messages[{i}] needs a role (system, user, assistant, tool) and text content",
                                   "messages")
        return template_ids(self.tokenizer, messages)


class SamplerHandler(BaseHTTPRequestHandler):
    """HTTP routes over ``service`` (set per server by ``make_handler``); every reply is JSON."""
    protocol_version = "HTTP/1.1"
    service: SamplerService

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path.rstrip("/") == "/v1/models":
            return self._send(200, {"object": "list", "data": [
                {"id": self.service.name, "object": "model", "created": 0, "owned_by": "sport_fast"}]})
        self._send(404, RequestError(f"no route GET {self.path}", status=404).body())

    def do_POST(self):  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        if path not in ("/v1/completions", "/v1/chat/completions", *ADMIN_ROUTES):
            return self._send(404, RequestError(f"no route POST {self.path}", status=404).body())
        try:
            serve = self.service.admin if path in ADMIN_ROUTES else self.service.handle
            self._send(200, serve(path, self._body(allow_empty=path in ADMIN_ROUTES)))
        except RequestError as err:
            self._send(err.status, err.body())
        except Exception as err:  # noqa: BLE001 - the server must answer, never die, on any request
            self._send(500, {"error": {"message": f"internal error: {type(err).__name__}: {err}",
                                       "type": "server_error", "param": None, "code": None}})

    def _body(self, allow_empty: bool = False) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if allow_empty and length == 0:
            return {}
        if not 0 < length <= MAX_BODY:
            raise RequestError(f"request body must be 1 byte to {MAX_BODY} bytes of JSON")
        try:
            return json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestError(f"request body is not valid JSON: {err}") from err

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):  # quiet by default; errors still reach the client
        pass


def make_handler(service: SamplerService) -> type[SamplerHandler]:
    return type("Handler", (SamplerHandler,), {"service": service})


def start_server(service: SamplerService, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Serve in a daemon thread; ``server.server_address`` has the bound port."""
    server = ThreadingHTTPServer((host, port), make_handler(service))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
