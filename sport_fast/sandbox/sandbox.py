"""Run untrusted step code in a fresh, isolated child process per run.

``Sandbox(timeout_s=10, memory_mb=1024).run(code, files={...}, prelude=[...]) -> SandboxResult``

Every run: a private working directory holding only the task's files; ``python -I`` with a scrubbed
environment; the isolation layers of ``isolation.py`` (own uid, no network, private tmp, rlimits); output
read by the parent with a byte bound (the rest is drained and counted, so a flood cannot block or exhaust
us); at the wall-clock deadline, and after every run, every process of the run's uid is killed, whatever
it detached from. Results and host-tool calls cross as JSON lines on a pipe, never pickle.

State: the candidate sees the state after the chosen steps so far because ``prelude`` (their code) is
replayed first in the same child, output discarded; so candidates never see each other's effects.
Host tools (model-backed ones that need the network) run here in the parent, called over the pipe.
"""
from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from sport_fast.sandbox import isolation

REQUIRED_LAYERS = ("separate_uid", "network_namespace", "private_tmp", "rlimits")
GRACE_AFTER_EXIT_S = 0.25
TRUNCATED = "\n...[output truncated: {n} more bytes]\n"


@dataclass
class SandboxResult:
    """What one run produced. ``error``: the step's exception text, or why the run was stopped."""
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    timed_out: bool = False
    wall_s: float = 0.0
    final_answer: object = None
    has_final_answer: bool = False
    tool_calls: list[dict] = field(default_factory=list)
    prelude_errors: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out

    def observation(self) -> str:
        """What the agent sees next: the printed output, then the error if any."""
        parts = [self.stdout.rstrip()] if self.stdout.strip() else []
        if self.timed_out:
            parts.append(f"Error: the code ran past its time limit and was stopped ({self.error})")
        elif self.error:
            parts.append(f"Error: {self.error}")
        return "\n".join(parts) if parts else "(no output)"


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0
    memory_mb: int = 1024
    processes: int = 16
    open_files: int = 64
    file_mb: int = 64
    max_output_bytes: int = 16_384

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.memory_mb < 64 or self.processes < 1 or self.open_files < 16:
            raise ValueError(f"sandbox limits out of range: {self}")


class Sandbox:
    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 1024, tools=None,
                 allow_weak_isolation: bool = False, **limits):
        """``tools``: a ``ToolRegistry`` (None: no tools). Refuses to run without every isolation layer
        unless ``allow_weak_isolation`` (or ``SPORT_SANDBOX_ALLOW_WEAK=1``) says so, with a warning."""
        self.limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb, **limits)
        self.tools = tools
        self.layers = available_layers()
        missing = [name for name in REQUIRED_LAYERS if not self.layers[name]]
        weak_ok = allow_weak_isolation or os.environ.get("SPORT_SANDBOX_ALLOW_WEAK") == "1"
        if missing and not weak_ok:
            raise RuntimeError(f"sandbox: isolation layers unavailable here: {', '.join(missing)} (needs root on "
                               "Linux); pass allow_weak_isolation=True or set SPORT_SANDBOX_ALLOW_WEAK=1 to run "
                               "untrusted code without them")
        if missing:
            print(f"WARNING: sandbox runs WITHOUT {', '.join(missing)}: untrusted code is not fully contained",
                  file=sys.stderr)

    def run(self, code: str, files: Mapping[str, str | Path | bytes] | None = None,
            prelude: list[str] | tuple[str, ...] = ()) -> SandboxResult:
        """Run ``code`` after replaying ``prelude``, in a fresh working directory holding ``files``
        (name in the directory -> source path or bytes)."""
        uid = isolation.allocate_uid() if self.layers["separate_uid"] else os.getuid()
        workdir = _make_workdir(files or {}, uid if self.layers["separate_uid"] else None)
        try:
            result = self._run_child(code, list(prelude), workdir, uid)
            result.files = sorted(str(p.relative_to(workdir)) for p in Path(workdir).rglob("*") if p.is_file())
            return result
        finally:
            if self.layers["separate_uid"]:
                isolation.kill_uid_until_gone(uid)
            shutil.rmtree(workdir, ignore_errors=True)

    # -- internals ----------------------------------------------------------------------------------
    def _run_child(self, code: str, prelude: list[str], workdir: str, uid: int) -> SandboxResult:
        msg_r, msg_w = os.pipe()
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-I", "-m", "sport_fast.sandbox.child"], cwd=workdir,
                                env=_scrubbed_env(workdir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(msg_w,), start_new_session=True)
        os.close(msg_w)
        proc.stdin.write((json.dumps(self._config(code, prelude, workdir, uid, msg_w)) + "\n").encode())
        proc.stdin.flush()
        pump = _Pump(proc, msg_r, self.limits.max_output_bytes, self._host_call(workdir))
        timed_out = not pump.run(t0 + self.limits.timeout_s)
        if timed_out:
            self._kill(proc, uid)
        returncode = proc.wait()
        return _result(pump, returncode, timed_out, time.monotonic() - t0, self.limits.timeout_s)

    def _config(self, code: str, prelude: list[str], workdir: str, uid: int, msg_fd: int) -> dict:
        lim = self.limits
        processes = lim.processes
        if not self.layers["separate_uid"]:  # RLIMIT_NPROC counts every process of our own uid
            processes += len(isolation.uid_processes(os.getuid()))
        return {"workdir": workdir, "uid": uid, "msg_fd": msg_fd, "code": code, "prelude": prelude,
                "layers": self.layers,
                "sandbox_tools": self.tools.sandbox_specs() if self.tools else [],
                "host_tools": self.tools.host_names() if self.tools else [],
                "limits": {"memory_mb": lim.memory_mb, "cpu_s": int(lim.timeout_s) + 2, "processes": processes,
                           "open_files": lim.open_files, "file_mb": lim.file_mb}}

    def _host_call(self, workdir: str) -> Callable[[dict], dict]:
        def call(request: dict) -> dict:
            if self.tools is None:
                return {"ok": False, "error": "no host tools"}
            try:
                return {"ok": True, "result": self.tools.call_host(request["name"], request.get("args", []),
                                                                   request.get("kwargs", {}), workdir)}
            except Exception as err:  # noqa: BLE001 - the tool's failure is the step's observation
                return {"ok": False, "error": f"{type(err).__name__}: {err}"}
        return call

    def _kill(self, proc: subprocess.Popen, uid: int) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.layers["separate_uid"]:
            isolation.kill_uid_until_gone(uid)


class _Pump:
    """Reads the child's stdout, stderr and messages until all close or the deadline passes."""

    def __init__(self, proc: subprocess.Popen, msg_fd: int, max_bytes: int, host_call):
        self.proc, self.max_bytes, self.host_call = proc, max_bytes, host_call
        self.out = {"stdout": bytearray(), "stderr": bytearray(), "msg": bytearray()}
        self.dropped = {"stdout": 0, "stderr": 0, "msg": 0}
        self.messages: list[dict] = []
        self.sel = selectors.DefaultSelector()
        self.sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
        self.sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
        self.msg_file = os.fdopen(msg_fd, "rb", buffering=0)
        self.sel.register(self.msg_file, selectors.EVENT_READ, "msg")

    def run(self, deadline: float) -> bool:
        """False if the deadline passed first. Done when every stream closed, or shortly after the child
        exits: a daemon it left behind may hold the pipes open, and is killed with the rest of the uid."""
        exit_grace = None
        try:
            while self.sel.get_map():
                now = time.monotonic()
                if exit_grace is None and self.proc.poll() is not None:
                    exit_grace = now + GRACE_AFTER_EXIT_S
                if exit_grace is not None and now >= exit_grace:
                    return True
                if now >= deadline:
                    return False
                for key, _ in self.sel.select(timeout=min(deadline - now, 0.05)):
                    self._read(key)
            return True
        finally:
            self.sel.close()
            for f in (self.proc.stdout, self.proc.stderr, self.msg_file, self.proc.stdin):
                f.close()

    def _read(self, key) -> None:
        chunk = os.read(key.fileobj.fileno(), 65536)
        if not chunk:
            self.sel.unregister(key.fileobj)
            return
        name = key.data
        limit = 1 << 24 if name == "msg" else self.max_bytes
        room = max(0, limit - len(self.out[name]))
        self.out[name] += chunk[:room]
        self.dropped[name] += len(chunk) - min(room, len(chunk))
        if name == "msg":
            self._answer_requests()

    def _answer_requests(self) -> None:
        while b"\n" in self.out["msg"]:
            line, _, rest = bytes(self.out["msg"]).partition(b"\n")
            self.out["msg"] = bytearray(rest)
            message = json.loads(line)
            if message.get("type") == "tool_call":
                self.proc.stdin.write((json.dumps(self.host_call(message)) + "\n").encode())
                self.proc.stdin.flush()
            else:
                self.messages.append(message)

    def text(self, name: str) -> str:
        body = self.out[name].decode("utf-8", errors="replace")
        return body + TRUNCATED.format(n=self.dropped[name]) if self.dropped[name] else body


def _result(pump: _Pump, returncode: int, timed_out: bool, wall_s: float, timeout_s: float) -> SandboxResult:
    result = SandboxResult(stdout=pump.text("stdout"), stderr=pump.text("stderr"), timed_out=timed_out,
                           wall_s=wall_s)
    final = next((m for m in pump.messages if m.get("type") in ("result", "setup_error")), None)
    if timed_out:
        result.error = f"wall-clock limit of {timeout_s:g}s"
    elif final is None:
        result.error = _death(returncode)
    elif final["type"] == "setup_error":
        raise RuntimeError(f"sandbox: could not set up isolation: {final['error']}")
    else:
        result.error = final["error"]
        result.final_answer, result.has_final_answer = final["final_answer"], final["has_final_answer"]
        result.tool_calls, result.prelude_errors = final["tool_calls"], final["prelude_errors"]
    return result


def _death(returncode: int) -> str:
    """Why a child that sent no result ended."""
    if returncode < 0:
        sig = signal.Signals(-returncode).name
        hint = {"SIGKILL": " (memory or CPU limit?)", "SIGXCPU": " (CPU time limit)", "SIGSEGV": " (crashed)",
                "SIGXFSZ": " (file size limit)"}.get(sig, "")
        return f"the process was killed by {sig}{hint}"
    return f"the process exited with status {returncode} before reporting a result"


def _make_workdir(files: Mapping[str, str | Path | bytes], owner: int | None) -> str:
    base = Path(tempfile.gettempdir()) / "sport_fast_sandbox"
    base.mkdir(mode=0o711, exist_ok=True)
    workdir = tempfile.mkdtemp(dir=base)
    for name, source in files.items():
        target = _inside(workdir, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            shutil.copyfile(source, target)
    if owner is not None:
        for p in [Path(workdir), *Path(workdir).rglob("*")]:
            os.chown(p, owner, owner)
    os.chmod(workdir, 0o700)
    return workdir


def _inside(workdir: str, name: str) -> Path:
    """``workdir / name``, refusing names that would land outside it."""
    target = (Path(workdir) / name).resolve()
    if Path(name).is_absolute() or Path(workdir).resolve() not in target.parents:
        raise ValueError(f"sandbox: file name {name!r} must be a relative path inside the working directory")
    return target


def _scrubbed_env(workdir: str) -> dict[str, str]:
    """Nothing of the parent's environment (keys, tokens) but what the child needs to start."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir,
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


_LAYERS: dict[str, bool] | None = None


def available_layers() -> dict[str, bool]:
    """Which isolation layers work on this machine: probed once per process, in a throwaway child."""
    global _LAYERS
    if _LAYERS is None:
        _LAYERS = _probe_layers()
    return dict(_LAYERS)


def _probe_layers() -> dict[str, bool]:
    layers = {"rlimits": True, "separate_uid": isolation.is_root(), "network_namespace": False, "private_tmp": False}
    if sys.platform != "linux":
        return {**layers, "separate_uid": False}
    probe = ("import ctypes, os, sys; from sport_fast.sandbox import isolation; "
             "isolation.enter_namespaces(os.getcwd(), network=True, mounts=True)")
    done = subprocess.run([sys.executable, "-I", "-c", probe], cwd=tempfile.gettempdir(), capture_output=True,
                          timeout=30)
    if done.returncode == 0:
        layers["network_namespace"] = layers["private_tmp"] = True
    return layers


def describe_layers() -> str:
    """One line for start-up logs: which layers this machine gives the sandbox."""
    layers = available_layers()
    return "sandbox isolation: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in layers.items())
