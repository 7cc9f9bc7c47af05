"""Task synthesis: write -> check -> validate -> dedupe, provenance, nothing lost; seed loading errors."""
import json

import pytest
from PIL import Image

from sport_fast.llm.client import ChatReply, LocalChatBackend
from sport_fast.llm.synthesis import Seed, SynthConfig, load_seeds, suite_seeds, synthesize
from sport_fast.tasks.task import load_tasks
from sport_fast.tools import default_registry


class ScriptedWriter:
    """Writes queries from a list; the check keeps, rewrites or drops by keyword."""
    name = "scripted"

    def __init__(self, queries):
        self.queries, self.requests = list(queries), []

    def complete(self, request):
        self.requests.append(request)
        if "decision" in request.schema["properties"]:
            task = request.messages[1][1].split("Task: ")[1].split("\nReply")[0]
            decision = "drop" if "DROP" in task else "rewrite" if "vague" in task else "keep"
            query = "How many blue shapes are in shapes.png?" if decision == "rewrite" else task
            return ChatReply(text=json.dumps({"decision": decision, "query": query}), finish_reason="stop")
        item = self.queries.pop(0)
        if isinstance(item, ChatReply):
            return item
        return ChatReply(text=json.dumps({"query": item}), finish_reason="stop")


def image(path, colour="red"):
    Image.new("RGB", (20, 20), colour).save(path)
    return str(path)


def test_write_check_validate_dedupe_with_provenance(tmp_path):
    seeds = [Seed("shapes.png", image(tmp_path / "a.png"), "red and green shapes"),
             Seed("chart.png", image(tmp_path / "b.png"), "a bar chart")]
    writer = ScriptedWriter([
        "How many red shapes are there in shapes.png?",      # kept
        "How many red shapes are there in shapes.png??",     # near-duplicate of the first (same file)
        "Something vague about the picture",                 # rewritten by the check
        "DROP this: what is the meaning of life?",           # dropped by the check
        "Which bar in the chart is the tallest one?",        # kept
        "How many red circles are in the picture?",          # copies a built-in example
        "Hi?",                                               # too short
        ChatReply(text='{"query": "cut', finish_reason="length"),   # cut off
    ])
    out = tmp_path / "out" / "synth.jsonl"
    tasks, report = synthesize(seeds, writer, default_registry(), out, SynthConfig(queries_per_seed=4, seed=7))
    assert [t.question for t in tasks] == ["How many red shapes are there in shapes.png?",
                                           "How many blue shapes are in shapes.png?",
                                           "Which bar in the chart is the tallest one?"]
    assert report.written == 8 and report.kept == 3 and report.rewritten == 1
    dropped = [json.loads(l) for l in (tmp_path / "out" / "synth.dropped.jsonl").read_text().splitlines()]
    assert sorted(d["problem"].split(":")[0] for d in dropped) == sorted([
        "near-duplicate of a kept query", "dropped by the check", "copies a few-shot example", "length",
        "write reply refused or cut off (finish_reason=length)"])
    assert report.written == report.kept + len(dropped), "a written query went missing"
    loaded = load_tasks(out)
    assert [t.question for t in loaded] == [t.question for t in tasks]
    rewritten = loaded[1]
    assert rewritten.answer is None and rewritten.source == "synth" and rewritten.captions == {
        "shapes.png": "red and green shapes"}
    assert rewritten.meta["original"] == "Something vague about the picture" and rewritten.meta["check"] == "rewrite"
    assert rewritten.meta["model"] == "scripted" and rewritten.meta["prompt_version"] == "synth-v1"
    assert "- count_objects(" in writer.requests[0].messages[0][1]  # the tools reach the writer
    seeds_used = [json.loads(l)["meta"]["seed"] for l in out.read_text().splitlines()]
    assert len(set(seeds_used)) == 3


def test_user_examples_replace_the_built_in_ones(tmp_path):
    seeds = [Seed("a.png", image(tmp_path / "a.png"), "red square")]
    writer = ScriptedWriter(["How many red circles are in the picture?"])
    tasks, _ = synthesize(seeds, writer, default_registry(), tmp_path / "s.jsonl", SynthConfig(queries_per_seed=1),
                          examples=["What colour is the square?"])
    assert len(tasks) == 1 and "What colour is the square?" in writer.requests[0].messages[0][1]


def test_seed_sources_and_their_errors(tmp_path):
    folder = tmp_path / "seeds"
    folder.mkdir()
    image(folder / "x.png")
    with pytest.raises(FileNotFoundError, match="x.png has no caption"):
        load_seeds(folder)
    (folder / "x.txt").write_text("a red square\n")
    assert load_seeds(folder) == [Seed("x.png", str((folder / "x.png").resolve()), "a red square")]
    index = tmp_path / "seeds.jsonl"
    index.write_text(json.dumps({"image": "seeds/x.png", "caption": "red"}) + "\n")
    assert load_seeds(index)[0].caption == "red"
    (folder / "bad.png").write_bytes(b"not a png at all")
    index.write_text(json.dumps({"image": "seeds/bad.png", "caption": "x"}) + "\n")
    with pytest.raises(ValueError, match="bad.png is corrupt or not an image"):
        load_seeds(index)
    index.write_text(json.dumps({"image": "seeds/x.png"}) + "\n")
    with pytest.raises(ValueError, match="seeds.jsonl:1: a seed needs 'image'"):
        load_seeds(index)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_seeds(tmp_path / "nowhere")


def test_the_embedded_model_writes_tasks_from_the_suite_files(smollm2, tmp_path):
    seeds = suite_seeds(tmp_path / "suite", n=2)
    assert [s.name for s in seeds] == ["shapes.png", "shapes.png"] and "coloured shapes" in seeds[0].caption
    backend = LocalChatBackend(*smollm2, name="smollm2")
    tasks, report = synthesize(seeds, backend, default_registry(), tmp_path / "t.jsonl",
                               SynthConfig(queries_per_seed=1, max_tokens=48))
    dropped = tmp_path / "t.dropped.jsonl"
    n_dropped = len(dropped.read_text().splitlines()) if dropped.exists() else 0
    assert report.written == 2 and report.kept == len(tasks) and len(tasks) + n_dropped == 2
    for t in tasks:
        assert t.meta["model"] == "local:smollm2" and json.loads(t.meta["write_raw"])["query"]
