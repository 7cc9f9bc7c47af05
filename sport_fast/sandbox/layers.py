"""The sandbox's isolation self-test: which layers this machine gives it, probed once per process."""
from __future__ import annotations

import subprocess
import sys
import tempfile

from sport_fast.sandbox import isolation

REQUIRED_LAYERS = ("separate_uid", "network_namespace", "private_tmp", "rlimits")

_LAYERS: dict[str, bool] | None = None


def available_layers() -> dict[str, bool]:
    """Which isolation layers work on this machine: probed once per process, in a throwaway child."""
    global _LAYERS
    if _LAYERS is None:
        _LAYERS = _probe_layers()
    return dict(_LAYERS)


def _probe_layers() -> dict[str, bool]:
    layers = {"rlimits": True, "separate_uid": isolation.is_root(), "network_namespace": False, "private_tmp": False}
    if sys.platform != "linux":
        return {**layers, "separate_uid": False}
    probe = ("import ctypes, os, sys; from sport_fast.sandbox import isolation; "
             "isolation.enter_namespaces(os.getcwd(), network=True, mounts=True)")
    done = subprocess.run([sys.executable, "-I", "-c", probe], cwd=tempfile.gettempdir(), capture_output=True,
                          timeout=30)
    if done.returncode == 0:
        layers["network_namespace"] = layers["private_tmp"] = True
    return layers


def describe_layers() -> str:
    """One line for start-up logs: which layers this machine gives the sandbox."""
    layers = available_layers()
    return "sandbox isolation: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in layers.items())
