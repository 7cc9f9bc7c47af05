"""The sandbox's contract: fresh state per run, replayed chosen steps, final answers, host tools over the pipe."""
import pytest

from sport_fast.sandbox import layers as sandbox_layers
from sport_fast.sandbox.layers import REQUIRED_LAYERS, available_layers
from sport_fast.sandbox.sandbox import Sandbox
from sport_fast.tools import Tool, ToolRegistry

FULL = all(available_layers()[k] for k in REQUIRED_LAYERS)


def echo_host(text, workdir):
    return {"echo": text.upper(), "workdir_given": bool(workdir)}


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(timeout_s=5, tools=ToolRegistry([Tool("shout", echo_host, "upper-case", runs_in="host")]),
                   allow_weak_isolation=not FULL)


def test_candidates_see_the_chosen_steps_but_not_each_other(sandbox):
    prelude = ["x = 40\nopen('notes.txt', 'w').write('chosen')", "x += 1\nprint('replayed output is hidden')"]
    a = sandbox.run("x += 1\nopen('a_was_here.txt', 'w').write('a')\nprint(x, open('notes.txt').read())", prelude=prelude)
    b = sandbox.run("import os\nprint(x, sorted(os.listdir('.')))", prelude=prelude)
    assert a.stdout == "42 chosen\n" and a.ok
    assert b.stdout == "41 ['notes.txt']\n", "candidate b saw candidate a's effects or the replay's output"


def test_prelude_errors_are_reported_and_replay_continues(sandbox):
    r = sandbox.run("print(y)", prelude=["y = 1\nraise ValueError('boom')", "y = y + 1"])
    assert r.stdout == "2\n"
    assert r.prelude_errors == [{"step": 0, "error": "Traceback (step lines): line 2\nValueError: boom"}]


def test_final_answer_ends_the_step_and_survives_except_exception(sandbox):
    r = sandbox.run("try:\n    final_answer({'n': 3})\nexcept Exception:\n    print('swallowed')\nprint('after')")
    assert r.has_final_answer and r.final_answer == {"n": 3} and r.stdout == ""
    r = sandbox.run("class A: pass\nfinal_answer(A())")
    assert r.has_final_answer and r.final_answer.startswith("<__main__.A object")


def test_errors_name_the_step_line_and_the_observation_carries_them(sandbox):
    r = sandbox.run("a = 1\nprint('partial')\nb = a / 0")
    assert not r.ok and r.error.endswith("ZeroDivisionError: division by zero") and "line 3" in r.error
    assert r.observation() == "partial\nError: " + r.error
    r = sandbox.run("def f(:\n  pass")
    assert r.error.startswith("SyntaxError") and "line 1" in r.error


def test_host_tools_run_in_the_parent_over_the_pipe(sandbox):
    r = sandbox.run("print(shout('hi'))\ntry:\n    shout(object())\nexcept Exception as e:\n    print(type(e).__name__)")
    assert r.stdout.splitlines() == ["{'echo': 'HI', 'workdir_given': True}", "TypeError"]
    assert [c["name"] for c in r.tool_calls] == ["shout", "shout"]
    assert [c["ok"] for c in r.tool_calls] == [True, False]


def test_task_files_are_copied_in_and_names_may_not_escape(sandbox, tmp_path):
    src = tmp_path / "data.csv"
    src.write_text("a,b\n1,2\n")
    r = sandbox.run("print(open('in/data.csv').read().split())", files={"in/data.csv": src, "raw.bin": b"\x00\x01"})
    assert r.stdout == "['a,b', '1,2']\n" and r.files == ["in/data.csv", "raw.bin"]
    with pytest.raises(ValueError, match="inside the working directory"):
        sandbox.run("pass", files={"../evil.txt": b"x"})
    with pytest.raises(ValueError, match="inside the working directory"):
        sandbox.run("pass", files={"/etc/evil.txt": b"x"})


def test_missing_isolation_is_refused_unless_opted_in(monkeypatch, capsys):
    monkeypatch.setattr(sandbox_layers, "_LAYERS", {"rlimits": True, "separate_uid": False,
                                                 "network_namespace": False, "private_tmp": False})
    monkeypatch.delenv("SPORT_SANDBOX_ALLOW_WEAK", raising=False)
    with pytest.raises(RuntimeError, match="separate_uid, network_namespace, private_tmp"):
        Sandbox()
    Sandbox(allow_weak_isolation=True)
    assert "WITHOUT separate_uid" in capsys.readouterr().err


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="limits out of range"):
        Sandbox(timeout_s=0)
