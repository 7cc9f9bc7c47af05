"""Crash-safe files: atomic whole-file writes and append-only JSON lines.

- ``atomic_write``: temp file in the same folder, fsync, rename over the target, fsync the folder. A reader
  sees the old file or the new one, never a torn one.
- ``append_jsonl``: one ``write`` of a whole line under an exclusive lock, then fsync; a crash can only
  leave a torn *last* line.
- ``read_jsonl``: the one JSON-lines reader; for our own logs it repairs that last line first (a complete record gets its newline back, a torn one is cut
  off, with a warning naming the file); any other unreadable line is an error naming file and line.
"""
from __future__ import annotations

import fcntl
import json
import os
import warnings
from pathlib import Path
from typing import Iterator


def atomic_write(target: str | os.PathLike, data: bytes | str) -> None:
    target = Path(target)
    data = data.encode() if isinstance(data, str) else data
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    fsync_dir(target.parent)


def atomic_write_json(target: str | os.PathLike, value) -> None:
    atomic_write(target, json.dumps(value, indent=1, sort_keys=True) + "\n")


def fsync_dir(folder: str | os.PathLike) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_jsonl(path: str | os.PathLike, record) -> None:
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    with open(path, "ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_jsonl(path: str | os.PathLike, *, repair: bool = True, what: str = "record") -> Iterator[tuple[int, object]]:
    """(line number, value) of every non-blank line; nothing when the file is absent. ``repair``: first fix a
    torn last line (our own append-only logs); a user's input file is read as it is. An unreadable line is
    an error naming file, line and ``what`` it should have been."""
    path = Path(path)
    if not path.exists():
        return
    if repair:
        repair_torn_tail(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield lineno, json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{path}:{lineno}: not a valid {what}: {err}") from None


def repair_torn_tail(path: Path) -> int:
    """Fix a last line left without its newline by a crash; returns how many bytes were cut."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:])
    except (json.JSONDecodeError, UnicodeDecodeError):
        with open(path, "r+b") as f:
            f.truncate(start)
            os.fsync(f.fileno())
        warnings.warn(f"{path}: cut a torn last record of {len(data) - start} bytes (a crash mid-write)")
        return len(data) - start
    with open(path, "ab") as f:  # complete record, only its newline was lost
        f.write(b"\n")
        os.fsync(f.fileno())
    return 0
