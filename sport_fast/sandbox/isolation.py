"""The isolation layers of the sandbox, as operating-system calls. No torch, no numpy: the child imports this.

Two modes, chosen by what the machine allows (``layers.py`` probes them):
- as root: ``separate_uid``: the child drops to a uid of its own, unique per run. Other uids' files,
  ``/proc/<pid>/environ`` and signals are then out of reach, RLIMIT_NPROC counts only this run's processes,
  and ``kill(-1)`` sent *as that uid* ends every process of the run, however it detached (setsid, double
  fork): that is how the whole tree dies at the deadline.
- as an ordinary user (``userns.py``): a user namespace, with mount, network and PID namespaces inside it.
  The run's code is process 1 of its PID namespace, so the whole tree dies when it ends or is killed; the
  file system outside the working directory is read-only, and capabilities are dropped before the code runs.
Both modes add:
- ``network_namespace``: a new network namespace with no interface up; every connect fails.
- ``private_tmp``: a new mount namespace in which the world-writable directories are fresh tmpfs and the
  homes are masked, so a write outside the working directory lands nowhere the host sees; what the run
  needs from under them (the interpreter, the package, the tool modules) is bound back read-only.
- ``rlimits``: address space, CPU seconds, processes, open files, file size, no core dumps.
"""
from __future__ import annotations

import ctypes
import itertools
import os
import resource
import signal
import threading
import time

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
HIDDEN = ("/root", "/home")   # homes (tokens, caches, keys): masked by an empty tmpfs (and the parent's own)
UID_BASE = 1_200_000          # far above any uid a distribution hands out
_uid_counter = itertools.count()
_uid_lock = threading.Lock()


def is_root() -> bool:
    return os.geteuid() == 0


def allocate_uid() -> int:
    """A uid no other live run of this host uses: (parent pid, per-process counter), folded into 2^20."""
    with _uid_lock:
        n = next(_uid_counter)
    return UID_BASE + ((os.getpid() % 16384) * 64 + n % 64)


# -- in the child, as root, before the untrusted code --------------------------------------------------
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def enter_namespaces(workdir: str, network: bool, mounts: bool, readable: list[str] = (),
                     hidden: list[str] = HIDDEN) -> None:
    """As root: a new network and/or mount namespace; with ``mounts``, the layout of ``mount_layout``."""
    flags = (CLONE_NEWNET if network else 0) | (CLONE_NEWNS if mounts else 0)
    if not flags:
        return
    _check(_libc().unshare(flags), "unshare")
    if mounts:
        mount_layout(workdir, readable, hidden)


def mount_layout(workdir: str, readable: list[str], hidden: list[str]) -> None:
    """In a new mount namespace (as root): the world-writable directories become private tmpfs and the
    ``hidden`` ones empty tmpfs; ``workdir`` (which may live under one of them) is bound back writable at the
    same path, and the ``readable`` paths under them read-only."""
    libc = _libc()
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    scratch = _outermost([t for t in WORLD_WRITABLE if os.path.isdir(t)])
    masked = _outermost([t for t in hidden if os.path.isdir(t) and not any(_under(t, w) for w in scratch)])
    tops = scratch + masked
    keep = _outermost([p for p in readable if any(_under(p, t) for t in tops) and os.path.isdir(p)])
    fds = {path: os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in [workdir, *keep]}
    try:
        for top in tops:
            options = "size=64m,mode=1777" if top in scratch else "size=1m,mode=755"
            _check(libc.mount(b"tmpfs", top.encode(), b"tmpfs", 0, options.encode()), f"tmpfs {top}")
        for path in keep:
            _bind(libc, fds[path], path, read_only=True)
        if any(_under(workdir, t) for t in tops):
            _bind(libc, fds[workdir], workdir, read_only=False)
    finally:
        for fd in fds.values():
            os.close(fd)


def _outermost(paths: list[str]) -> list[str]:
    """``paths`` without those that lie under another of them, in order."""
    real = [os.path.realpath(p) for p in paths]
    return [p for i, p in enumerate(real) if p not in real[:i] and not any(_under(p, q) and p != q for q in real)]


def _bind(libc, fd: int, path: str, read_only: bool) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)
    _check(libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, MS_BIND | MS_REC, None), f"bind {path}")
    if read_only:
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        _check(libc.mount(None, path.encode(), None, flags, None), f"read-only {path}")


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def apply_limits(memory_mb: int, cpu_s: int, processes: int, open_files: int, file_mb: int) -> None:
    """Resource limits for this process and everything it starts."""
    mb = 1 << 20
    for what, value in ((resource.RLIMIT_AS, memory_mb * mb), (resource.RLIMIT_CPU, cpu_s),
                        (resource.RLIMIT_NOFILE, open_files), (resource.RLIMIT_FSIZE, file_mb * mb),
                        (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, processes)):
        resource.setrlimit(what, (value, value))


def drop_privileges(uid: int) -> None:
    """From root to ``uid`` (group ``uid``, no supplementary groups), for good: no way back."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.geteuid() != uid or os.getegid() != uid:
        raise OSError(f"could not drop privileges to uid {uid}")


# -- in the parent ----------------------------------------------------------------------------------------
def kill_uid(uid: int) -> None:
    """SIGKILL every process running as ``uid``: a forked helper becomes that uid and sends kill(-1),
    which Linux delivers to every process the sender may signal, except itself."""
    pid = os.fork()
    if pid == 0:  # only async-signal-safe calls until _exit: the parent may have threads
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def uid_processes(uid: int) -> list[int]:
    """Pids of live (not zombie) processes owned by ``uid``."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid == uid and _state(name) != "Z":
                out.append(int(name))
        except OSError:
            continue
    return out


def kill_uid_until_gone(uid: int, timeout_s: float = 2.0) -> bool:
    """Kill ``uid``'s processes until none is left (a fork may race one kill); False if some survive."""
    deadline = time.monotonic() + timeout_s
    while True:
        kill_uid(uid)
        if not uid_processes(uid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def _state(pid: str) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]
