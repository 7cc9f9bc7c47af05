"""The sandbox's child process, started by ``sandbox.Sandbox`` (``python -I``, the package loaded from where the
parent has it: ``sandbox.CHILD_BOOT``).

1. read one JSON line of configuration from stdin (then stdin carries only replies to host-tool calls);
2. isolate (``isolation.py``): as root, new namespaces and private tmpfs, then drop to the run's own uid; as an
   ordinary user, a user namespace with mount, network and PID namespaces, the code's process forked as
   process 1 of the new PID namespace, capabilities dropped (``userns.py``); chdir to the workdir;
3. import the sandbox tools and bind them, host-tool proxies and ``final_answer`` into one namespace;
4. apply the resource limits, so they bind the untrusted code and not our imports;
5. replay the chosen steps so far with their output discarded, then run the candidate's code;
6. send the result as one JSON line on the message pipe. Nothing crosses the boundary as pickle.
"""
from __future__ import annotations

import importlib
import io
import json
import math
import os
import sys
import traceback

from sport_fast.sandbox import isolation, own_root, userns

STEP_FILE = "<step>"


class FinalAnswer(BaseException):
    """Raised by ``final_answer``; a BaseException so that ``except Exception`` in the step does not eat it."""


class Channel:
    """JSON lines: requests and the result go out on the message pipe, host-tool replies come in on stdin."""

    def __init__(self, out, replies):
        self.out, self.replies = out, replies

    def send(self, message: dict) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def call(self, name: str, args: list, kwargs: dict):
        self.send({"type": "tool_call", "name": name, "args": args, "kwargs": kwargs})
        reply = json.loads(self.replies.readline() or '{"ok": false, "error": "no reply from the host"}')
        if not reply.get("ok"):
            raise RuntimeError(f"{name}: {reply.get('error')}")
        return reply["result"]


def main() -> None:
    replies = os.fdopen(os.dup(0), "r")
    config = json.loads(replies.readline())
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.stdout.reconfigure(line_buffering=True)  # what was printed before a crash still reaches the parent
    sys.stderr.reconfigure(line_buffering=True)
    channel = Channel(os.fdopen(config["msg_fd"], "w"), replies)
    try:
        _isolate(config, channel)
        namespace, calls = _namespace(config, channel)
        limits = config["limits"]
        isolation.apply_limits(limits["memory_mb"], limits["cpu_s"], limits["processes"], limits["open_files"],
                               limits["file_mb"])
    except Exception as err:  # noqa: BLE001 - any failure here means the run cannot be contained
        channel.send({"type": "setup_error", "error": f"{type(err).__name__}: {err}"})
        os._exit(3)
    result = _run(config["prelude"], config["code"], namespace)
    result["tool_calls"] = calls
    sys.stdout.flush()
    channel.send({"type": "result", **result})


def _isolate(config: dict, channel: Channel) -> None:
    """Returns in the process that runs the code, isolated as the config's ``mode`` says."""
    layers, workdir = config["layers"], config["workdir"]
    if config["mode"] == "userns":
        userns.enter()
        pid, namespace = userns.fork_pid_one(lambda: own_root.build(workdir, config["readable"]), own_root.enter)
        if pid:  # this process only tells the parent who runs the code, and ends as that one ends
            channel.send({"type": "pid_one", "pid": pid, "namespace": namespace})
            userns.exit_like(os.waitpid(pid, 0)[1])
        userns.drop_capabilities()
    else:
        isolation.enter_namespaces(workdir, network=layers["network_namespace"], mounts=layers["private_tmp"],
                                   readable=config["readable"], hidden=config["hidden"])
        if layers["separate_uid"]:
            isolation.drop_privileges(config["uid"])
    os.chdir(workdir)


def _namespace(config: dict, channel: Channel) -> tuple[dict, list]:
    calls: list[dict] = []
    namespace = {"__name__": "__main__", "__builtins__": __builtins__, "final_answer": _final_answer}
    for spec in config["sandbox_tools"]:
        fn = getattr(importlib.import_module(spec["module"]), spec["attr"])
        namespace[spec["name"]] = _recorded(spec["name"], fn, calls)
    for name in config["host_tools"]:
        namespace[name] = _recorded(name, _host_proxy(channel, name), calls)
    return namespace, calls


def _recorded(name: str, fn, calls: list):
    """``fn`` that logs each call and insists on a JSON-serialisable result."""
    def tool(*args, **kwargs):
        entry = {"name": name, "ok": False}
        calls.append(entry)
        result = fn(*args, **kwargs)
        json.dumps(result, allow_nan=False)  # a tool result must cross any boundary as JSON
        entry["ok"] = True
        return result
    tool.__name__ = name
    tool.__doc__ = fn.__doc__
    return tool


def _host_proxy(channel: Channel, name: str):
    def call(*args, **kwargs):
        return channel.call(name, list(args), kwargs)
    return call


def _final_answer(answer=None):
    raise FinalAnswer(answer)


def _run(prelude: list[str], code: str, namespace: dict) -> dict:
    """Replay ``prelude`` silently, then run ``code`` with its output going to the real stdout."""
    prelude_errors = []
    real_stdout, real_stderr = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = io.StringIO()
    for i, step in enumerate(prelude):
        error, _ = _exec(step, namespace)
        if error is not None:
            prelude_errors.append({"step": i, "error": error})
        sys.stdout.seek(0), sys.stdout.truncate()  # keep replay output from growing without bound
    sys.stdout, sys.stderr = real_stdout, real_stderr
    error, final = _exec(code, namespace)
    return {"error": error, "has_final_answer": final is not None, "final_answer": final and final[0],
            "prelude_errors": prelude_errors}


def _exec(code: str, namespace: dict) -> tuple[str | None, tuple | None]:
    """(error text or None, (final answer,) or None) of running ``code`` in ``namespace``."""
    try:
        exec(compile(code, STEP_FILE, "exec"), namespace)
    except FinalAnswer as done:
        return None, (_json_safe(done.args[0] if done.args else None),)
    except SyntaxError as err:
        return f"SyntaxError: {err.msg} (line {err.lineno})", None
    except BaseException as err:  # noqa: BLE001 - the step's own failure is its observation
        return _format_error(err), None
    return None, None


def _format_error(err: BaseException) -> str:
    """The traceback restricted to the step's own frames, then the exception line."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == STEP_FILE]
    lines = [f"  line {f.lineno}" for f in frames]
    head = ["Traceback (step lines): " + ", ".join(x.strip() for x in lines)] if lines else []
    return "\n".join(head + traceback.format_exception_only(type(err), err)).strip()


def _json_safe(value):
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return repr(value)


if __name__ == "__main__":
    main()
