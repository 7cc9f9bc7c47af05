import pytest

from sport_fast.config import dump_config, load_config, reread_config
from sport_fast.run.errors import ResumeError
from sport_fast.run.run_dir import RunDir


def test_a_run_written_before_new_config_keys_resumes_and_a_changed_value_is_refused(tmp_path):
    cfg = load_config(None, [f"out_dir={tmp_path}", "seed=3"])
    text = dump_config(cfg)
    older = "\n".join(line for line in text.splitlines() if not line.strip().startswith("batches_in_flight:"))
    assert older != text, "the stand-in for an older release's file lacks a key"
    (tmp_path / "config.yaml").write_text(older + "\n")
    with pytest.raises(ResumeError, match="different config"):
        RunDir(tmp_path, text)  # compared as text only
    RunDir(tmp_path, text, reread=reread_config)  # the missing key at its default: the same run
    assert (tmp_path / "config.yaml").read_text() == older + "\n", "the run's own file is left as it was"
    with pytest.raises(ResumeError, match="different config"):
        RunDir(tmp_path, dump_config(load_config(None, [f"out_dir={tmp_path}", "seed=4"])), reread=reread_config)


def test_a_resumed_run_may_be_given_more_rounds_and_a_refusal_names_what_changed(tmp_path):
    def text(*overrides):
        return dump_config(load_config(None, [f"out_dir={tmp_path}", *overrides]))
    RunDir(tmp_path, text("rounds=1"))
    more = RunDir(tmp_path, text("rounds=3"), reread=reread_config)
    assert more.extended == (1, 3) and (tmp_path / "config.yaml").read_text() == text("rounds=3")
    assert RunDir(tmp_path, text("rounds=3"), reread=reread_config).extended is None  # the same run now
    with pytest.raises(ResumeError, match=r"different config \(rounds: 3 -> 2\)"):
        RunDir(tmp_path, text("rounds=2"), reread=reread_config)  # fewer rounds: not this run
    with pytest.raises(ResumeError, match=r"\(rounds: 3 -> 4; train.beta: 0.1 -> 0.2\)"):
        RunDir(tmp_path, text("rounds=4", "train.beta=0.2"), reread=reread_config)  # more rounds and another change
    assert (tmp_path / "config.yaml").read_text() == text("rounds=3"), "a refused resume leaves the file as it was"
