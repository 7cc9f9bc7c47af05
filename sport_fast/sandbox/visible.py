"""What a run sees of the masked trees (the world-writable directories and the homes): only what it needs,
bound back read-only wherever it lives (a checkout under /tmp or a home, a path with a space, an editable or
a wheel install, a virtual environment anywhere), and nothing else of them."""
from __future__ import annotations

import importlib.util
import os
import pwd
import site
import sys
import sysconfig

from sport_fast.sandbox import isolation
from sport_fast.sandbox.layers import PACKAGE


def readable_paths(tools=None) -> list[str]:
    """The interpreter (prefixes, standard library, site-packages), this package, and the packages of the
    tools that run in the sandbox, as real paths."""
    paths = {sys.base_prefix, sys.prefix, PACKAGE, *site.getsitepackages(), site.getusersitepackages()}
    paths |= {v for k, v in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= {p for p in sys.path if p and os.path.isdir(p) and not _is_checkout_root(p) and not _unmasks(p)}
    for spec in (tools.sandbox_specs() if tools is not None else []):
        paths.add(_package_dir(spec["module"]))
    return sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)})


def hidden_paths() -> list[str]:
    """The homes to mask: /root, /home, and this user's own home wherever it is."""
    home = pwd.getpwuid(os.getuid()).pw_dir
    return sorted({*isolation.HIDDEN, os.path.realpath(home)} - {"/"})


def _package_dir(module: str) -> str:
    """The folder of ``module``'s top-level package (or of the module itself)."""
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None:
        raise ValueError(f"sandbox tool module {module} cannot be found")
    if spec.submodule_search_locations:
        return next(iter(spec.submodule_search_locations))
    return os.path.dirname(spec.origin)


def _unmasks(path: str) -> bool:
    """A masked tree itself, or a folder above one (a script run from /tmp or a home puts it on sys.path):
    binding it back would show that whole tree, and nothing the tools import lives at its top."""
    real = os.path.realpath(path)
    tops = [os.path.realpath(t) for t in (*isolation.WORLD_WRITABLE, *hidden_paths())]
    return any(t == real or t.startswith(real.rstrip("/") + "/") for t in tops)


def _is_checkout_root(path: str) -> bool:
    """The folder holding the package (a checkout on sys.path): binding it would show the whole checkout."""
    return os.path.realpath(path) == os.path.dirname(PACKAGE)
