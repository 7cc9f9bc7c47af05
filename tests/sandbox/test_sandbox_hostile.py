"""Hostile programs, each asserted to be contained within its limit, by what happened and by the time taken,
as root (a uid of the run's own) and as an unprivileged user (user, PID, mount and network namespaces, a root
file system of the run's own): the two ways users run the sandbox."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import uuid
from pathlib import Path

import pytest
from unprivileged import UserSandbox, unprivileged_user

from sport_fast.sandbox import isolation
from sport_fast.sandbox.layers import REQUIRED_LAYERS, available_layers
from sport_fast.sandbox.sandbox import Sandbox

LIMIT = 2.0
SLACK = 1.5  # start-up, kill and clean-up on a loaded 2-core machine
LIMITS = dict(timeout_s=LIMIT, memory_mb=512, processes=16)


class AsRoot:
    mode = "root"

    def __init__(self):
        if not all(available_layers()[k] for k in REQUIRED_LAYERS):
            pytest.skip("the root mode of the sandbox needs root on Linux")
        self.sandbox = Sandbox(**LIMITS)

    def run(self, code, **kw):
        return self.sandbox.run(code, **kw)

    def left_alive(self, result) -> list[int]:
        return isolation.uid_processes(int(result.stdout.split("uid=", 1)[1].split()[0]))


class AsUser:
    mode = "user"

    def __init__(self, folder):
        if unprivileged_user() is None:
            pytest.skip("needs root (to make an unprivileged user), useradd, runuser and /usr/bin/python3")
        self.sandbox = UserSandbox(folder, **LIMITS)
        probe = self.sandbox.run("print('probe')")
        if probe.layers["mode"] != "userns":
            pytest.skip(f"unprivileged user namespaces are unavailable here: {probe.layers['problem']}")

    def run(self, code, **kw):
        return self.sandbox.run(code, **kw)

    def left_alive(self, result) -> list[int]:
        return result.survivors


@pytest.fixture(scope="module", params=["root", "user"])
def contained(request):
    if request.param == "root":
        yield AsRoot()
        return
    folder = Path(tempfile.mkdtemp(prefix="sport_fast_as_user_"))  # the user must reach it: not under pytest's 700
    try:
        yield AsUser(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(contained, code, **kw):
    result = contained.run(textwrap.dedent(code), **kw)
    assert result.wall_s < LIMIT + SLACK, f"{contained.mode}: run took {result.wall_s:.2f}s, limit {LIMIT}s: {result}"
    return result


def test_infinite_loop_is_stopped_at_the_wall_clock_limit(contained):
    result = run(contained, "while True:\n    pass")
    assert result.timed_out and result.wall_s >= LIMIT
    assert "wall-clock limit" in result.error


def test_fork_bomb_is_capped_and_every_process_killed(contained):
    result = run(contained, """
        import os
        print(f"uid={os.getuid()}", flush=True)
        failures = 0
        while True:
            try:
                os.fork()
            except OSError:
                failures += 1
    """)
    assert result.timed_out
    assert contained.left_alive(result) == [], f"{contained.mode}: fork bomb processes survived the run"


def test_memory_bomb_fails_inside_its_limit(contained):
    result = run(contained, "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))")
    assert not result.timed_out
    assert "MemoryError" in result.error or "killed" in result.error


def test_huge_output_is_truncated_with_a_marker(contained):
    result = run(contained, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)")
    assert result.timed_out
    assert len(result.stdout) < 16_384 + 200
    assert "[output truncated:" in result.stdout


def test_network_connect_fails_and_reaches_nothing(contained):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    result = run(contained, f"""
        import socket
        s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
        s.sendall(b"leak")
    """)
    with pytest.raises(socket.timeout):
        server.accept()
    server.close()
    assert result.error and ("unreachable" in result.error or "refused" in result.error), result.error


@pytest.fixture
def user_writable_dir():
    """A folder outside /tmp and the homes that the unprivileged user may write to on the host."""
    folder = Path("/") / f"sport_fast_rw_{uuid.uuid4().hex}"
    folder.mkdir()
    user = unprivileged_user()
    if user is not None:
        import pwd
        os.chown(folder, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    yield folder
    subprocess.run(["rm", "-rf", str(folder)])


def test_writes_outside_the_working_directory_land_nowhere(contained, tmp_path, user_writable_dir):
    name = f"sport_escape_{uuid.uuid4().hex}"
    targets = [f"/tmp/{name}", f"/var/tmp/{name}", f"/dev/shm/{name}", str(Path.cwd() / name), f"/root/{name}",
               str(tmp_path / name), str(user_writable_dir / name)]
    result = run(contained, f"""
        for path in {targets!r}:
            try:
                open(path, "w").write("escaped")
                print("wrote", path)
            except OSError as err:
                print("refused", path, type(err).__name__)
        open("inside.txt", "w").write("fine")
    """)
    assert result.error is None, result.error
    assert "inside.txt" in result.files
    for path in targets:
        assert not os.path.exists(path), f"{contained.mode}: sandboxed code wrote {path} on the host"


def test_parent_environment_and_proc_secrets_are_unreadable(contained, tmp_path, user_writable_dir):
    secret = f"s3cret-{uuid.uuid4().hex}"
    secret_files = [tmp_path / "token.txt", user_writable_dir / "token.txt"]
    for f in secret_files:  # the second one the unprivileged user can read outside the sandbox
        f.write_text(secret)
        f.chmod(0o600)
    shutil.chown(secret_files[1], user_writable_dir.owner(), user_writable_dir.group())
    env = {"SPORT_TEST_SECRET": secret}
    os.environ.update(env)
    try:
        result = run(contained, f"""
            import os
            print(dict(os.environ))
            for path in ["/proc/%d/environ" % os.getppid(), "/proc/1/environ", "/proc/%d/mem" % os.getppid(),
                         "/proc/%d/cmdline" % os.getppid(), *{[str(f) for f in secret_files]!r}]:
                try:
                    print(path, open(path, "rb").read(4096))
                except OSError as err:
                    print(path, "refused", type(err).__name__)
        """)
    finally:
        os.environ.pop("SPORT_TEST_SECRET")
    assert secret not in result.stdout, f"{contained.mode}: a secret of the parent reached the sandbox"
    assert "SPORT_TEST_SECRET" not in result.stdout
    assert result.stdout.count("refused") >= 4, result.stdout


def test_killing_the_parent_fails(contained, tmp_path):
    """The sandbox's parent survives whatever its child sends: its parent pid, -1 (all it may signal), 1."""
    code = ("import os, signal\nfor pid in (os.getppid(), -1, 1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
            "    except OSError as e:\n        print(pid, type(e).__name__)\nprint('done')")
    if contained.mode == "user":  # the harness is the parent; it must come back with a result
        result = contained.run(code)
        assert result.error is None or "killed" in result.error, result
        return
    harness = textwrap.dedent(f"""
        import json, os
        from sport_fast.sandbox.sandbox import Sandbox
        r = Sandbox(timeout_s=2).run({code!r})
        print(json.dumps({{"alive": True, "stdout": r.stdout, "error": r.error}}))
    """)
    done = subprocess.run([sys.executable, "-c", harness], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"the sandbox's parent died: rc={done.returncode} {done.stderr[-500:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["alive"] and "PermissionError" in report["stdout"], report


def test_orphaned_daemons_are_killed_when_the_run_ends(contained):
    result = run(contained, """
        import os, time
        print(f"uid={os.getuid()}", flush=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                while True:
                    time.sleep(0.05)
            os._exit(0)
        time.sleep(0.2)
        print("parent leaves")
    """)
    assert not result.timed_out and result.wall_s < 1.5, result
    assert contained.left_alive(result) == [], f"{contained.mode}: a daemon outlived the run"


def test_ctypes_can_crash_only_itself_and_cannot_regain_root(contained):
    result = run(contained, """
        import ctypes, os
        libc = ctypes.CDLL(None)
        print("setuid0", libc.setuid(0), "unshare", libc.unshare(0x10000000 | 0x40000000), "uid", os.getuid())
        ctypes.string_at(0)
    """)
    assert "setuid0 -1" in result.stdout and "uid 0" not in result.stdout, result.stdout
    assert "SIGSEGV" in result.error


def test_unmounting_the_masks_or_mounting_anything_is_refused(contained):
    """The code cannot take the sandbox's file system apart: no unmount, no remount, no new mount."""
    result = run(contained, """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print("umount", libc.umount2(b"/tmp", 2), "mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None),
              "remount", libc.mount(None, b"/", None, 32 | 4096, None))
    """)
    assert "umount -1 mount -1 remount -1" in result.stdout, result.stdout


def test_concurrent_runs_are_contained_independently(contained):
    results = [None] * 4

    def one(i):
        results[i] = contained.run(f"import os\nopen('mine.txt', 'w').write('{i}')\nprint(open('mine.txt').read(), "
                                   f"sorted(os.listdir('.')))")
    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.stdout.split()[0] for r in results] == ["0", "1", "2", "3"]
    assert all("['mine.txt']" in r.stdout for r in results)
