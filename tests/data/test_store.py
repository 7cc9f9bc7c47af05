"""StepStore: append-only, survives SIGKILL mid-write, deduplicates, stores images once, refuses corruption."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sport_fast import StepGroup, StepStore


def group(i: int) -> StepGroup:
    return StepGroup(context_ids=[1, 2, i], candidate_ids=[[3, i], [4]], chosen=0, rejected=[1],
                     candidate_texts=["a", "b"], results=[{"ok": True}, None], meta={"task": i})


def test_roundtrip_dedup_and_ref_logps(tmp_path):
    store = StepStore(tmp_path)
    assert store.append(group(1)) and store.append(group(2))
    assert not store.append(group(1)) and store.duplicates_skipped == 1
    h = group(2).content_hash()
    store.set_ref_logps(h, [-1.5, -2.5])
    reopened = StepStore(tmp_path)
    assert len(reopened) == 2
    assert reopened.get(h).ref_logps == [-1.5, -2.5]
    assert reopened.get(group(1).content_hash()).to_json() == group(1).to_json()
    assert sum(1 for _ in open(tmp_path / "groups.jsonl")) == 3  # nothing rewritten: 2 groups + 1 ref record


def test_images_are_stored_once_by_content(tmp_path):
    store = StepStore(tmp_path)
    h1 = store.put_image(b"\x89PNG fake 1")
    assert store.put_image(b"\x89PNG fake 1") == h1
    assert len(list((tmp_path / "images").iterdir())) == 1
    assert store.image_path(h1).read_bytes() == b"\x89PNG fake 1"
    g = group(5)
    g.images = [h1]
    assert store.append(g)
    g2 = group(6)
    g2.images = ["0" * 64]
    with pytest.raises(ValueError, match="not in the store"):
        store.append(g2)


def test_torn_last_line_is_cut_and_complete_one_is_kept(tmp_path):
    store = StepStore(tmp_path)
    store.append(group(1))
    with open(tmp_path / "groups.jsonl", "ab") as f:
        f.write(b'{"kind": "group", "hash": "ab')  # crash mid-write
    with pytest.warns(UserWarning, match="torn"):
        reopened = StepStore(tmp_path)
    assert len(reopened) == 1 and reopened.repaired_bytes > 0
    record = {"kind": "group", "hash": group(2).content_hash(), "group": group(2).to_json()}
    with open(tmp_path / "groups.jsonl", "ab") as f:
        f.write(json.dumps(record).encode())  # whole record, newline lost
    assert len(StepStore(tmp_path)) == 2
    assert (tmp_path / "groups.jsonl").read_bytes().endswith(b"\n")


def test_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    store = StepStore(tmp_path)
    store.append(group(1))
    with open(tmp_path / "groups.jsonl", "ab") as f:
        f.write(b"garbage\n")
    store.append(group(2))
    with pytest.raises(ValueError, match=r"groups.jsonl:2"):
        StepStore(tmp_path)


def test_tampered_record_is_an_error(tmp_path):
    StepStore(tmp_path).append(group(1))
    text = (tmp_path / "groups.jsonl").read_text().replace('"chosen":0', '"chosen":1').replace('"rejected":[1]', '"rejected":[0]')
    (tmp_path / "groups.jsonl").write_text(text)
    with pytest.raises(ValueError, match="hash does not match"):
        StepStore(tmp_path)


WRITER = """
import sys
from sport_fast import StepGroup, StepStore
store = StepStore(sys.argv[1])
i = int(sys.argv[2])
while True:
    g = StepGroup(context_ids=list(range(200)) + [i], candidate_ids=[[i] * 300, [1]], chosen=0, rejected=[1])
    store.append(g)
    print(g.content_hash(), flush=True)  # acknowledged only after the fsync'ed append returned
    i += 1
"""


def test_sigkill_during_appends_loses_no_acknowledged_record(tmp_path):
    acknowledged = set()
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(round_ * 100000)],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(2.0 + 0.37 * round_)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        acknowledged.update(out.split())
        store = StepStore(tmp_path)  # repairs a torn tail if the kill hit mid-write
        stored = {g.content_hash() for g in store}
        assert acknowledged <= stored, f"round {round_}: {len(acknowledged - stored)} acknowledged records lost"
        assert len(stored) == len(store) == sum(1 for _ in open(tmp_path / "groups.jsonl")), "duplicate or torn"
    assert len(acknowledged) > 20
