"""Task synthesis: an LLM writes tool-use queries from seed images with captions, a second pass checks them.

1. **Write**: for each seed (a file and its caption) the writer model gets the tool list, few-shot example
   queries (the user's, else built-in ones) and the caption, and writes ``queries_per_seed`` queries as
   ``{"query": ...}`` (structured output), each with its own seed.
2. **Check**: each query goes back with the caption; the model replies
   ``{"decision": "keep" | "rewrite" | "drop", "query": ...}``: keep it, replace it by its rewrite, or drop it.
3. **Validate and deduplicate**: length bounds, printable text, no copy of a few-shot example, no
   near-duplicate (character BLEU >= ``dedup_bleu``) of a query already kept for the same file.

Kept tasks are written as task JSON lines (``answer`` is null: synthesised tasks are unlabelled, as in
SPORT) with provenance in ``meta``: writer model, prompt version, seed, check decision and the raw replies.
Everything dropped goes to ``<out>.dropped.jsonl`` with its reason: nothing the model wrote is lost.

``python -m sport_fast.synth`` runs it from the command line. Seeds: a folder of images with ``captions.jsonl`` (``{"image", "caption"}``) or a
``<image>.txt`` beside each, or a JSON-lines file of ``{"image", "caption"}`` (paths relative to it).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from sport_fast.data.bleu import char_bleu
from sport_fast.llm.client import ChatRequest
from sport_fast.run.durable import append_jsonl, read_jsonl
from sport_fast.tasks.task import IMAGE_SUFFIXES, Task, image_problem, save_tasks

PROMPT_VERSION = "synth-v1"
BUILTIN_EXAMPLES = (
    "How many red circles are in the picture?",
    "What is the sum of all prices listed on this receipt?",
    "Which bar in this chart is the shortest, and what colour is it?",
    "Crop the top half of the image and tell me how many shapes it contains.",
)
WRITE_SYSTEM = ("You write tasks for an AI assistant that answers questions about files by calling tools. "
                "A good task is a natural question a user would ask about the file, that needs the tools to "
                "answer, and that has one short, checkable answer.\nTools:\n{tools}\nExample tasks:\n{examples}")
CHECK_SYSTEM = ("You check tasks written for an AI assistant that calls tools on a file. Keep a task that is "
                "natural, specific, answerable from the file as described and needs the tools; rewrite one "
                "that is close but vague or wrong about the file; drop one that cannot be fixed.")
WRITE_SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
CHECK_SCHEMA = {"type": "object", "properties": {"decision": {"type": "string", "enum": ["keep", "rewrite", "drop"]},
                                                 "query": {"type": "string"}}, "required": ["decision", "query"]}


@dataclass
class Seed:
    name: str        # file name the agent sees
    path: str
    caption: str


@dataclass
class SynthConfig:
    queries_per_seed: int = 2
    temperature: float = 0.9
    max_tokens: int = 96
    seed: int = 0
    min_chars: int = 12
    max_chars: int = 400
    dedup_bleu: float = 0.8

    def __post_init__(self) -> None:
        if self.queries_per_seed < 1 or self.max_tokens < 8 or not 0 < self.dedup_bleu <= 1:
            raise ValueError(f"synth config out of range: {self}")


@dataclass
class SynthReport:
    written: int = 0
    kept: int = 0
    rewritten: int = 0
    dropped: dict = field(default_factory=dict)


def synthesize(seeds: list[Seed], backend, tools, out: str | Path, config: SynthConfig | None = None,
               examples: list[str] | None = None) -> tuple[list[Task], SynthReport]:
    """Write, check, validate and deduplicate; save kept tasks to ``out`` and dropped ones beside it."""
    config, out = config or SynthConfig(), Path(out)
    examples = list(examples or BUILTIN_EXAMPLES)
    dropped_path = out.with_name(out.stem + ".dropped.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    dropped_path.unlink(missing_ok=True)
    report, tasks, kept_by_file = SynthReport(), [], {}
    system = WRITE_SYSTEM.format(tools=tools.render(), examples="\n".join(f"- {e}" for e in examples))
    for s_index, seed in enumerate(seeds):
        for j in range(config.queries_per_seed):
            record = _one_query(backend, system, seed, config, seed_value=config.seed * 100_003 + s_index * 101 + j)
            report.written += 1
            problem = record.get("problem") or _invalid(record["query"], examples,
                                                        kept_by_file.setdefault(seed.path, []), config)
            if problem:
                report.dropped[problem.split(":")[0]] = report.dropped.get(problem.split(":")[0], 0) + 1
                append_jsonl(dropped_path, {**record, "seed_file": seed.path, "problem": problem})
                continue
            kept_by_file[seed.path].append(record["query"])
            report.kept += 1
            report.rewritten += record["decision"] == "rewrite"
            tasks.append(_task(seed, record, backend, config))
    save_tasks(out, tasks)
    return tasks, report


def _one_query(backend, system: str, seed: Seed, config: SynthConfig, seed_value: int) -> dict:
    write = backend.complete(ChatRequest(
        messages=(("system", system), ("user", f"File: {seed.name}\nWhat it shows: {seed.caption}\n"
                                               'Write one new task about this file. Reply with JSON {"query": ...}.')),
        schema=WRITE_SCHEMA, temperature=config.temperature, max_tokens=config.max_tokens, seed=seed_value))
    record = {"seed": seed_value, "write_raw": write.text, "check_raw": None, "decision": None, "query": None}
    value, problem = _json_reply(write, {"query"})
    if problem:
        return {**record, "problem": f"write reply {problem}"}
    record["query"] = value["query"].strip()
    check = backend.complete(ChatRequest(
        messages=(("system", CHECK_SYSTEM), ("user", f"File: {seed.name}\nWhat it shows: {seed.caption}\n"
                                                     f"Task: {record['query']}\nReply with JSON "
                                                     '{"decision": "keep" or "rewrite" or "drop", "query": ...}.')),
        schema=CHECK_SCHEMA, temperature=0.0, max_tokens=config.max_tokens, seed=seed_value))
    record["check_raw"] = check.text
    value, problem = _json_reply(check, {"decision", "query"})
    if problem:
        return {**record, "problem": f"check reply {problem}"}
    if value["decision"] not in ("keep", "rewrite", "drop"):
        return {**record, "problem": f"check reply has decision {value['decision']!r}"}
    record["decision"] = value["decision"]
    if value["decision"] == "drop":
        return {**record, "problem": "dropped by the check"}
    if value["decision"] == "rewrite":
        record["original"], record["query"] = record["query"], value["query"].strip()
    return record


def _json_reply(reply, keys: set[str]) -> tuple[dict | None, str | None]:
    if reply.error is not None:
        return None, f"failed: {reply.error}"
    if reply.refusal or reply.finish_reason != "stop":
        return None, f"refused or cut off (finish_reason={reply.finish_reason})"
    try:
        value = json.loads(reply.text or "")
    except json.JSONDecodeError:
        return None, "not JSON"
    if not isinstance(value, dict) or set(value) != keys or not all(isinstance(value[k], str) for k in keys):
        return None, f"not an object with string fields {sorted(keys)}"
    return value, None


def _invalid(query: str, examples: list[str], kept: list[str], config: SynthConfig) -> str | None:
    if not config.min_chars <= len(query) <= config.max_chars:
        return f"length: {len(query)} characters, outside [{config.min_chars}, {config.max_chars}]"
    if not query.isprintable():
        return "unprintable characters"
    if any(char_bleu(query, e) >= config.dedup_bleu for e in examples):
        return "copies a few-shot example"
    if any(char_bleu(query, k) >= config.dedup_bleu for k in kept):
        return "near-duplicate of a kept query"
    return None


def _task(seed: Seed, record: dict, backend, config: SynthConfig) -> Task:
    tid = hashlib.sha256(f"{seed.path}\0{record['query']}".encode()).hexdigest()[:12]
    meta = {"model": backend.name, "prompt_version": PROMPT_VERSION, "seed": record["seed"],
            "check": record["decision"], "write_raw": record["write_raw"], "check_raw": record["check_raw"],
            **({"original": record["original"]} if "original" in record else {})}
    return Task(id=f"synth-{tid}", question=record["query"], answer=None, files={seed.name: seed.path},
                captions={seed.name: seed.caption}, split="train", source="synth", meta=meta)


# -- seeds --------------------------------------------------------------------------------------
def load_seeds(source: str | Path) -> list[Seed]:
    """Seeds from a folder (captions.jsonl or <image>.txt sidecars) or a JSON-lines file; clear errors."""
    source = Path(source)
    if source.is_dir():
        return _folder_seeds(source)
    if source.is_file():
        return [_seed(source.parent, rec, f"{source}:{n}") for n, rec in _jsonl(source)]
    raise FileNotFoundError(f"seeds {source} do not exist")


def suite_seeds(folder: str | Path, seed: int = 0, n: int = 14) -> list[Seed]:
    """The offline suite's training files and captions, one seed per file (the default seeds)."""
    from sport_fast.tasks.suite import generate_suite
    tasks = generate_suite(folder, n_train=n, n_heldout=0, seed=seed)["train"]
    return [Seed(name, path, t.captions[name]) for t in tasks for name, path in t.files.items()]


def _folder_seeds(folder: Path) -> list[Seed]:
    index = folder / "captions.jsonl"
    if index.is_file():
        return [_seed(folder, rec, f"{index}:{n}") for n, rec in _jsonl(index)]
    seeds = []
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        caption = image.with_suffix(".txt")
        if not caption.is_file():
            raise FileNotFoundError(f"seed image {image} has no caption ({caption.name} or captions.jsonl)")
        seeds.append(_seed(folder, {"image": image.name, "caption": caption.read_text().strip()}, str(image)))
    if not seeds:
        raise ValueError(f"seed folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return seeds


def _seed(root: Path, record, where: str) -> Seed:
    if not isinstance(record, dict) or not isinstance(record.get("image"), str) or \
            not isinstance(record.get("caption"), str) or not record["caption"].strip():
        raise ValueError(f"{where}: a seed needs 'image' (a path) and a non-empty 'caption'")
    path = (root / record["image"]).resolve()
    _check_image(path, where)
    return Seed(path.name, str(path), record["caption"].strip())


def _check_image(path: Path, where: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{where}: seed image {path} does not exist")
    problem = image_problem(path)
    if problem:
        raise ValueError(f"{where}: seed image {problem}")


def _jsonl(path: Path):
    return read_jsonl(path, repair=False, what="seed")
