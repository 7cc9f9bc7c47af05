"""The parent's side of the child's pipes: stdout, stderr and the JSON message channel, read with a byte
bound (the rest is drained and counted, so a flood can neither block nor exhaust the parent), host-tool
calls answered as they arrive."""
from __future__ import annotations

import json
import os
import selectors
import subprocess
import time

GRACE_AFTER_EXIT_S = 0.25
TRUNCATED = "\n...[output truncated: {n} more bytes]\n"


class OutputPump:
    """Reads the child's stdout, stderr and messages until all close or the deadline passes."""

    def __init__(self, proc: subprocess.Popen, msg_fd: int, max_bytes: int, host_call, on_pid_one=None):
        """``host_call(request) -> reply`` answers host-tool calls; ``on_pid_one(message)`` hears, as soon as
        it arrives, which process runs the code (an ordinary user's mode)."""
        self.proc, self.max_bytes, self.host_call, self.on_pid_one = proc, max_bytes, host_call, on_pid_one
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
            elif message.get("type") == "pid_one":
                if self.on_pid_one is not None:
                    self.on_pid_one(message)
            else:
                self.messages.append(message)

    def text(self, name: str) -> str:
        body = self.out[name].decode("utf-8", errors="replace")
        return body + TRUNCATED.format(n=self.dropped[name]) if self.dropped[name] else body
