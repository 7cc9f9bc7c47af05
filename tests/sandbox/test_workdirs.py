"""A sandbox run killed before it could clean up (SIGKILL, the OOM killer) used to leave its working
directory in the temporary directory for good; each is now held by a lock, and the next process sweeps
those whose holder is gone, and never a live run's."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sport_fast.sandbox import workdirs
from unprivileged import UserSandbox, unprivileged_user

ROOT = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time; sys.path.insert(0, sys.argv[1]); from sport_fast.sandbox import workdirs; "
        "w, fd = workdirs.claim(); open(w + '/out.txt', 'w').write('x'); print(w, flush=True); "
        "time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 60); print('slept', flush=True)")


def holder(scratch: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """A process that claims a working directory and holds it; returns it and the directory."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(ROOT), *args], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(scratch)})
    return proc, Path(proc.stdout.readline().strip())


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(workdirs, "_swept", set())
    return tmp_path


def test_a_killed_holders_directory_is_swept_and_a_live_ones_is_kept(scratch):
    dead, dead_dir = holder(scratch)
    live, live_dir = holder(scratch)
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait(30)
        assert dead_dir.is_dir() and (dead_dir / "out.txt").exists()  # nothing cleaned up after the kill
        base = workdirs.base_dir()
        assert dead_dir.parent == base == scratch / f"sport_fast_sandbox-{os.getuid()}"
        assert workdirs.sweep(base) == [dead_dir.name]
        assert not dead_dir.exists() and not Path(str(dead_dir) + workdirs.LOCK).exists()
        assert (live_dir / "out.txt").read_text() == "x"
        assert Path(str(live_dir) + workdirs.LOCK).exists()
    finally:
        live.kill()
        live.wait(30)
    assert workdirs.sweep(base) == [live_dir.name]
    assert sorted(os.listdir(base)) == []


def test_a_process_sweeps_on_its_first_claim_and_releases_what_it_claims(scratch):
    dead, dead_dir = holder(scratch)
    dead.kill()
    dead.wait(30)
    workdir, fd = workdirs.claim()
    assert not dead_dir.exists() and Path(workdir).is_dir() and Path(workdir).parent == dead_dir.parent
    assert oct(os.stat(workdir).st_mode & 0o777) == "0o700"
    workdirs.release(workdir, fd)
    assert os.listdir(workdirs.base_dir()) == []


def test_a_holder_that_ends_normally_keeps_its_directory_until_it_releases_it(scratch):
    proc, workdir = holder(scratch, "0.5")
    assert workdirs.sweep(workdirs.base_dir()) == []  # held while it sleeps
    assert proc.stdout.readline().strip() == "slept"
    proc.wait(30)
    assert workdirs.sweep(workdirs.base_dir()) == [workdir.name]  # it exited without release: swept


def test_older_builds_directories_go_once_old_and_a_fresh_lock_without_its_directory_stays(scratch):
    base, old = workdirs.base_dir(), time.time() - 2 * workdirs.LEGACY_AGE_S
    for name in ("tmpold", "tmpyoung", "run-halfmade.lock", "run-orphan.lock"):
        (base / name).mkdir() if name.startswith("tmp") else (base / name).touch()
    (base / "tmpold" / "f").write_text("left by a build without locks")
    os.utime(base / "tmpold", (old, old))
    os.utime(base / "run-orphan.lock", (old, old))
    assert workdirs.sweep(base) == ["run-orphan", "tmpold"]
    assert sorted(os.listdir(base)) == ["run-halfmade.lock", "tmpyoung"]


KILLED_RUN = ("import sys; sys.path.insert(0, sys.argv[1]); from sport_fast.sandbox.sandbox import Sandbox; "
              "Sandbox(timeout_s=30).run('import time; print(\"started\", flush=True); time.sleep(3)')")
NEXT_RUN = ("import sys; sys.path.insert(0, sys.argv[1]); from sport_fast.sandbox.sandbox import Sandbox; "
            "print(Sandbox(timeout_s=30).run('print(6 * 7)').stdout.strip())")


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="the root mode runs as root")
def test_a_sandbox_killed_mid_run_leaves_a_directory_that_the_next_run_removes(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    base = tmp_path / f"sport_fast_sandbox-{os.getuid()}"
    killed = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(ROOT)], env=env, cwd="/")
    try:
        deadline = time.time() + 60
        while not (base.is_dir() and [p for p in base.iterdir() if p.is_dir()]) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        killed.kill()
        killed.wait(30)
    left = [p.name for p in base.iterdir() if p.is_dir()]
    assert len(left) == 1, left
    done = subprocess.run([sys.executable, "-c", NEXT_RUN, str(ROOT)], env=env, cwd="/", capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "42", done.stderr[-2000:]
    assert sorted(os.listdir(base)) == []


def test_the_unprivileged_users_runs_leave_nothing_in_its_folder():
    user = unprivileged_user()
    if user is None:
        pytest.skip("needs root (to make an unprivileged user), useradd, runuser and /usr/bin/python3")
    folder = Path(tempfile.mkdtemp(prefix="sport_fast_as_user_"))  # the user must reach it: not under pytest's 700
    try:
        folder.chmod(0o755)
        scratch = folder / "tmp"
        scratch.mkdir()
        scratch.chmod(0o1777)
        result = UserSandbox(folder / "pkg", timeout_s=30).run("print(6 * 7)", files={"in.txt": b"x"},
                                                              env={"TMPDIR": str(scratch)})
        if result.layers.get("mode") != "userns":
            pytest.skip(f"unprivileged user namespaces are unavailable here: {result.layers.get('problem')}")
        assert result.stdout.strip() == "42", result
        (base,) = [p for p in scratch.iterdir() if p.name.startswith("sport_fast_sandbox-")]
        assert base.name != f"sport_fast_sandbox-{os.getuid()}" and os.listdir(base) == []
    finally:
        shutil.rmtree(folder, ignore_errors=True)
