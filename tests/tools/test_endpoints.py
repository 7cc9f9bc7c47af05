"""Backends behind endpoints, against loopback servers that record what reached them: the HTTP detector
protocol (image bytes and text out; boxes clipped and sorted back; failures as observations) and the
OpenAI-compatible images endpoints (the PNG they return lands in the working directory)."""
import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from sport_fast.sandbox.layers import REQUIRED_LAYERS, available_layers
from sport_fast.sandbox.sandbox import Sandbox
from sport_fast.tools import tool_set
from sport_fast.tools.http_detector import HTTPDetector
from sport_fast.tools.model_backed import OpenAIImageEditor, OpenAIImageGenerator

WEAK = not all(available_layers()[k] for k in REQUIRED_LAYERS)


def png(w=30, h=20, seed=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class Loopback:
    """A server answering every POST with ``reply(path, body) -> (status, json)``, recording (path, body)."""

    def __init__(self, reply):
        self.requests, state = [], self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                state.requests.append((self.path, body))
                status, answer = reply(self.path, body)
                data = json.dumps(answer).encode() if not isinstance(answer, bytes) else answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def detector_server():
    detections = [{"box": [-3, 2, 12.34, 9], "score": 0.4}, {"box": [5, 5, 40, 25], "score": 0.9, "label": "cat"}]
    server = Loopback(lambda path, body: (200, {"detections": detections}))
    yield server
    server.close()


def test_http_detector_sends_the_image_and_text_and_clips_and_sorts_the_boxes(detector_server, tmp_path):
    (tmp_path / "pic.png").write_bytes(png())
    found = HTTPDetector(detector_server.url + "/detect")("pic.png", "cat", workdir=str(tmp_path))
    assert found == [{"box": [5.0, 5.0, 30.0, 20.0], "score": 0.9, "label": "cat"},
                     {"box": [0.0, 2.0, 12.3, 9.0], "score": 0.4, "label": "cat"}]
    path, body = detector_server.requests[0]
    sent = json.loads(body)
    assert path == "/detect" and sent["text"] == "cat" and base64.b64decode(sent["image"]) == png()
    assert HTTPDetector(detector_server.url)("pic.png", "cat", workdir=str(tmp_path), top1=True) == found[:1]


@pytest.mark.parametrize("status, answer, match", [
    (500, {"error": "out of memory"}, "answered 500"), (200, {"boxes": []}, "is not"),
    (200, {"detections": [{"box": [1, 2, 3], "score": 1}]}, "malformed"), (200, b"not json", "failed")])
def test_http_detector_failures_are_the_tools_observation(tmp_path, status, answer, match):
    server = Loopback(lambda path, body: (status, answer))
    try:
        reg = tool_set("gta", detector=HTTPDetector(server.url, timeout_s=5))
        r = Sandbox(timeout_s=20, tools=reg, allow_weak_isolation=WEAK).run(
            "try:\n    detect_objects('pic.png', 'cat')\nexcept RuntimeError as e:\n    print(e)", files={"pic.png": png()})
    finally:
        server.close()
    assert r.stdout.startswith("detect_objects: RuntimeError: detector") and match in r.stdout, r


def images_reply(path, body):
    return 200, {"created": 0, "data": [{"b64_json": base64.b64encode(png(8, 8, seed=7)).decode()}]}


def test_image_generation_and_editing_write_the_returned_png_into_the_workdir(tmp_path):
    server = Loopback(images_reply)
    try:
        generate = OpenAIImageGenerator(server.url + "/v1", "sd", size="256x256", max_retries=0)
        edit = OpenAIImageEditor(server.url + "/v1", "pix2pix", max_retries=0)
        reg = tool_set("gta", image_generator=generate, image_editor=edit)
        r = Sandbox(timeout_s=30, tools=reg, allow_weak_isolation=WEAK).run(
            "a = generate_image('a red square')\nb = edit_image('pic.png', prompt='make it blue')\n"
            "print(a.startswith('generated_'), b.startswith('pic_edited_'), open(a, 'rb').read() == open(b, 'rb').read())",
            files={"pic.png": png()})
    finally:
        server.close()
    assert r.stdout == "True True True\n", r
    (gen_path, gen_body), (edit_path, edit_body) = server.requests
    assert gen_path == "/v1/images/generations" and json.loads(gen_body) == {
        "model": "sd", "prompt": "a red square", "size": "256x256", "n": 1, "response_format": "b64_json"}
    assert edit_path == "/v1/images/edits" and b"make it blue" in edit_body and png() in edit_body
    assert len([f for f in r.files if f.endswith(".png")]) == 3
