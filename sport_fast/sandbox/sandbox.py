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
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from sport_fast.sandbox import isolation, workdirs
from sport_fast.sandbox.layers import available_layers, child_command, missing_layers
from sport_fast.sandbox.pump import OutputPump
from sport_fast.sandbox.result import SandboxResult, read_result
from sport_fast.sandbox.visible import hidden_paths, readable_paths


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
        """``tools``: a ``ToolRegistry`` (None: no tools). Refuses to run without every isolation layer of
        its mode (``layers.py``) unless ``allow_weak_isolation`` (or ``SPORT_SANDBOX_ALLOW_WEAK=1``) says so,
        with a warning."""
        self.limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb, **limits)
        self.tools = tools
        self.layers = available_layers()
        self.mode = self.layers.get("mode", "root")
        missing = missing_layers(self.layers)
        weak_ok = allow_weak_isolation or os.environ.get("SPORT_SANDBOX_ALLOW_WEAK") == "1"
        if missing and not weak_ok:
            why = self.layers.get("problem") or "needs root, or unprivileged user namespaces, on Linux"
            raise RuntimeError(f"sandbox: isolation layers unavailable here: {', '.join(missing)} ({why}); pass "
                               "allow_weak_isolation=True or set SPORT_SANDBOX_ALLOW_WEAK=1 to run untrusted code "
                               "without them")
        if missing:
            print(f"WARNING: sandbox runs WITHOUT {', '.join(missing)}: untrusted code is not fully contained",
                  file=sys.stderr)
        self.readable, self.hidden = readable_paths(tools), hidden_paths()

    def run(self, code: str, files: Mapping[str, str | Path | bytes] | None = None,
            prelude: list[str] | tuple[str, ...] = ()) -> SandboxResult:
        """Run ``code`` after replaying ``prelude``, in a fresh working directory holding ``files``
        (name in the directory -> source path or bytes)."""
        own_uid = self.mode == "root" and self.layers["separate_uid"]
        uid = isolation.allocate_uid() if own_uid else os.getuid()
        workdir, lock = workdirs.claim()
        try:
            _fill_workdir(workdir, files or {}, uid if own_uid else None)
            result = self._run_child(code, list(prelude), workdir, uid)
            result.files = sorted(str(p.relative_to(workdir)) for p in Path(workdir).rglob("*") if p.is_file())
            return result
        finally:
            if own_uid:
                isolation.kill_uid_until_gone(uid)
            workdirs.release(workdir, lock)

    # -- internals ----------------------------------------------------------------------------------
    def _run_child(self, code: str, prelude: list[str], workdir: str, uid: int) -> SandboxResult:
        msg_r, msg_w = os.pipe()
        t0 = time.monotonic()
        proc = subprocess.Popen(child_command("sport_fast.sandbox.child"), cwd=workdir, env=_scrubbed_env(workdir),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(msg_w,), start_new_session=True)
        os.close(msg_w)
        proc.stdin.write((json.dumps(self._config(code, prelude, workdir, uid, msg_w)) + "\n").encode())
        proc.stdin.flush()
        pid_one = PidOne()
        pump = OutputPump(proc, msg_r, self.limits.max_output_bytes, self._host_call(workdir), pid_one.seen)
        timed_out = not pump.run(t0 + self.limits.timeout_s)
        if timed_out:
            self._kill(proc, uid, pid_one)
        returncode = proc.wait()
        pid_one.kill()  # normally long gone with its namespace; never left behind
        return read_result(pump, returncode, timed_out, time.monotonic() - t0, self.limits.timeout_s)

    def _config(self, code: str, prelude: list[str], workdir: str, uid: int, msg_fd: int) -> dict:
        lim = self.limits
        processes = lim.processes
        if self.mode not in ("root", "userns"):  # RLIMIT_NPROC counts every process of our own uid
            processes += len(isolation.uid_processes(os.getuid()))
        return {"workdir": workdir, "uid": uid, "msg_fd": msg_fd, "code": code, "prelude": prelude,
                "layers": self.layers, "mode": self.mode, "readable": self.readable, "hidden": self.hidden,
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

    def _kill(self, proc: subprocess.Popen, uid: int, pid_one: "PidOne") -> None:
        """At the deadline. An ordinary user's mode: process 1 of the run's PID namespace first (the kernel
        then kills the rest, and the child, waiting for it, reaps it and ends: no zombie is left). Then the
        child's process group, and (root's mode) every process of the run's uid."""
        pid_one.kill()
        try:
            proc.wait(timeout=1.0 if self.mode == "userns" else 0)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.mode == "root" and self.layers["separate_uid"]:
            isolation.kill_uid_until_gone(uid)


class PidOne:
    """Process 1 of a run's PID namespace, held as a pidfd from the moment the child names it (checked to
    be in the namespace the child named), so that killing it can never hit a process that reused its pid."""

    def __init__(self):
        self.fd: int | None = None

    def seen(self, message: dict) -> None:
        try:
            fd = os.pidfd_open(int(message["pid"]))
        except (OSError, KeyError, ValueError):
            return  # already gone (and with it its namespace)
        try:
            same = os.readlink(f"/proc/{int(message['pid'])}/ns/pid") == message.get("namespace")
        except OSError:
            same = False
        if same:
            self.fd = fd
        else:
            os.close(fd)

    def kill(self, wait_s: float = 2.0) -> None:
        """SIGKILL process 1, and wait (up to ``wait_s``) until it has ended, which it does only once the
        kernel has killed every other process of its namespace."""
        if self.fd is None:
            return
        try:
            signal.pidfd_send_signal(self.fd, signal.SIGKILL)
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            poller.poll(int(wait_s * 1000))
        except ProcessLookupError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


def _fill_workdir(workdir: str, files: Mapping[str, str | Path | bytes], owner: int | None) -> None:
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


