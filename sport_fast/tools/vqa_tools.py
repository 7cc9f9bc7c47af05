"""GTA's perception tools on top of any visual-question-answering backend, asked the way GTA's tools ask
LLaVA: ImageDescription ("Describe the image in detail"), RegionAttributeDescription (the region cut out,
then described) and CountGivenObject (a count asked for, the first number of the reply taken).

A backend is ``vqa(image, question, workdir) -> str`` (``model_backed.OpenAIVisionQA`` or a user function).
A region is cut into a hidden file of the working directory for the question, and removed after.
"""
from __future__ import annotations

import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from sport_fast.tools.model_backed import resolve_inside
from sport_fast.tools.regions import parse_box

NUMBER_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}
_COUNT = re.compile(r"\b(\d+|" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)


class VQADescription:
    """``describe_image`` answered by a VQA backend."""

    def __init__(self, vqa: Callable):
        self.vqa = vqa

    def __call__(self, image: str, workdir: str) -> str:
        return self.vqa(image=image, question="Describe the image in detail.", workdir=workdir)


class VQARegionDescription:
    """``describe_region``: the box cut out and shown to the VQA backend alone."""

    def __init__(self, vqa: Callable):
        self.vqa = vqa

    def __call__(self, image: str, box, attribute: str, workdir: str) -> str:
        with _region_file(workdir, image, box) as region:
            return self.vqa(image=region, question=f"Describe {attribute} in the image in detail.", workdir=workdir)


class VQACount:
    """``count_given_object``: the first number (digits or a word up to twelve) of the backend's reply."""

    def __init__(self, vqa: Callable):
        self.vqa = vqa

    def __call__(self, image: str, text: str, workdir: str, box=None) -> int:
        question = f"How many {text} are in the image? Answer with a number."
        if box is None:
            reply = self.vqa(image=image, question=question, workdir=workdir)
        else:
            with _region_file(workdir, image, box) as region:
                reply = self.vqa(image=region, question=question, workdir=workdir)
        found = _COUNT.search(str(reply))
        if found is None:
            raise RuntimeError(f"count_given_object: the model's reply has no number: {str(reply)[:200]!r}")
        word = found.group(1).lower()
        return int(word) if word.isdigit() else NUMBER_WORDS[word]


@contextmanager
def _region_file(workdir: str, image: str, box) -> Iterator[str]:
    """The name of a hidden PNG of the box's pixels at the top of the working directory, removed after."""
    source = resolve_inside(workdir, image)
    path = Path(workdir).resolve() / f".region_{uuid.uuid4().hex[:8]}.png"
    with Image.open(source) as im:
        im.convert("RGB").crop(parse_box(box, im.width, im.height)).save(path)
    try:
        yield path.name
    finally:
        path.unlink(missing_ok=True)
