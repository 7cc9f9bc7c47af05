"""Loopback stand-ins for the admin routes of vLLM and SGLang, as the engines document and serve them, for the
tests of the engine admin client (``sport_fast.sampler.engines``). Each records every request (method, path,
content type, JSON body) and keeps the state its routes change, answering as its engine does:

vLLM (started with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``):
  POST /v1/load_lora_adapter {"lora_name", "lora_path"}: 200 and a plain-text line; 400 with a JSON error
    if that name is already loaded, 404 if the folder holds no adapter;
  POST /v1/unload_lora_adapter {"lora_name"}: 200, 404 if no adapter has that name;
  POST /reset_prefix_cache: 200, empty body (served only with ``VLLM_SERVER_DEV_MODE=1``: else 404);
  a JSON route refuses another content type (400); there is no update_weights_from_disk (404).
SGLang:
  POST /load_lora_adapter, /unload_lora_adapter: {"success", "error_message", "loaded_adapters"}, 400 when
    success is false;
  POST /update_weights_from_disk {"model_path"}: {"success", "message", "num_paused_requests"}, 400 when it
    fails (here: the folder holds no config.json);
  POST /flush_cache: 200 and a two-line text; 400 while requests are running (``busy``).

``scripted[path] = (status, payload, content_type)`` answers that path as told instead (payload bytes or
JSON-able), for replies no well-behaved engine gives; ``delay_s`` holds every answer back.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

JSON, TEXT = "application/json", "text/plain; charset=utf-8"


class FakeEngine:
    def __init__(self, kind: str, dev_mode: bool = True, busy: bool = False):
        assert kind in ("vllm", "sglang"), kind
        self.kind, self.dev_mode, self.busy, self.delay_s = kind, dev_mode, busy, 0.0
        self.requests: list[tuple[str, str, str, dict]] = []  # (method, path, content type, body)
        self.adapters: dict[str, str] = {}                     # name -> folder
        self.weights: str | None = None                        # the folder of the last full-weights load
        self.flushes = 0
        self.scripted: dict[str, tuple] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.root = self.url[: -len("/v1")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, ctype: str, body: dict) -> tuple:
        if path in self.scripted:
            return self.scripted[path]
        routes = VLLM_ROUTES if self.kind == "vllm" else SGLANG_ROUTES
        if path not in routes:
            return 404, {"detail": "Not Found"}, JSON
        if ctype.split(";")[0].strip() != JSON and self.kind == "vllm" and path.startswith("/v1/"):
            return 400, vllm_error("Unsupported Media Type: Only 'application/json' is allowed", 400), JSON
        return routes[path](self, body)


def _handler(engine: FakeEngine):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            ctype = self.headers.get("Content-Type", "")
            body = json.loads(raw) if raw else {}
            engine.requests.append(("POST", self.path, ctype, body))
            time.sleep(engine.delay_s)
            status, payload, reply_type = engine.answer(self.path, ctype, body)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", reply_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                pass

        def log_message(self, *args):
            pass
    return Handler


def vllm_error(message: str, code: int) -> dict:
    kind = {400: "BadRequestError", 404: "NotFoundError"}[code]
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def vllm_load(engine: FakeEngine, body: dict) -> tuple:
    name, path = body["lora_name"], body["lora_path"]
    if name in engine.adapters:
        return 400, vllm_error(f"The lora adapter '{name}' has already been loaded.", 400), JSON
    if not (Path(path) / "adapter_config.json").exists():
        return 404, vllm_error(f"No adapter found for {path}", 404), JSON
    engine.adapters[name] = path
    return 200, f"Success: LoRA adapter '{name}' added successfully.".encode(), TEXT


def vllm_unload(engine: FakeEngine, body: dict) -> tuple:
    name = body["lora_name"]
    if engine.adapters.pop(name, None) is None:
        return 404, vllm_error(f"The lora adapter '{name}' cannot be found.", 404), JSON
    return 200, f"Success: LoRA adapter '{name}' removed successfully.".encode(), TEXT


def vllm_reset(engine: FakeEngine, body: dict) -> tuple:
    if not engine.dev_mode:
        return 404, {"detail": "Not Found"}, JSON
    engine.flushes += 1
    return 200, b"", TEXT


def lora_update(engine: FakeEngine, error: str | None) -> tuple:
    reply = {"success": error is None, "error_message": error, "loaded_adapters": dict(engine.adapters)}
    return (200 if error is None else 400), reply, JSON


def sglang_load(engine: FakeEngine, body: dict) -> tuple:
    name, path = body["lora_name"], body["lora_path"]
    if name in engine.adapters:
        return lora_update(engine, f"LoRA adapter {name} is already loaded")
    if not (Path(path) / "adapter_config.json").exists():
        return lora_update(engine, f"Failed to load LoRA adapter {name}: no adapter_config.json in {path}")
    engine.adapters[name] = path
    return lora_update(engine, None)


def sglang_unload(engine: FakeEngine, body: dict) -> tuple:
    found = engine.adapters.pop(body["lora_name"], None) is not None
    return lora_update(engine, None if found else f"LoRA adapter {body['lora_name']} is not loaded")


def sglang_update_weights(engine: FakeEngine, body: dict) -> tuple:
    path = body["model_path"]
    if not (Path(path) / "config.json").exists():
        message = f"Failed to get weights iterator: {path} (repository not found)."
        return 400, {"success": False, "message": message, "num_paused_requests": 0}, JSON
    engine.weights = path
    return 200, {"success": True, "message": "Succeeded to update model weights.", "num_paused_requests": 0}, JSON


def sglang_flush(engine: FakeEngine, body: dict) -> tuple:
    engine.flushes += not engine.busy
    text = ("Cache flushed.\nPlease check backend logs for more details. (When there are running or waiting "
            "requests, the operation will not be performed.)\n")
    return (400 if engine.busy else 200), text.encode(), TEXT


VLLM_ROUTES = {"/v1/load_lora_adapter": vllm_load, "/v1/unload_lora_adapter": vllm_unload,
               "/reset_prefix_cache": vllm_reset}
SGLANG_ROUTES = {"/load_lora_adapter": sglang_load, "/unload_lora_adapter": sglang_unload,
                 "/update_weights_from_disk": sglang_update_weights, "/flush_cache": sglang_flush}
