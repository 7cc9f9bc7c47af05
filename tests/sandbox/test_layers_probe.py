"""The isolation probe leaves nothing behind: every process that starts a sandbox probes the machine once,
and that probe's scratch directory used to stay in the temporary directory (one a run, one a test process)."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from unprivileged import UserSandbox, unprivileged_user

PROBE = ("import json, sys; sys.path.insert(0, sys.argv[1]); "
         "from sport_fast.sandbox.layers import available_layers; print(json.dumps(available_layers()))")
ROOT = Path(__file__).resolve().parents[2]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("sport_fast_probe-"))


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="the root mode's probe runs as root")
def test_the_root_probe_removes_its_scratch_directory(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(scratch)}, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"mode": "root"' in done.stdout and '"problem": null' in done.stdout, done.stdout
    assert leftovers(scratch) == []


def test_the_user_namespace_probe_removes_its_scratch_directory():
    if unprivileged_user() is None:
        pytest.skip("needs root (to make an unprivileged user), useradd, runuser and /usr/bin/python3")
    folder = Path(tempfile.mkdtemp(prefix="sport_fast_as_user_"))  # the user must reach it: not under pytest's 700
    try:
        folder.chmod(0o755)
        scratch = folder / "tmp"
        scratch.mkdir(mode=0o1777)
        scratch.chmod(0o1777)
        result = UserSandbox(folder / "pkg", timeout_s=30).run("print(6 * 7)", env={"TMPDIR": str(scratch)})
        if result.layers.get("mode") != "userns":
            pytest.skip(f"unprivileged user namespaces are unavailable here: {result.layers.get('problem')}")
        assert result.stdout.strip() == "42", result
        assert leftovers(scratch) == []
    finally:
        shutil.rmtree(folder, ignore_errors=True)
