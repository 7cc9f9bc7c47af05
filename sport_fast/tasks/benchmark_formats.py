"""Loading GTA and GAIA task directories, in their published formats, as ``Task``s (the user supplies the data).

GTA: ``dataset.json``, a dict id -> {tools, files: [{type, path}], dialogs: [user, assistant tool calls,
tool replies, final assistant answer], gt_answer}. ``gt_answer`` is {whitelist, blacklist} (scored by
GTA's rule), a list of reference sentences (GTA scores those by embedding similarity, which needs a model:
left unscored here and counted as such), or null (image-generation queries: unscored).
GAIA: ``metadata.jsonl``, lines {task_id, Question, Level, "Final answer", file_name, "Annotator Metadata":
{Tools}}; files beside it.
GTA's expected tools stay GTA's own names (``OCR``, ``TextToBbox``, ...): the evaluation counts them through
the tool set's mapping (``ToolRegistry.benchmark_names``), so ToolAcc counts GTA's tools and a task that
needs one the set lacks is reported as such. GAIA names none: its annotators' tool words map onto ours.
"""
from __future__ import annotations

import json
from pathlib import Path

from sport_fast.run.durable import read_jsonl
from sport_fast.tasks.task import Task

GAIA_TOOL_WORDS = {"calculator": "calculator", "ocr": "ocr", "web browser": "web_search", "search engine": "web_search",
                   "image recognition": "visual_qa", "computer vision": "visual_qa", "python": "calculator",
                   "pdf": "read_file", "spreadsheet": "read_file", "excel": "read_file", "csv": "read_file"}


def load_gta(directory: str | Path) -> list[Task]:
    root = Path(directory)
    data = _read_json(root / "dataset.json")
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{root / 'dataset.json'}: expected a non-empty object of id -> query")
    return [_gta_task(root, str(idx), item) for idx, item in data.items()]


def _gta_task(root: Path, idx: str, item: dict) -> Task:
    try:
        question = next(d["content"] for d in item["dialogs"] if d["role"] == "user")
        calls = [c["function"]["name"] for d in item["dialogs"] if d["role"] == "assistant"
                 for c in d.get("tool_calls", [])]
        files = {f["path"]: str(root / f["path"]) for f in item.get("files", [])}
    except (KeyError, StopIteration, TypeError) as err:
        raise ValueError(f"GTA query {idx}: malformed ({err!r})") from None
    gt = item.get("gt_answer")
    whitelist = gt.get("whitelist") if isinstance(gt, dict) else None
    blacklist = gt.get("blacklist") if isinstance(gt, dict) else None
    return Task(id=f"gta-{idx}", question=question, answer=None, files=files, whitelist=whitelist,
                blacklist=blacklist, expected_tools=list(dict.fromkeys(calls)), split="eval", source="gta")


def load_gaia(directory: str | Path) -> list[Task]:
    root = Path(directory)
    path = root / "metadata.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"GAIA directory {root} has no metadata.jsonl")
    tasks = [_gaia_task(root, rec, f"{path}:{n}") for n, rec in read_jsonl(path, repair=False, what="GAIA record")]
    if not tasks:
        raise ValueError(f"{path} has no tasks")
    return tasks


def _gaia_task(root: Path, rec: dict, where: str) -> Task:
    if "task_id" not in rec or "Question" not in rec:
        raise ValueError(f"{where}: a GAIA record needs task_id and Question")
    tools_text = str((rec.get("Annotator Metadata") or {}).get("Tools", "")).lower()
    expected = sorted({ours for word, ours in GAIA_TOOL_WORDS.items() if word in tools_text})
    files = {rec["file_name"]: str(root / rec["file_name"])} if rec.get("file_name") else {}
    answer = rec.get("Final answer")
    return Task(id=f"gaia-{rec['task_id']}", question=rec["Question"], answer=None if answer in (None, "?") else str(answer),
                files=files, expected_tools=expected, split=f"level{rec.get('Level', '?')}", source="gaia")


def _read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
