"""The sandbox for an ordinary user: a user namespace, with mount, network and PID namespaces inside it.

In the child, before the untrusted code (stdlib only: the child imports this):
1. ``enter()``: unshare a user namespace with new mount, network and PID namespaces, and map the user's
   own uid and gid (nothing else exists inside);
2. ``fork_pid_one(setup, finish)``: fork the process that will run the code: it is process 1 of the new
   PID namespace, so when it ends, or is killed, the kernel kills every process it left behind (setsid and
   double forks included). While it waits, the forking process names the namespace and runs ``setup``
   (``own_root.build``: a root file system of the run's own); then process 1 runs ``finish``
   (``own_root.enter``: its own /proc, mounted in the new root while the old one is still there to vouch
   for it, and the pivot into the new root);
3. ``drop_capabilities()``: process 1 gives up for good the capabilities the user namespace granted
   (capset, bounding set, ambient set, ``no_new_privs``): the code can neither unmount nor mount anything.
The forking process only tells the parent process 1's pid and namespace (so that the parent can kill it
at the deadline, ``Sandbox``), waits, and ends as process 1 ended.
A kernel without unprivileged user namespaces refuses step 1: ``layers.py`` names the setting to change.
"""
from __future__ import annotations

import ctypes
import os
import platform
import signal

from sport_fast.sandbox import isolation

CLONE_NEWUSER, CLONE_NEWPID = 0x10000000, 0x20000000
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 1, 24, 38, 47, 4
CAP_VERSION_3, LAST_CAP = 0x20080522, 63
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine())


def enter() -> None:
    """Step 1: the namespaces and the identity maps (this process keeps its own PID)."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWUSER | isolation.CLONE_NEWNS | isolation.CLONE_NEWNET | CLONE_NEWPID
    isolation._check(isolation._libc().unshare(flags), "unshare(user, mount, network, pid namespaces)")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")


def fork_pid_one(setup, finish) -> tuple[int, str]:
    """Step 2: (0, "") in process 1 (it goes on in its own session, after ``setup`` ran in the forking
    process and ``finish`` in itself); in the forking process, (process 1's pid, its namespace ``pid:[inode]``)."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_w)
        go = os.read(ready_r, 1)
        if not go:  # the set-up failed: the forking process reports it
            os._exit(3)
        isolation._libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the forking process killed: this too
        os.setsid()
        finish()
        return 0, ""
    os.close(ready_r)
    namespace = os.readlink("/proc/self/ns/pid_for_children")  # resolvable once the namespace has a process
    setup()
    os.write(ready_w, b"x")
    os.close(ready_w)
    return pid, namespace


def drop_capabilities() -> None:
    """Step 3: no capability left in any set, none to regain (the bounding set emptied, no_new_privs)."""
    libc = isolation._libc()
    for cap in range(LAST_CAP + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last capability: ignored
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable of two 32-bit words, all zero
    isolation._check(libc.capset(header, data), "capset")
    isolation._check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def exit_like(status: int) -> None:
    """End this process as the waited-for one ended: the same exit code, or death by the same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
