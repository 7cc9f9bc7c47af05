"""Hostile programs, each asserted to be contained within its limit: by what happened and by the time taken."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

from sport_fast.sandbox import isolation
from sport_fast.sandbox.layers import REQUIRED_LAYERS, available_layers
from sport_fast.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.skipif(not all(available_layers()[k] for k in REQUIRED_LAYERS),
                                reason="full isolation needs root on Linux")
LIMIT = 2.0
SLACK = 1.5  # start-up, kill and clean-up on a loaded 2-core machine


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(timeout_s=LIMIT, memory_mb=512, processes=16)


def run(sandbox, code, **kw):
    result = sandbox.run(textwrap.dedent(code), **kw)
    assert result.wall_s < LIMIT + SLACK, f"run took {result.wall_s:.2f}s, limit {LIMIT}s: {result}"
    return result


def uid_of(result) -> int:
    return int(result.stdout.split("uid=", 1)[1].split()[0])


def test_infinite_loop_is_stopped_at_the_wall_clock_limit(sandbox):
    result = run(sandbox, "while True:\n    pass")
    assert result.timed_out and result.wall_s >= LIMIT
    assert "wall-clock limit" in result.error


def test_fork_bomb_is_capped_and_every_process_killed(sandbox):
    result = run(sandbox, """
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
    assert isolation.uid_processes(uid_of(result)) == [], "fork bomb processes survived the run"


def test_memory_bomb_fails_inside_its_limit(sandbox):
    result = run(sandbox, "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))")
    assert not result.timed_out
    assert "MemoryError" in result.error or "killed" in result.error


def test_huge_output_is_truncated_with_a_marker(sandbox):
    result = run(sandbox, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)")
    assert result.timed_out
    assert len(result.stdout) < sandbox.limits.max_output_bytes + 200
    assert "[output truncated:" in result.stdout


def test_network_connect_fails_and_reaches_nothing(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    result = run(sandbox, f"""
        import socket
        s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
        s.sendall(b"leak")
    """)
    with pytest.raises(socket.timeout):
        server.accept()
    server.close()
    assert result.error and ("unreachable" in result.error or "refused" in result.error), result.error


def test_writes_outside_the_working_directory_land_nowhere(sandbox, tmp_path):
    name = f"sport_escape_{uuid.uuid4().hex}"
    targets = [f"/tmp/{name}", f"/var/tmp/{name}", f"/dev/shm/{name}", str(Path.cwd() / name), f"/root/{name}",
               str(tmp_path / name)]
    result = run(sandbox, f"""
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
        assert not os.path.exists(path), f"sandboxed code wrote {path} on the host"


def test_parent_environment_and_proc_secrets_are_unreadable(sandbox, tmp_path, monkeypatch):
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("SPORT_TEST_SECRET", secret)
    secret_file = tmp_path / "token.txt"
    secret_file.write_text(secret)
    result = run(sandbox, f"""
        import os
        print(dict(os.environ))
        for path in ["/proc/%d/environ" % os.getppid(), "/proc/1/environ", "/proc/%d/mem" % os.getppid(),
                     "/proc/%d/cmdline" % os.getppid(), {str(secret_file)!r}]:
            try:
                print(path, open(path, "rb").read(4096))
            except OSError as err:
                print(path, "refused", type(err).__name__)
    """)
    assert secret not in result.stdout, "a secret of the parent reached the sandbox"
    assert "SPORT_TEST_SECRET" not in result.stdout
    assert result.stdout.count("refused") >= 3, result.stdout


def test_killing_the_parent_fails():
    harness = textwrap.dedent("""
        import json, os
        from sport_fast.sandbox.sandbox import Sandbox
        code = "import os, signal\\nfor pid in (os.getppid(), -1, 1):\\n    try:\\n        os.kill(pid, signal.SIGKILL)\\n"\\
               "    except OSError as e:\\n        print(pid, type(e).__name__)\\nprint('done')"
        r = Sandbox(timeout_s=2).run(code)
        print(json.dumps({"alive": True, "stdout": r.stdout, "error": r.error}))
    """)
    done = subprocess.run([sys.executable, "-c", harness], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"the sandbox's parent died: rc={done.returncode} {done.stderr[-500:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["alive"] and "PermissionError" in report["stdout"], report


def test_orphaned_daemons_are_killed_when_the_run_ends(sandbox):
    result = run(sandbox, """
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
    assert isolation.uid_processes(uid_of(result)) == [], "a daemon outlived the run"


def test_ctypes_can_crash_only_itself_and_cannot_regain_root(sandbox):
    result = run(sandbox, """
        import ctypes, os
        libc = ctypes.CDLL(None)
        print("setuid0", libc.setuid(0), "unshare", libc.unshare(0x10000000 | 0x40000000), "uid", os.getuid())
        ctypes.string_at(0)
    """)
    assert "setuid0 -1" in result.stdout and "uid 0" not in result.stdout, result.stdout
    assert "SIGSEGV" in result.error


def test_concurrent_runs_are_contained_independently(sandbox):
    results = [None] * 4

    def one(i):
        results[i] = sandbox.run(f"import os\nopen('mine.txt', 'w').write('{i}')\nprint(open('mine.txt').read(), "
                                 f"sorted(os.listdir('.')))")
    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.stdout.split()[0] for r in results] == ["0", "1", "2", "3"]
    assert all("['mine.txt']" in r.stdout for r in results)
