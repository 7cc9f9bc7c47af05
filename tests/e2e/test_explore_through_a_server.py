"""``python -m sport_fast.train explore.backend=openai`` against ``python -m sport_fast.serve`` in its own
process, as a disaggregated run uses vLLM: the round is explored through the server, trained here, and its
LoRA adapter is saved to a versioned folder and hot-loaded into the server under a versioned name."""
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from train_runs import ROOT, free_port, small_run, train

pytestmark = [pytest.mark.slow]  # both processes load SmolLM2


def serve(port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sport_fast.serve", "--model", "smollm2", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stdout.readline()
        if "on http://" in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"sport_fast.serve did not start: {proc.stdout.read()[-2000:]}")


def test_the_train_command_explores_through_a_server_and_hot_loads_the_trained_adapter(tmp_path):
    port = free_port()
    server = serve(port)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        done = train(small_run(tmp_path, "srv", "name=srv", "explore.backend=openai", f"explore.base_urls=[{url}]",
                               "explore.model=smollm2", "explore.engine=sport_fast"))
        assert done.returncode == 0, done.stderr[-3000:]
        with urllib.request.urlopen(f"{url}/models", timeout=30) as reply:
            served = [m["id"] for m in json.loads(reply.read())["data"]]
    finally:
        server.kill()
    run = tmp_path / "srv"
    assert served == ["srv-v1"], f"the trained adapter was not hot-loaded: the server serves {served}"
    assert (run / "weights" / "v1" / "adapter_config.json").exists()
    assert "published weight version 1" in done.stdout
    records = [json.loads(line) for line in (run / "round_0" / "trajectories.jsonl").read_text().splitlines()]
    cands = [c for r in records for s in r["trajectory"]["steps"] for c in s["candidates"]]
    assert len(records) == 2 and cands and all(c["weight_version"] == 0 and c["token_ids"] for c in cands)
    manifest = json.loads((run / "manifest.json").read_text())["phases"]["0"]
    assert manifest["explore"]["weight_version"] == 0 and "train" in manifest
