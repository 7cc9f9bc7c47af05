"""Every entry point as a user calls it, in a subprocess: task_suite, serve, eval (the embedded model, a
trained run's checkpoint, a served model through its own tokenizer) and synth. (train: test_train_loop.py.)"""
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from tiny_models import tiny_qwen2, vl_tokenizer
from train_runs import ROOT, free_port

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "SPORT_KILL_AT": ""}


def entry(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"sport_fast.{module}", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    done = entry("task_suite", str(out), "--train", "3", "--heldout", "2", "--seed", "5")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote 3 train and 2 held-out tasks" in done.stdout
    assert len((out / "heldout.jsonl").read_text().splitlines()) == 2
    return out


def test_task_suite_refuses_a_negative_count(tmp_path):
    done = entry("task_suite", str(tmp_path), "--train", "-1")
    assert done.returncode == 2 and "must be >= 0" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``python -m sport_fast.serve --model FOLDER``: a tiny random Qwen2 with a word-level tokenizer."""
    folder = tmp_path_factory.mktemp("tiny")
    tiny_qwen2(3).save_pretrained(folder)
    vl_tokenizer().save_pretrained(folder)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sport_fast.serve", "--model", str(folder), "--served-name", "tiny",
                             "--port", str(port)], env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not come up: {proc.communicate()[1][-2000:]}")
            time.sleep(0.5)
    yield url, folder
    proc.kill()
    proc.wait()


@pytest.mark.slow
def test_eval_runs_the_embedded_model_and_writes_its_report(suite, tmp_path):
    done = entry("eval", "--tasks", str(suite / "heldout.jsonl"), "--limit", "1", "--max-steps", "1",
                 "--max-new-tokens", "24", "--out", str(tmp_path / "eval"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["tasks"] == 1 and report["k"] == 1 and "AnsAcc" in report
    assert "self-test: 7 tools imported in the isolated child" in done.stdout


@pytest.mark.slow
def test_eval_loads_a_trained_run_from_its_checkpoint(suite, tmp_path):
    """A run directory is enough: its config.yaml says how to build the policy (LoRA), its last complete
    checkpoint gives the weights (which must differ from the untrained ones to show they were loaded)."""
    import torch

    from sport_fast.config import dump_config, load_config
    from sport_fast.model.loader import load_policy
    from sport_fast.model.weights import trainable_state
    from sport_fast.run.run_dir import RunDir
    cfg = load_config("default", [f"out_dir={tmp_path / 'run'}"])
    model, _ = load_policy(cfg.model)
    state = {k: v + 0.01 * torch.randn_like(v) for k, v in trainable_state(model).items()}
    RunDir(tmp_path / "run", dump_config(cfg)).save_checkpoint(0, state, {"round": 0})
    done = entry("eval", "--tasks", str(suite / "heldout.jsonl"), "--checkpoint", str(tmp_path / "run"), "--limit", "1",
                 "--max-steps", "1", "--max-new-tokens", "8", "--out", str(tmp_path / "eval"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"weights from {tmp_path / 'run' / 'checkpoints' / 'round_0'}" in done.stdout

    from sport_fast.eval import _load_checkpoint
    fresh, _ = load_policy(cfg.model)
    fresh = _load_checkpoint(fresh, tmp_path / "run", cfg)
    loaded = trainable_state(fresh)
    assert all(torch.equal(loaded[k], v) for k, v in state.items()), "the checkpoint's weights were not loaded"


def test_eval_tokenises_with_the_served_models_own_tokenizer(suite, served, tmp_path):
    """Against ``serve`` with a tiny model of 101 tokens: SmolLM2's tokenizer would send ids the server
    refuses; the served model's own (``--tokenizer``) gives ids in its vocabulary, and the run completes."""
    url, folder = served
    done = entry("eval", "--tasks", str(suite / "heldout.jsonl"), "--base-url", url, "--model", "tiny",
                 "--tokenizer", str(folder), "--limit", "1", "--max-steps", "1", "--max-new-tokens", "6",
                 "--out", str(tmp_path / "eval"))
    assert done.returncode == 0, done.stderr[-3000:]
    log = json.loads((tmp_path / "eval" / "tasks.jsonl").read_text().splitlines()[0])
    assert max(log["trajectory"]["context_ids"]) < 101, "the prompt was not tokenised by the served model's tokenizer"
    missing = entry("eval", "--tasks", str(suite / "heldout.jsonl"), "--base-url", url, "--model", "tiny",
                    "--tokenizer", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "tokenizer folder" in missing.stderr and "Traceback" not in missing.stderr


def test_synth_writes_tasks_through_a_served_model(served, tmp_path):
    url, _ = served
    out = tmp_path / "tasks.jsonl"
    done = entry("synth", "--seeds", "suite", "--out", str(out), "--base-url", url, "--model", "tiny",
                 "--per-seed", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    kept = out.read_text().splitlines() if out.exists() else []
    dropped = (tmp_path / "tasks.dropped.jsonl").read_text().splitlines() \
        if (tmp_path / "tasks.dropped.jsonl").exists() else []
    assert report["written"] == report["seeds"] and len(kept) + len(dropped) == report["written"], report


def test_serve_refuses_a_missing_model_in_one_line(tmp_path):
    done = entry("serve", "--model", str(tmp_path / "nowhere"), "--port", str(free_port()), timeout=120)
    assert done.returncode != 0 and "does not exist" in done.stderr and "Traceback" not in done.stderr
