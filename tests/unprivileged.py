"""The sandbox as an ordinary user runs it, driven from a test process that runs as root (as CI does).

``unprivileged_user()`` makes (once) a system user with no home and no login, and ``UserSandbox`` runs the
sandbox as that user: ``runuser -u USER -- /usr/bin/python3 harness``. On these machines the project's own
interpreter lives under /root (mode 700), which that user cannot reach; the sandbox itself needs only the
standard library, so the system's interpreter runs it, from a copy of the package the user can read. The
harness reports the result and every process of the user still alive in another PID namespace than its own
(what the run left behind: there must be none).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from types import SimpleNamespace

USER = "sport_fast_sbx"
INTERPRETER = "/usr/bin/python3"
HARNESS = textwrap.dedent('''
    import base64, json, os, sys
    request = json.loads(sys.stdin.read())
    sys.path.insert(0, request["package_root"])
    from sport_fast.sandbox.layers import available_layers
    from sport_fast.sandbox.sandbox import Sandbox
    mine = os.readlink("/proc/self/ns/pid")
    files = {k: base64.b64decode(v) for k, v in request["files"].items()}
    result = Sandbox(**request["limits"]).run(request["code"], files=files, prelude=request["prelude"])

    def others():
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
                if os.stat("/proc/" + pid).st_uid == os.getuid() and os.readlink(f"/proc/{pid}/ns/pid") != mine:
                    out.append((int(pid), state))  # zombies too: nothing of the run may be left
            except OSError:
                pass
        return out
    print(json.dumps({"stdout": result.stdout, "stderr": result.stderr, "error": result.error,
                      "timed_out": result.timed_out, "wall_s": result.wall_s, "files": result.files,
                      "survivors": others(), "layers": available_layers()}))
''')


def unprivileged_user() -> str | None:
    """The test user's name, made if needed; None where it cannot be (not root, no useradd, no interpreter)."""
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser") or \
            not os.access(INTERPRETER, os.X_OK):
        return None
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       check=True, capture_output=True)
    return USER


class UserSandbox:
    """``Sandbox(**limits).run(...)`` as the unprivileged user; results as a namespace of the same fields."""

    def __init__(self, folder: Path, **limits):
        self.root, self.limits = Path(folder), limits
        package = Path(__file__).resolve().parents[1] / "sport_fast"
        shutil.copytree(package, self.root / "sport_fast", symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "kernels", "*.so", "configs"))
        (self.root / "harness.py").write_text(HARNESS)
        for path in [self.root, *self.root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.root.chmod(0o755)

    def run(self, code: str, files: dict | None = None, prelude=(), env: dict | None = None, timeout: float = 120):
        request = {"package_root": str(self.root), "code": code, "prelude": list(prelude), "limits": self.limits,
                   "files": {k: base64.b64encode(v if isinstance(v, bytes) else Path(v).read_bytes()).decode()
                             for k, v in (files or {}).items()}}
        done = subprocess.run(["runuser", "-u", USER, "--", INTERPRETER, str(self.root / "harness.py")],
                              input=json.dumps(request), capture_output=True, text=True, timeout=timeout,
                              cwd="/", env={**os.environ, **(env or {})})
        if done.returncode != 0:
            raise RuntimeError(f"the unprivileged harness failed (rc {done.returncode}): {done.stderr[-2000:]}")
        return SimpleNamespace(**json.loads(done.stdout.strip().splitlines()[-1]))
