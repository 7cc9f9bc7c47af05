"""The GPU benchmark scripts stay runnable: their --smoke mode runs every code path on tiny CPU shapes.

No timing is asserted (interpreter timings mean nothing); the values each peer computes are.
"""
import os
import re
import subprocess
import sys

from train_runs import ROOT

BENCH = ROOT / "benchmarks"


def smoke(script: str) -> str:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, str(BENCH / script), "--smoke"], capture_output=True, text=True,
                         timeout=900, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


def test_w1_smoke_runs_every_peer_and_sport_fast_agrees_with_torch():
    text = smoke("w1_linear_logprobs.py")
    row = next(line for line in text.splitlines() if line.startswith("sport_fast "))
    assert float(row.split()[-1]) < 1e-5, row
    for peer in ("torch", "torch.compile (chunked)", "liger FLCE", "liger fused linear DPO", "sport_fast step_dpo_loss"):
        line = next(line for line in text.splitlines() if line.startswith(peer + " "))
        assert not re.search(r"Error|unavailable", line), line


def test_w2_smoke_runs_all_four_peers_and_their_step0_losses_agree():
    text = smoke("w2_step_dpo.py")
    for variant in ("independent", "trajectory"):
        rows = [line for line in text.splitlines() if line.startswith("smoke") and f" {variant} " in line]
        assert len(rows) == 4 and not any("Error" in r for r in rows), rows
        losses = [float(r.split()[-1]) for r in rows]
        assert max(losses) - min(losses) < 1e-5, f"{variant}: step-0 losses differ: {losses}"
