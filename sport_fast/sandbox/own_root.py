"""A root file system of the run's own, for the unprivileged sandbox (in a new user and mount namespace).

The run's code runs as the user itself, so whatever the user may read or write on the host it could too;
it therefore gets a new root holding only what a run needs, and nothing else of the host's files:

    /usr /bin /sbin /lib* /etc            the system's, read-only (links kept as links)
    the interpreter, the package, the tool packages, wherever they live (under /home, /tmp, a path with
                                          a space): read-only, at their own paths
    the working directory                 writable, at its own path
    /tmp, /var/tmp, /dev/shm              fresh tmpfs
    /dev                                  the host's devices, read-only
    /proc                                 process 1's own (its PID namespace's processes only)

``build`` lays it out on a tmpfs (run by the process that forked process 1); ``enter``, in process 1, mounts
its /proc there (the kernel allows that only while the host's /proc is still visible) and pivots into it;
the old root is detached: no path leads back to the host's tree.
"""
from __future__ import annotations

import os

from sport_fast.sandbox import isolation

SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
NEW_ROOT = "/mnt" if os.path.isdir("/mnt") else "/tmp"   # built there, in the run's mount namespace only
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MNT_DETACH = 2


def build(workdir: str, readable: list[str]) -> None:
    """Lay the new root out on a tmpfs at ``NEW_ROOT`` (the caller is in a new mount namespace)."""
    libc = isolation._libc()
    isolation._check(libc.mount(None, b"/", None, isolation.MS_REC | isolation.MS_PRIVATE, None), "make / private")
    binds = [p for p in isolation._outermost([*SYSTEM, *readable]) if os.path.isdir(p) and not os.path.islink(p)]
    fds = {path: os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in [*binds, workdir, "/dev"]}
    new = _fresh_root(libc)
    try:
        for path in ("/tmp", "/var/tmp"):
            _tmpfs_at(libc, new + path)
        for link in (p for p in SYSTEM if os.path.islink(p)):
            os.symlink(os.readlink(link), new + link)
        for path in binds:
            _bind_at(libc, fds[path], new + path, read_only=True)
        _bind_at(libc, fds["/dev"], new + "/dev", read_only=True)
        _tmpfs_at(libc, new + "/dev/shm")
        _bind_at(libc, fds[workdir], new + workdir, read_only=False)
        os.makedirs(new + "/proc", exist_ok=True)
    finally:
        for fd in fds.values():
            os.close(fd)


def enter() -> None:
    """In process 1 of the new PID namespace: mount its /proc in the new root, then make that the root."""
    libc = isolation._libc()
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    isolation._check(libc.mount(b"proc", (NEW_ROOT + "/proc").encode(), b"proc", flags, None), "mount /proc")
    _pivot(libc, NEW_ROOT)


def _tmpfs_at(libc, target: str) -> None:
    os.makedirs(target, exist_ok=True)
    isolation._check(libc.mount(b"tmpfs", target.encode(), b"tmpfs", 0, b"size=64m,mode=1777"), f"tmpfs {target}")


def _fresh_root(libc) -> str:
    """An empty tmpfs to build the root in (over /mnt, in this mount namespace only)."""
    isolation._check(libc.mount(b"tmpfs", NEW_ROOT.encode(), b"tmpfs", 0, b"size=16m,mode=755"), f"tmpfs {NEW_ROOT}")
    return NEW_ROOT


def _bind_at(libc, fd: int, target: str, read_only: bool) -> None:
    os.makedirs(target, mode=0o755, exist_ok=True)
    isolation._check(libc.mount(f"/proc/self/fd/{fd}".encode(), target.encode(), None,
                                isolation.MS_BIND | isolation.MS_REC, None), f"bind {target}")
    if read_only:
        flags = isolation.MS_REMOUNT | isolation.MS_BIND | isolation.MS_RDONLY
        isolation._check(libc.mount(None, target.encode(), None, flags, None), f"read-only {target}")


def _pivot(libc, new: str) -> None:
    """Make ``new`` the root; the old root is detached, so no path leads back to it."""
    old = new + "/.old_root"
    os.makedirs(old, exist_ok=True)
    from sport_fast.sandbox.userns import SYS_PIVOT_ROOT
    if SYS_PIVOT_ROOT is None:
        raise OSError("pivot_root: this processor's system call number is not known here")
    isolation._check(libc.syscall(SYS_PIVOT_ROOT, new.encode(), old.encode()), "pivot_root")
    os.chdir("/")
    isolation._check(libc.umount2(b"/.old_root", MNT_DETACH), "detach the old root")
    os.rmdir("/.old_root")
