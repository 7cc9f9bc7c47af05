"""The sandbox's isolation self-test: which layers this machine gives it (probed once per process, in a
throwaway child that sets up exactly what a run does), why a missing one is missing, and the one command that
starts a child with the package the parent itself imported, wherever it lives.

Modes: ``root`` (a uid of the run's own: ``separate_uid``), ``userns`` (an ordinary user: user, PID, mount and
network namespaces, read-only file system), ``weak`` (neither: only rlimits; refused unless opted into).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sport_fast.sandbox import isolation

PACKAGE = str(Path(__file__).resolve().parents[1])   # the sport_fast package this process runs
REQUIRED = {"root": ("separate_uid", "network_namespace", "private_tmp", "rlimits"),
            "userns": ("user_namespace", "pid_namespace", "network_namespace", "own_root", "rlimits")}
REQUIRED_LAYERS = REQUIRED["root"]
# the child imports the package from where the parent has it (a checkout, an editable or a wheel install):
# ``python -I`` ignores PYTHONPATH, and sys.path may not lead there
CHILD_BOOT = ("import importlib.util as u, sys; p = sys.argv[1]; "
              "s = u.spec_from_file_location('sport_fast', p + '/__init__.py', submodule_search_locations=[p]); "
              "m = u.module_from_spec(s); sys.modules['sport_fast'] = m; s.loader.exec_module(m); "
              "import importlib; importlib.import_module(sys.argv[2]).main(*sys.argv[3:])")
_LAYERS: dict | None = None


def child_command(module: str, *args: str) -> list[str]:
    """``python -I`` running ``module.main(*args)`` of this very package."""
    return [sys.executable, "-I", "-c", CHILD_BOOT, PACKAGE, module, *args]


def available_layers() -> dict:
    """Which isolation layers work on this machine, ``mode``, and ``problem`` (why not, and the fix)."""
    global _LAYERS
    if _LAYERS is None:
        _LAYERS = _probe_layers()
    return dict(_LAYERS)


def required_layers(layers: dict) -> tuple[str, ...]:
    """What a run must have in this mode (a weak machine is held to what an ordinary user could have)."""
    return REQUIRED.get(layers.get("mode", "root"), REQUIRED["userns"])


def missing_layers(layers: dict) -> list[str]:
    return [name for name in required_layers(layers) if not layers.get(name)]


def _probe_layers() -> dict:
    names = {n: False for mode in REQUIRED.values() for n in mode}
    if sys.platform != "linux":
        return {**names, "rlimits": True, "mode": "weak", "problem": "the sandbox's isolation needs Linux"}
    mode = "root" if isolation.is_root() else "userns"
    # the parent makes and removes the scratch directory: inside the child's mount namespace it is a bind
    # mount, which the child cannot remove, so a probe that cleaned up after itself left one per process
    with tempfile.TemporaryDirectory(prefix="sport_fast_probe-", ignore_cleanup_errors=True) as workdir:
        done = subprocess.run(child_command("sport_fast.sandbox.layers", mode, workdir), cwd="/",
                              capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return {**names, "rlimits": True, "separate_uid": mode == "root", "mode": "weak",
                "problem": _explain(mode, (done.stderr.strip().splitlines() or ["no output"])[-1])}
    got = {n: True for n in REQUIRED[mode]}
    return {**names, **got, "mode": mode, "problem": None}


def main(mode: str, workdir: str) -> None:
    """In the probe child: set up what a run of ``mode`` sets up, around the scratch working directory
    ``workdir`` (the parent's, which it removes); exit 0 if it all works."""
    if mode == "root":
        isolation.enter_namespaces(workdir, network=True, mounts=True, readable=[], hidden=list(isolation.HIDDEN))
        return
    from sport_fast.sandbox import own_root, userns
    userns.enter()
    pid, _ = userns.fork_pid_one(lambda: own_root.build(workdir, [PACKAGE]), own_root.enter)
    if pid:
        userns.exit_like(os.waitpid(pid, 0)[1])
    userns.drop_capabilities()


def _explain(mode: str, error: str) -> str:
    """The probe's failure as one line: what the kernel refused and how to allow it."""
    if mode == "root":
        return f"as root, new mount and network namespaces failed ({error}): is this a container without CAP_SYS_ADMIN?"
    if "unshare" in error and ("Operation not permitted" in error or "Permission denied" in error):
        fix = ("unprivileged user namespaces are off: enable them with `sysctl -w kernel.unprivileged_userns_clone=1` "
               "(Debian, older Ubuntu) or `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (Ubuntu 23.10+), "
               "or run as root")
    elif "No space left" in error:
        fix = "user namespaces are capped at 0: `sysctl -w user.max_user_namespaces=15000`"
    elif "pivot_root" in error or "tmpfs" in error or "bind" in error:
        fix = "the kernel refused to build the sandbox's own root file system in a user namespace"
    else:
        fix = "the kernel refused a step of the unprivileged sandbox"
    return f"{fix} [{error}]"


def describe_layers() -> str:
    """One line for start-up logs: the mode, which layers this machine gives the sandbox, and why not."""
    layers = available_layers()
    shown = ", ".join(f"{k} {'yes' if layers.get(k) else 'NO'}" for k in required_layers(layers))
    tail = f" ({layers['problem']})" if layers.get("problem") else ""
    return f"sandbox isolation ({layers.get('mode', 'root')}): {shown}{tail}"


def self_test(sandbox) -> str:
    """Run what a real run needs (the tools imported and bound inside the isolated child) and say so in one
    line; a broken set-up raises ``RuntimeError`` naming what failed, before any real run."""
    tools = sandbox.tools
    names = [t["name"] for t in tools.sandbox_specs()] + tools.host_names() if tools is not None else []
    result = sandbox.run(f"missing = [n for n in {names!r} if n not in globals()]\nprint(len({names!r}), missing)")
    if not result.ok or result.stdout.split()[:1] != [str(len(names))] or "[]" not in result.stdout:
        raise RuntimeError(f"sandbox self-test failed: {result.error or result.stdout.strip()}")
    return f"{describe_layers()}; self-test: {len(names)} tools imported in the isolated child"


if __name__ == "__main__":
    main(*sys.argv[1:])
