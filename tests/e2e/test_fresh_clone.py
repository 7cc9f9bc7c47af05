"""What a new user does: clone the repository into a fresh folder under /tmp (with a space in its path), set
it up the way the README says (``make setup``), and run a cut-down round whose candidates run in the sandbox
with the tools, as root and as an ordinary user; then the same package installed as a wheel (``pip install .``).

The virtual environment is made from the system's Python (``make setup PYTHON=/usr/bin/python3``): the
project's own interpreter lives under /root here, which an ordinary user cannot reach. pip's wheel cache is
reused, so the set-up installs, it does not download.
"""
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from train_runs import ROOT
from unprivileged import INTERPRETER, unprivileged_user

pytestmark = [pytest.mark.slow]
ROUND = ["--config", "default", "tasks.per_round=2", "explore.max_steps=1", "eval.enabled=false",
         "judge.backend=local", "judge.max_tokens=96", "judge.rule=all", "train.epochs=1"]
SELF_TEST = "self-test: 7 tools imported in the isolated child"


@pytest.fixture(scope="module")
def clone():
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("the checkout is not a git repository")
    if not os.access(INTERPRETER, os.X_OK):
        pytest.skip(f"{INTERPRETER} is needed to make a virtual environment every user can run")
    folder = Path(f"/tmp/sport fast clone {uuid.uuid4().hex[:8]}")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(folder)], check=True, timeout=300)
    folder.chmod(0o755)
    setup = subprocess.run(["make", "setup", f"PYTHON={INTERPRETER}"], cwd=folder, capture_output=True, text=True,
                           timeout=1500)
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-3000:]
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run_round(clone: Path, out: Path, as_user: str | None = None) -> subprocess.CompletedProcess:
    cmd = [str(clone / ".venv" / "bin" / "python"), "-m", "sport_fast.train", *ROUND, f"out_dir={out}"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPORT_KILL_AT")}
    if as_user is not None:
        cmd = ["runuser", "-u", as_user, "--", *cmd]
        env["HOME"] = str(out.parent)
    return subprocess.run(cmd, cwd=clone, capture_output=True, text=True, timeout=900, env=env)


def candidates(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "round_0" / "trajectories.jsonl").read_text().splitlines()]
    return [c for r in records for s in r["trajectory"]["steps"] for c in s["candidates"]]


def check_round(done: subprocess.CompletedProcess, out: Path, mode: str) -> None:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert SELF_TEST in done.stdout and f"sandbox isolation ({mode})" in done.stdout, done.stdout[-2000:]
    executed = [c for c in candidates(out) if c["parse_error"] is None]
    assert executed and not any("could not set up isolation" in (c["error"] or "") for c in executed)
    assert any(c["error"] is None for c in executed), [c["error"] for c in executed]
    manifest = json.loads((out / "manifest.json").read_text())["phases"]["0"]
    assert manifest["train"]["pairs"] > 0, manifest


def test_a_fresh_clone_runs_a_round_as_root(clone):
    check_round(run_round(clone, clone / "runs" / "root"), clone / "runs" / "root", "root")


def test_a_fresh_clone_runs_a_round_as_an_ordinary_user(clone):
    user = unprivileged_user()
    if user is None:
        pytest.skip("needs root to make an ordinary user")
    home = Path(f"/tmp/sport_fast_user_{uuid.uuid4().hex[:8]}")
    home.mkdir()
    shutil.chown(home, user, user)
    try:
        check_round(run_round(clone, home / "run", as_user=user), home / "run", "userns")
    finally:
        shutil.rmtree(home, ignore_errors=True)


REFERENCE_PROGRAMS = """
import json, sys
from sport_fast.sandbox.sandbox import Sandbox
from sport_fast.tasks.answer_rules import gaia_correct
from sport_fast.tasks.suite import generate_suite
from sport_fast.tools import default_registry
tasks = generate_suite(sys.argv[1], n_train=7, n_heldout=0, seed=3)["train"]  # one task of each family
sandbox, answers = Sandbox(timeout_s=30, tools=default_registry()), []
for task in tasks:
    r = sandbox.run(task.reference_steps[-1], files=task.files, prelude=task.reference_steps[:-1])
    answers.append([gaia_correct(r.final_answer, task.answer), task.answer, r.final_answer, r.error,
                    sorted({c["name"] for c in r.tool_calls})])
print(json.dumps(answers))
"""


@pytest.mark.parametrize("who", ["root", "user"])
def test_the_suites_reference_programs_call_the_tools_in_the_sandbox(clone, who):
    """Every family's reference program (image_size, crop, count_objects, ocr, calculator, read_file) runs
    through the clone's sandbox to the right answer, as root and as an ordinary user."""
    user = unprivileged_user()
    if who == "user" and user is None:
        pytest.skip("needs root to make an ordinary user")
    folder = Path(f"/tmp/sport_fast_suite_{uuid.uuid4().hex[:8]}")
    folder.mkdir()
    if who == "user":
        shutil.chown(folder, user, user)
    prefix = ["runuser", "-u", user, "--"] if who == "user" else []
    try:
        done = subprocess.run([*prefix, str(clone / ".venv" / "bin" / "python"), "-c", REFERENCE_PROGRAMS,
                               str(folder)], cwd=clone, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        answers = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert all(right and error is None for right, _, _, error, _ in answers), answers
    called = set().union(*(set(tools) for *_, tools in answers))
    assert {"image_size", "crop", "count_objects", "ocr", "calculator", "read_file"} <= called, called


def test_a_wheel_install_runs_the_sandbox_with_its_tools_from_anywhere(clone):
    python = str(clone / ".venv" / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "."],
                             cwd=clone, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    code = ("import sport_fast; from sport_fast.sandbox.layers import self_test; from sport_fast.sandbox.sandbox "
            "import Sandbox; from sport_fast.tools import default_registry; print(sport_fast.__file__); "
            "print(self_test(Sandbox(timeout_s=30, tools=default_registry())))")
    for prefix in ([], ["runuser", "-u", unprivileged_user() or "root", "--"]):
        done = subprocess.run([*prefix, python, "-c", code], cwd="/", capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "site-packages" in done.stdout.splitlines()[0] and SELF_TEST in done.stdout, done.stdout
