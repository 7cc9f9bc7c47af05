"""What the agent is told about each model-backed (host) tool, whatever backend answers it, and ``Bound``,
which holds the agent's calls to it.

The stub functions are never called: their signatures and docstrings are the tools' descriptions in the
prompt (``describe.py``), so an endpoint, a local Hugging Face model and a user's function filling the same
tool are described once. A backend is a host callable called with the interface's arguments, by keyword,
plus ``workdir`` (the run's working directory, where file arguments are resolved and output files go).
"""
from __future__ import annotations

import inspect
from typing import Callable


class Bound:
    """A backend behind an interface: the agent's call is bound to ``spec``'s signature (a wrong call fails
    with Python's own message, naming the tool), arguments are renamed (``rename``: spec's name -> backend's),
    ``fixed`` ones added, and the result passed through ``convert``."""

    def __init__(self, backend: Callable, spec: Callable, rename: dict[str, str] | None = None,
                 fixed: dict | None = None, convert: Callable | None = None):
        self.backend, self.spec, self.signature = backend, spec, inspect.signature(spec)
        self.rename, self.fixed, self.convert = rename or {}, fixed or {}, convert

    def __call__(self, *args, workdir: str, **kwargs):
        bound = self.signature.bind(*args, **kwargs)
        named = {self.rename.get(k, k): v for k, v in bound.arguments.items()}
        result = self.backend(**named, **self.fixed, workdir=workdir)
        return self.convert(result) if self.convert else result


def visual_qa(image: str, question: str) -> str:
    """answer a question about an image

    Args:
        image: the image file
        question: the question, as a sentence
    """


def describe_image(image: str) -> str:
    """a detailed description of an image

    Args:
        image: the image file
    """


def describe_region(image: str, box: list | str, attribute: str) -> str:
    """describe one attribute (colour, text, material, ...) of a region of an image

    Args:
        image: the image file
        box: the region (x1, y1, x2, y2) in pixels, like crop's box
        attribute: what to describe, e.g. "the colour of the car"
    """


def count_given_object(image: str, text: str, box: list | str | None = None) -> int:
    """how many of an object there are in an image (or in a region of it)

    Args:
        image: the image file
        text: the object, in English, e.g. "apples"
        box: only this region (x1, y1, x2, y2), like crop's box
    """


def detect_objects(image: str, text: str, top1: bool = False) -> list:
    """find objects matching a description: [{"box": [x1, y1, x2, y2], "score", "label"}], best first

    Args:
        image: the image file
        text: the object, in English, e.g. "red car"
        top1: only the best match
    """


def segment(image: str, box: list | str | None = None) -> list:
    """segment an image into labelled regions: [{"label", "area", "bbox", "mask"}], mask a PNG file

    Args:
        image: the image file
        box: only the parts of regions inside this box (x1, y1, x2, y2)
    """


def web_search(query: str) -> list:
    """search the web; a list of results with title and text

    Args:
        query: what to search for
    """


def generate_image(prompt: str) -> str:
    """draw an image from a text description; returns the new image's path

    Args:
        prompt: what the image shows
    """


def edit_image(image: str, prompt: str) -> str:
    """edit or restyle an image as instructed; returns the new image's path

    Args:
        image: the image file
        prompt: the instruction, e.g. "make it look like a watercolour"
    """
