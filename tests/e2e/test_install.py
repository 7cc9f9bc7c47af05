"""The package works without its C++ extension (one warning) and the entry point tells the truth."""
import subprocess
import sys


NO_EXTENSION = """
import sys, warnings
sys.modules["sport_fast._C"] = None  # as if the build had failed
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from sport_fast import StepGroup, pack_step_groups
    from sport_fast.tree.trie import native_available
    g = StepGroup(context_ids=[1, 2], candidate_ids=[[3], [4]], chosen=0, rejected=[1])
    a = pack_step_groups([g]); b = pack_step_groups([g])
assert not native_available()
assert a.num_tokens == 4
msgs = [str(w.message) for w in caught if "not built" in str(w.message)]
assert len(msgs) == 1, msgs
print(msgs[0])
"""


def run(code: str, env=None):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_without_the_extension_it_packs_with_one_warning_saying_what_is_slower():
    out = run(NO_EXTENSION)
    assert out.returncode == 0, out.stderr
    assert "pure-Python trie" in out.stdout and "slower" in out.stdout


def test_kernels_are_a_subpackage_not_a_top_level_module():
    out = run("import sport_fast.kernels, importlib.util; "
              "print(importlib.util.find_spec('kernels') is None or 'sport_fast' not in importlib.util.find_spec('kernels').origin)")
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr


def test_train_entry_point_documents_its_config_and_overrides():
    out = subprocess.run([sys.executable, "-m", "sport_fast.train", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "configs/default.yaml" in out.stdout and "train.beta=0.05" in out.stdout
