"""``detect_objects`` answered by a detector behind a small HTTP protocol (any model, any machine).

Protocol, one request per call:

    POST <url>   Content-Type: application/json
    {"image": "<the image file's bytes, base64>", "text": "red car"}

    200  {"detections": [{"box": [x1, y1, x2, y2], "score": 0.93, "label": "red car"}, ...]}

Boxes are in pixels of the image as sent (x right, y down; x2, y2 excluded), scores in [0, 1]; ``label``
is optional (default: the text). Any other status, or a body not of that shape, is an error, which the
agent sees as the tool's observation. Boxes are clipped to the image and sorted best first here.
"""
from __future__ import annotations

import base64
import json
import math
import urllib.error
import urllib.request

from PIL import Image

from sport_fast.tools.model_backed import resolve_inside
from sport_fast.tools.regions import clip_box


class HTTPDetector:
    open_vocabulary = True   # the protocol carries the text, so the server decides what it can find

    def __init__(self, url: str, timeout_s: float = 60.0):
        self.url, self.timeout_s = url, timeout_s

    def __call__(self, image: str, text: str, workdir: str, top1: bool = False) -> list[dict]:
        path = resolve_inside(workdir, image)
        with Image.open(path) as im:
            width, height = im.size
        body = json.dumps({"image": base64.b64encode(path.read_bytes()).decode(), "text": text}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                answer = json.loads(reply.read())
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"detector at {self.url} answered {err.code}: {err.read()[:200]!r}") from None
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as err:
            raise RuntimeError(f"detector at {self.url} failed: {err}") from None
        found = sorted((_detection(d, text, width, height) for d in _detections(answer)), key=lambda d: -d["score"])
        return found[:1] if top1 else found


def _detections(answer) -> list:
    if not isinstance(answer, dict) or not isinstance(answer.get("detections"), list):
        raise RuntimeError(f"detector reply is not {{\"detections\": [...]}}: {str(answer)[:200]}")
    return answer["detections"]


def _detection(d, text: str, width: int, height: int) -> dict:
    box, score = d.get("box") if isinstance(d, dict) else None, d.get("score") if isinstance(d, dict) else None
    if (not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v)
                                                              for v in box) or not isinstance(score, (int, float))):
        raise RuntimeError(f"detector reply has a malformed detection: {str(d)[:200]}")
    return {"box": clip_box(box, width, height), "score": round(float(score), 4), "label": str(d.get("label") or text)}
