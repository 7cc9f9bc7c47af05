"""What one sandbox run produced, and how the parent reads it off the child's messages."""
from __future__ import annotations

import signal
from dataclasses import dataclass, field


@dataclass(kw_only=True)
class ExecutionOutcome:
    """Whether code ran: ``error`` is its exception text (or why the run was stopped), ``timed_out`` whether
    the wall-clock limit ended it. The one definition of "ran without error" for sandbox runs and for the
    agent's candidate records."""
    error: str | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out


@dataclass
class SandboxResult(ExecutionOutcome):
    """What one run produced. ``error``: the step's exception text, or why the run was stopped."""
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    final_answer: object = None
    has_final_answer: bool = False
    tool_calls: list[dict] = field(default_factory=list)
    prelude_errors: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def observation(self) -> str:
        """What the agent sees next: the printed output, then the error if any."""
        parts = [self.stdout.rstrip()] if self.stdout.strip() else []
        if self.timed_out:
            parts.append(f"Error: the code ran past its time limit and was stopped ({self.error})")
        elif self.error:
            parts.append(f"Error: {self.error}")
        return "\n".join(parts) if parts else "(no output)"


def read_result(pump, returncode: int, timed_out: bool, wall_s: float, timeout_s: float) -> SandboxResult:
    result = SandboxResult(stdout=pump.text("stdout"), stderr=pump.text("stderr"), timed_out=timed_out,
                           wall_s=wall_s)
    final = next((m for m in pump.messages if m.get("type") in ("result", "setup_error")), None)
    if timed_out:
        result.error = f"wall-clock limit of {timeout_s:g}s"
    elif final is None:
        result.error = _death(returncode)
    elif final["type"] == "setup_error":
        raise RuntimeError(f"sandbox: could not set up isolation: {final['error']}")
    else:
        result.error = final["error"]
        result.final_answer, result.has_final_answer = final["final_answer"], final["has_final_answer"]
        result.tool_calls, result.prelude_errors = final["tool_calls"], final["prelude_errors"]
    return result


KILLED_BY = "the process was killed by"  # the start of the error of a child that died by a signal


def _death(returncode: int) -> str:
    """Why a child that sent no result ended."""
    if returncode < 0:
        sig = signal.Signals(-returncode).name
        hint = {"SIGKILL": " (memory or CPU limit?)", "SIGXCPU": " (CPU time limit)", "SIGSEGV": " (crashed)",
                "SIGXFSZ": " (file size limit)"}.get(sig, "")
        return f"{KILLED_BY} {sig}{hint}"
    return f"the process exited with status {returncode} before reporting a result"
