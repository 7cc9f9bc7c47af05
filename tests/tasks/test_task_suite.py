"""The offline suite: reproducible, split-disjoint, and every task solvable by its tools in the sandbox."""
import filecmp
import json

import pytest

from sport_fast.tasks.answer_rules import gaia_correct
from sport_fast.sandbox.layers import REQUIRED_LAYERS, available_layers
from sport_fast.sandbox.sandbox import Sandbox
from sport_fast.tasks.suite import FAMILIES, generate_suite
from sport_fast.tasks.task import Task, load_tasks, save_tasks
from sport_fast.tools import default_registry
from sport_fast.tools.ocr import shutil as ocr_shutil


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    return out, generate_suite(out, n_train=2 * len(FAMILIES), n_heldout=len(FAMILIES), seed=3)


def test_same_seed_same_bytes_and_splits_share_nothing(suite, tmp_path):
    out, tasks = suite
    generate_suite(tmp_path, n_train=2 * len(FAMILIES), n_heldout=len(FAMILIES), seed=3)
    assert (out / "train.jsonl").read_text() == (tmp_path / "train.jsonl").read_text()
    for task in tasks["train"] + tasks["heldout"]:
        for name, path in task.files.items():
            twin = tmp_path / "files" / task.id.rsplit("-", 1)[0] / name
            assert filecmp.cmp(path, twin, shallow=False), f"{task.id}/{name} differs between two generations"
    assert {t.split for t in tasks["heldout"]} == {"heldout"} and {t.split for t in tasks["train"]} == {"train"}
    train_files = {open(p, "rb").read() for t in tasks["train"] for p in t.files.values()}
    assert not train_files & {open(p, "rb").read() for t in tasks["heldout"] for p in t.files.values()}, \
        "a held-out task shares a file with a training task"


def test_every_task_is_solved_by_its_reference_program_in_the_sandbox(suite):
    _, tasks = suite
    sandbox = Sandbox(timeout_s=30, tools=default_registry(),
                      allow_weak_isolation=not all(available_layers()[k] for k in REQUIRED_LAYERS))
    for task in tasks["train"] + tasks["heldout"]:
        needs_ocr = "ocr" in task.expected_tools
        if needs_ocr and ocr_shutil.which("tesseract") is None:
            continue
        r = sandbox.run(task.reference_steps[-1], files=task.files, prelude=task.reference_steps[:-1])
        assert r.has_final_answer and not r.prelude_errors, f"{task.id}: {r}"
        assert gaia_correct(r.final_answer, task.answer), f"{task.id}: got {r.final_answer!r}, want {task.answer!r}"
        called = {c["name"] for c in r.tool_calls}
        assert set(task.expected_tools) <= called, f"{task.id}: expected tools {task.expected_tools}, called {called}"


def test_task_files_round_trip_and_bad_files_are_named(suite, tmp_path):
    out, tasks = suite
    loaded = load_tasks(out / "heldout.jsonl")
    assert [t.id for t in loaded] == [t.id for t in tasks["heldout"]]
    assert loaded[0].files == tasks["heldout"][0].files
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="has no tasks"):
        load_tasks(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "question": "q", "answer": "1"}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a valid task"):
        load_tasks(bad)
    gone = tmp_path / "gone.jsonl"
    save_tasks(gone, [Task(id="g", question="q", answer="1", files={"x.png": str(tmp_path / "x.png")})])
    with pytest.raises(FileNotFoundError, match="names a missing file"):
        load_tasks(gone)
