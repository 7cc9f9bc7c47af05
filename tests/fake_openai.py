"""One loopback OpenAI-compatible endpoint for tests: records every request and answers as told.

``FakeOpenAI(respond)`` serves on a free port in a daemon thread; ``respond(path, body, server)`` returns
``(status, payload)`` or ``(status, payload, content_type)``, payload a JSON-able object or raw bytes; it
may sleep to play a slow server. ``server.requests`` holds (path, body) of every POST, ``server.hits``
their count, ``server.url`` the base URL for the ``openai`` client.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def chat_reply(content, finish_reason="stop", refusal=None) -> dict:
    """A chat completion body with one choice."""
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "finish_reason": finish_reason,
         "message": {"role": "assistant", "refusal": refusal, "content": content}}]}


class FakeOpenAI:
    def __init__(self, respond):
        self.requests: list[tuple[str, dict]] = []
        self.lock, state = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with state.lock:
                    state.requests.append((self.path, json.loads(raw or b"{}")))
                self._send(*respond(self.path, state.requests[-1][1], state))

            def do_GET(self):  # noqa: N802
                self._send(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

            def _send(self, status, payload, ctype="application/json"):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:  # a client that timed out left, as it should
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *a: None  # a client that timed out closed the socket: expected
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def hits(self) -> int:
        return len(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
