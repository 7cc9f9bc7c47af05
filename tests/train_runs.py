"""Running ``python -m sport_fast.train`` as a user does, for the end-to-end tests: the default recipe, cut
down; a free loopback port for launchers."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout
DEFAULT = ["--config", str(ROOT / "sport_fast" / "configs" / "default.yaml")]


def small_run(tmp: Path, out: str, *extra: str) -> list[str]:
    """The default recipe cut down to the first two suite tasks, one step each. With these seeds the
    untrained SmolLM2 writes two runnable candidates for task 1 (as in the default run), so pairs form."""
    return [f"out_dir={tmp / out}", "tasks.per_round=2", "explore.max_steps=1", "eval.enabled=false",
            "judge.backend=local", "judge.max_tokens=96", "judge.rule=all", "train.epochs=1", *extra]


def train(args: list[str], kill_at: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPORT_KILL_AT": kill_at or ""}
    return subprocess.run([sys.executable, "-m", "sport_fast.train", *DEFAULT, *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
