"""The sandbox's working directories, and the sweep of those that a killed run left behind.

Every run's directory lies in one folder per uid in the temporary directory (``sport_fast_sandbox-<uid>``),
as ``run-XXXXXXXX``, beside a lock file ``run-XXXXXXXX.lock`` on which the run holds an exclusive ``flock``
for as long as it lasts. The kernel drops that lock when its holder dies, however it dies (SIGKILL, the OOM
killer), so a directory whose lock can be taken belongs to a run that ended without removing it: the first
claim of every process removes those. Directories of builds before the lock (``tmp*``, no lock file) are
removed once they are older than ``LEGACY_AGE_S``.

    workdir, lock = claim()      # an empty directory (0700), held
    ...
    release(workdir, lock)       # removed, lock file too
"""
from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

LOCK = ".lock"
PREFIX = "run-"
LEGACY_AGE_S = 3600.0  # no run lasts this long: the sandbox's wall-clock limit is seconds to minutes
_swept: set[str] = set()


def claim() -> tuple[str, int]:
    """A fresh, empty working directory and the descriptor holding its lock (pass both to ``release``).
    The lock is taken before the directory exists, so a sweep never sees an unheld directory of a live run."""
    base = base_dir()
    if str(base) not in _swept:
        _swept.add(str(base))
        sweep(base)
    fd, lock_path = tempfile.mkstemp(prefix=PREFIX, suffix=LOCK, dir=base)
    fcntl.flock(fd, fcntl.LOCK_EX)  # its name is new: nobody else can hold it
    workdir = lock_path[:-len(LOCK)]
    os.mkdir(workdir, 0o700)
    return workdir, fd


def release(workdir: str, fd: int) -> None:
    """Remove the run's directory, then its lock file, then let go of the lock."""
    try:
        shutil.rmtree(workdir, ignore_errors=True)
        Path(workdir + LOCK).unlink(missing_ok=True)
    finally:
        os.close(fd)


def sweep(base: Path) -> list[str]:
    """Remove the directories in ``base`` that no live run holds; returns their names."""
    removed = []
    for entry in sorted(os.listdir(base)):
        path = base / entry
        if entry.startswith(PREFIX) and entry.endswith(LOCK):
            if _remove_if_unheld(path, Path(str(path)[:-len(LOCK)])):
                removed.append(entry[:-len(LOCK)])
        elif entry.startswith("tmp") and _is_old_dir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(entry)
    return removed


def base_dir() -> Path:
    """This user's folder of working directories in the temporary directory: one per uid, ours alone (a
    folder of that name that another user made, or a link, is passed over for a fresh one)."""
    base = Path(tempfile.gettempdir()) / f"sport_fast_sandbox-{os.getuid()}"
    base.mkdir(mode=0o711, exist_ok=True)
    st = os.lstat(base)
    if st.st_uid != os.getuid() or not stat.S_ISDIR(st.st_mode):
        return Path(tempfile.mkdtemp(prefix="sport_fast_sandbox-"))
    return base


def _remove_if_unheld(lock_path: Path, workdir: Path) -> bool:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return False  # removed meanwhile, or not ours
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False  # a live run holds it
    try:
        if workdir.is_dir():
            shutil.rmtree(workdir, ignore_errors=True)
        elif time.time() - os.fstat(fd).st_mtime < LEGACY_AGE_S:
            return False  # a claim between its lock file and its directory: leave it be
        lock_path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def _is_old_dir(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and time.time() - st.st_mtime > LEGACY_AGE_S
