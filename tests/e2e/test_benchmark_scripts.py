"""The GPU check stays runnable: ``SMOKE=1 benchmarks/gpu_check.sh`` runs every section's code path (the checks,
the kernel tests' invocation, W1, W2, W3) on tiny CPU shapes, Triton through its interpreter.

One run (a few minutes on 2 cores) serves every test here. No timing is asserted (interpreter timings mean
nothing); what each section reports, and the values each peer computes, are.
"""
import json
import os
import subprocess
import sys

import pytest

from train_runs import ROOT

SECTIONS = ("env", "kernel-tests", "compile", "flex", "decode", "w1", "w2", "w3")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """(completed process, {workload: rows}) of one smoke run into a fresh output folder."""
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "SMOKE": "1", "OUT": str(out), "PY": sys.executable, "WHEELS": str(out / "no-wheels")}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=900, env=env)
    rows = {name: [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
            for name in ("checks", "w1", "w2", "w3") if (out / f"{name}.jsonl").exists()}
    return done, rows, out


def test_smoke_run_exits_cleanly_and_every_section_reports(smoke):
    done, rows, out = smoke
    log = (out / "run.log").read_text() if (out / "run.log").exists() else ""
    assert done.returncode == 0, done.stdout[-3000:] + log[-4000:]
    finished = {r["section"]: r for r in rows["checks"] if r["check"] == "section exit status"}
    assert set(finished) == set(SECTIONS), f"sections that reported: {sorted(finished)}"
    assert all(r["ok"] for r in finished.values()), [r for r in finished.values() if not r["ok"]]
    failed = [r for r in rows["checks"] if r["ok"] is False]
    assert not failed, failed
    for section in ("env", "compile", "flex", "decode"):
        assert any(r["section"] == section and r["check"] != "section exit status" for r in rows["checks"]), section
    assert "0 failed check(s)" in (out / "summary.txt").read_text()
    assert all("commit" in r and r["device"] for r in rows["w1"] + rows["w2"] + rows["w3"]), "rows without a stamp"


def test_w1_rows_cover_every_peer_and_sport_fast_agrees_with_fp32(smoke):
    rows = smoke[1]["w1"]
    got = {(r["peer"], r["weight"]): r for r in rows}
    for peer in ("torch", "torch.compile (chunked)", "liger FLCE", "sport_fast (chunked)", "sport_fast (atomic)",
                 "liger fused linear DPO", "sport_fast step_dpo_loss"):
        for weight in ("trainable", "frozen"):
            row = got[(peer, weight)]
            assert "error" not in row, row
            assert row["flops_counted"] == ("4NHV" if weight == "frozen" else "6NHV"), row
    assert ("cut-cross-entropy", "trainable") in got, "the CCE peer has no row"
    for variant in ("chunked", "atomic"):
        for weight in ("trainable", "frozen"):
            assert got[(f"sport_fast ({variant})", weight)]["max_abs_diff_vs_fp32"] < 1e-5
    assert got[("torch.compile (chunked)", "trainable")]["graphs_compiled"] >= 1
    assert got[("liger fused linear DPO", "trainable")]["loss_diff_vs_sport_fast"] < 1e-5


def test_w2_peers_run_training_module_and_their_step0_losses_agree(smoke):
    rows = smoke[1]["w2"]
    for variant in ("independent", "trajectory"):
        ran = {r["peer"][:3]: r for r in rows if r["variant"] == variant and "error" not in r}
        assert sorted(ran) == ["(a)", "(b)", "(c)", "(d)"], [r.get("error") for r in rows]
        assert max(abs(r["loss_step0_minus_sport_fast"]) for r in ran.values()) < 1e-5, \
            {p: r["loss_step0"] for p, r in ran.items()}
        ours = ran["(d)"]
        assert ours["backends"]["kernel"] in ("torch", "triton") and ours["unique_tokens_per_s"] > 0, ours
    flex = [r for r in rows if r["peer"].startswith("(e)")]
    assert flex and all("without CUDA (d) is this already" in r["error"] for r in flex), flex


def test_w3_rows_show_every_peer_and_the_cache_reuse(smoke):
    rows = {r["peer"][:3]: r for r in smoke[1]["w3"]}
    assert sorted(rows) == ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)"], sorted(rows)
    assert rows["(a)"]["prefilled_per_context_token"] > 1 > rows["(d)"]["prefilled_per_context_token"]
    # the smoke's random contexts share no prompt: prefilling each whole, (f) runs what (d) runs
    assert rows["(f)"]["prefilled_per_context_token"] == rows["(d)"]["prefilled_per_context_token"]
    assert rows["(e)"]["decode"] == "static", "graph decode without CUDA must run (and say) static"


def test_stamp_without_git_keeps_every_field(tmp_path):
    """A copied checkout (no git on the PATH): the commit is $SPORT_BENCH_COMMIT or None, nothing else lost."""
    code = "import json, common; print(json.dumps(common.stamp()))"
    for given, want in (({"SPORT_BENCH_COMMIT": "abc1234"}, "abc1234"), ({}, None)):
        env = {k: v for k, v in os.environ.items() if k != "SPORT_BENCH_COMMIT"}
        env.update(given, PATH=str(tmp_path))  # no git there
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                             cwd=ROOT / "benchmarks")
        assert out.returncode == 0, out.stderr[-2000:]
        row = json.loads(out.stdout.splitlines()[-1])
        assert row["commit"] == want and row["device"] and row["torch"] and row["date"], row
