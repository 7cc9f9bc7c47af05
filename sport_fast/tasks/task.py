"""A tool-use task with a known answer, and its JSON-lines file.

``files`` maps the name the agent sees in its working directory to a path on disk; in a task file, paths
are stored relative to the file's folder so a suite can be moved. ``whitelist``/``blacklist`` (GTA's
answer form) select GTA's rule; otherwise the answer is scored by GAIA's rule (``eval.py``).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sport_fast.run.durable import atomic_write, read_jsonl
from sport_fast.tools.image import IMAGE_SUFFIXES



@dataclass
class Task:
    id: str
    question: str
    answer: str | None
    files: dict[str, str] = field(default_factory=dict)
    expected_tools: list[str] = field(default_factory=list)
    whitelist: list[list[str]] | None = None
    blacklist: list[list[str]] | None = None
    split: str = "train"
    source: str = "suite"
    reference_steps: list[str] = field(default_factory=list)  # a program that solves it, step by step
    captions: dict[str, str] = field(default_factory=dict)     # file name -> what it shows (judge, synthesis)
    meta: dict = field(default_factory=dict)                   # provenance (synthesis: model, prompt, seed)

    def __post_init__(self) -> None:
        if not self.id or not self.question.strip():
            raise ValueError(f"task {self.id!r}: id and question must be non-empty")

    @property
    def scored(self) -> bool:
        return self.answer is not None or self.whitelist is not None


def save_tasks(path: str | Path, tasks: list[Task]) -> None:
    path = Path(path)
    root = path.parent.resolve()
    lines = []
    for task in tasks:
        record = asdict(task)
        record["files"] = {k: os.path.relpath(Path(v).resolve(), root) for k, v in task.files.items()}
        lines.append(json.dumps(record) + "\n")
    atomic_write(path, "".join(lines))


def load_tasks(path: str | Path) -> list[Task]:
    """Tasks of a JSON-lines file; one clear error naming the file and line for anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    tasks = [_task(record, path, n) for n, record in read_jsonl(path, repair=False, what="task")]
    if not tasks:
        raise ValueError(f"task file {path} has no tasks")
    for task in tasks:
        missing = [v for v in task.files.values() if not Path(v).is_file()]
        if missing:
            raise FileNotFoundError(f"{path}: task {task.id} names a missing file {missing[0]}")
    return tasks


def _task(record, path: Path, n: int) -> Task:
    try:
        record["files"] = {k: str(path.parent / v) for k, v in record.get("files", {}).items()}
        return Task(**record)
    except (AttributeError, TypeError, ValueError) as err:
        raise ValueError(f"{path}:{n}: not a valid task: {err}") from None


def is_image(name: str | Path) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def image_problem(path) -> str | None:
    """Why the image file at ``path`` cannot be used (missing, corrupt, not an image), or None. Non-image
    suffixes (CSV, PDF) are not checked."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    if not path.is_file():
        return f"{path} does not exist"
    if not is_image(path):
        return None
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        return f"{path} is corrupt or not an image ({err})"
    return None
