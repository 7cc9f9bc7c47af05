"""Fault injection for the crash tests: ``SPORT_KILL_AT=point[:n]`` makes the process SIGKILL itself the
n-th time (default 1st) it reaches ``crash_point(point)``. Unset, a crash point costs one dict lookup."""
from __future__ import annotations

import os
import signal

_seen: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("SPORT_KILL_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
