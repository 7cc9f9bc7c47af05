"""``python -m sport_fast.train`` with a Qwen2-VL folder as the policy, end to end."""
import json
import os
import subprocess
import sys

import pytest
from tiny_models import IMAGE_PAD, tiny_image_processor, tiny_qwen2_vl, vision_tasks, vl_tokenizer
from train_runs import ROOT

from sport_fast.tasks.task import save_tasks

pytestmark = [pytest.mark.e2e]


def test_train_command_runs_a_vision_language_model_from_a_folder(tmp_path):
    """``python -m sport_fast.train model.path=<a Qwen2-VL folder>``: loaded as an image-text-to-text model with
    its image processor, the task images shown to it, a round explored, stored and evaluated."""
    folder = tmp_path / "vl"
    tiny_qwen2_vl(4).save_pretrained(folder)
    vl_tokenizer().save_pretrained(folder)
    tiny_image_processor().save_pretrained(folder)
    save_tasks(tmp_path / "train.jsonl", vision_tasks(tmp_path))
    args = ["--config", str(ROOT / "sport_fast" / "configs" / "default.yaml"), f"out_dir={tmp_path / 'run'}", f"model.path={folder}",
            "tasks.source=file", f"tasks.train_file={tmp_path / 'train.jsonl'}",
            f"tasks.heldout_file={tmp_path / 'train.jsonl'}", "tasks.per_round=2", "explore.max_steps=1",
            "explore.max_new_tokens=6", "eval.n_tasks=1", "eval.max_steps=1", "judge.backend=local",
            "judge.max_tokens=8", "eval.max_new_tokens=6"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPORT_KILL_AT": ""}
    run = subprocess.run([sys.executable, "-m", "sport_fast.train", *args], capture_output=True, text=True, env=env,
                         timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(line)["trajectory"] for line in
               (tmp_path / "run" / "round_0" / "trajectories.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(len(r["images"]) == 1 and IMAGE_PAD in r["context_ids"] for r in records)
    assert len(list((tmp_path / "run" / "round_0" / "store" / "images").iterdir())) == 2
    phases = json.loads((tmp_path / "run" / "manifest.json").read_text())["phases"]
    assert phases["0"]["explore"]["steps"] == 2 and "eval" in phases["initial"] and "eval" in phases["0"]
