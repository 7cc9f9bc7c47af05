"""SPORT's nine tools under SPORT's names and argument conventions (tongagent's tool box: ``visualizer``,
``objectlocation``, ``facedetection``, ``segmentation``, ``image_generator``, ``image_edit``,
``ask_search_agent``, ``inspect_file_as_text``, ``final_answer``), answered by our backends.

The stub functions are what the agent is told (their signatures are SPORT's: ``visualizer(question,
image_path)``, ...); ``interfaces.Bound`` binds a call to the stub's signature, renames the arguments to
the backend's (``image_path`` -> ``image``) and converts the result to SPORT's shape (objectlocation: a list of
[x1, y1, x2, y2]; ask_search_agent: a string). ``inspect_file_as_text`` runs in the sandbox.
Where SPORT's tool differs from ours, the docstring says so: segmentation returns regions with mask PNGs
(SPORT: a pickle path), and inspect_file_as_text returns the whole text (SPORT asks an LLM the question).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from sport_fast.tools import files
from sport_fast.tools.image import IMAGE_SUFFIXES

FACE_QUERY = "human face"


def visualizer(question: str, image_path: str) -> str:
    """answer questions about an image

    Args:
        question: the question to answer
        image_path: path of the image to answer about
    """


def objectlocation(object: str, image_path: str) -> list:  # noqa: A002 - SPORT's argument name
    """locate objects in an image; returns their bounding boxes [[x1, y1, x2, y2], ...] in pixels

    Args:
        object: the object to locate
        image_path: path of the image
    """


def facedetection(image_path: str) -> list:
    """detect human faces in an image; returns their bounding boxes [[x1, y1, x2, y2], ...] in pixels

    Args:
        image_path: path of the image
    """


def segmentation(image_path: str, prompt: list | None = None) -> list:
    """segment an image into labelled regions [{"label", "area", "bbox", "mask"}], each mask a PNG file

    Args:
        image_path: path of the image
        prompt: bounding boxes to segment inside (e.g. from objectlocation); None or [] for the whole image
    """


def image_generator(prompt: str) -> str:
    """create an image from a text description; returns its path

    Args:
        prompt: the description; details such as "high-res, photorealistic" help
    """


def image_edit(prompt: str, image_path: str) -> str:
    """edit an image as the prompt instructs; returns the new image's path

    Args:
        prompt: how to edit the image
        image_path: the image to edit
    """


def ask_search_agent(query: str) -> str:
    """ask a web-search helper; returns what it found

    Args:
        query: your question as a full sentence with its context, not keywords
    """


def inspect_file_as_text(file_path: str, question: str | None = None) -> str:
    """read a file (pdf, txt, csv, json, html, ...) as text; not for images (use visualizer)

    Args:
        file_path: path of the file
        question: not used: the whole text is returned for you to read
    """
    if Path(file_path).suffix.lower() in IMAGE_SUFFIXES:
        raise ValueError(f"inspect_file_as_text: {file_path} is an image; use visualizer")
    if Path(file_path).suffix.lower() == ".pdf":
        return files.read_file(file_path)
    text = Path(file_path).read_text(encoding="utf-8", errors="replace")
    limit = files.MAX_CHARS
    return text if len(text) <= limit else text[:limit] + f"\n...[{len(text) - limit} more characters]"


class SegmentBoxes:
    """SPORT's segmentation prompt (one box or a list of them) on a ``segment(image, box)`` backend: the
    regions inside each box, tagged with the box's index."""

    def __init__(self, segmenter: Callable):
        self.segmenter = segmenter

    def __call__(self, image_path: str, workdir: str, prompt=None) -> list:
        if not prompt:
            return self.segmenter(image=image_path, workdir=workdir)
        one_box = isinstance(prompt, (str, dict)) or not isinstance(prompt[0], (list, tuple, dict, str))
        boxes = [prompt] if one_box else list(prompt)
        return [{**region, "box": i} for i, box in enumerate(boxes)
                for region in self.segmenter(image=image_path, box=box, workdir=workdir)]


def boxes_only(detections: list[dict]) -> list[list[float]]:
    return [d["box"] for d in detections]


def pixel_boxes(detections: list[dict]) -> list[list[int]]:
    return [[round(v) for v in d["box"]] for d in detections]


def joined_results(results: list[dict]) -> str:
    return "\n\n".join(f"{r['title']}: {r.get('text', '')}" if r.get("title") else str(r.get("text", ""))
                       for r in results)
