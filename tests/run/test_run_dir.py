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
