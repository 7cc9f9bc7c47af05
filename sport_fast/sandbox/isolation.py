"""The isolation layers of the sandbox, as operating-system calls. No torch, no numpy: the child imports this.

Layers, strongest first (each is reported by the self-test in ``sandbox.py``):
- ``separate_uid``: the child drops from root to a uid of its own, unique per run. Other uids' files,
  ``/proc/<pid>/environ`` and signals are then out of reach, RLIMIT_NPROC counts only this run's processes,
  and ``kill(-1)`` sent *as that uid* ends every process of the run, however it detached (setsid, double
  fork): that is how the whole tree dies at the deadline.
- ``network_namespace``: a new network namespace with no interface up; every connect fails.
- ``private_tmp``: a new mount namespace in which the world-writable directories are fresh tmpfs, so a
  write outside the working directory lands nowhere the host sees.
- ``rlimits``: address space, CPU seconds, processes, open files, file size, no core dumps.
Without root only ``rlimits`` apply and the tree is killed by process group, which a setsid child
escapes; ``sandbox.py`` refuses that unless the caller opts in.
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
HIDDEN = ("/root",)           # the parent's home (tokens, caches, keys): masked by an empty tmpfs
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


def interpreter_paths() -> list[str]:
    """What this interpreter reads after start-up: its prefixes and every directory on ``sys.path``."""
    import sys
    paths = {sys.base_prefix, sys.prefix, *(p for p in sys.path if p and os.path.isdir(p))}
    return sorted(os.path.realpath(p) for p in paths)


def enter_namespaces(workdir: str, network: bool, mounts: bool, readable: list[str] = ()) -> None:
    """New network and/or mount namespace. With ``mounts``: the world-writable directories become private
    tmpfs, ``workdir`` (which may live under one of them) is bound back at the same path, and ``HIDDEN``
    directories are masked, except the ``readable`` paths under them (the interpreter's), bound back
    read-only."""
    flags = (CLONE_NEWNET if network else 0) | (CLONE_NEWNS if mounts else 0)
    if not flags:
        return
    libc = _libc()
    _check(libc.unshare(flags), "unshare")
    if not mounts:
        return
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    _mask(libc, WORLD_WRITABLE, [workdir], "size=64m,mode=1777", read_only=False)
    _mask(libc, HIDDEN, [p for p in readable if any(_under(p, h) for h in HIDDEN)], "size=1m,mode=755",
          read_only=True)


def _mask(libc, tops, keep: list[str], options: str, read_only: bool) -> None:
    """Mount a fresh tmpfs on each of ``tops``, then bind the ``keep`` paths under them back in place.
    The fds are opened inside the new namespace, before the masking, so the binds can refer to them."""
    fds = {path: os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in keep if os.path.isdir(path)}
    try:
        for top in tops:
            if os.path.isdir(top):
                _check(libc.mount(b"tmpfs", top.encode(), b"tmpfs", 0, options.encode()), f"tmpfs {top}")
        for path, fd in fds.items():
            if any(_under(path, top) for top in tops):
                _bind(libc, fd, path, read_only)
    finally:
        for fd in fds.values():
            os.close(fd)


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
