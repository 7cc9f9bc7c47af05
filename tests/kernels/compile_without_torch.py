"""Compile every lm-head kernel variant with whichever triton runs this script, torch not needed.

Not collected by pytest: run it with another Triton than CI's, e.g. the GPU image's 3.6.0 from a
scratch venv (``python3 -m venv /tmp/tri36 && /tmp/tri36/bin/pip install triton==3.6.0 numpy``):
    /tmp/tri36/bin/python tests/kernels/compile_without_torch.py 80 90
It applies the compile test's checks (no spills, shared memory within the limit, wgmma on sm_90 and
mma.sync on sm_80 for bf16) and exits non-zero if any variant fails them. The kernel modules touch torch
only inside host functions, so an empty stand-in module lets them import.
"""
import os
import sys
import types

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _import_kernels_without_torch():
    sys.modules.setdefault("torch", types.ModuleType("torch"))
    for name, path in (("sport_fast", "sport_fast"), ("sport_fast.kernels", "kernels")):
        package = types.ModuleType(name)  # skips the packages' __init__, which need torch
        package.__path__ = [os.path.join(REPO, path)]
        sys.modules[name] = package
    sys.path.insert(0, os.path.join(REPO, "tests", "kernels"))


def _check(arch, variant, warps, stages) -> str | None:
    from compile_variants import compile_variant

    from sport_fast.kernels.linear_logprobs_tiles import SHARED_LIMIT
    try:
        c = compile_variant(variant, warps, stages, arch)
    except Exception as e:  # noqa: BLE001  (report every failing variant, not just the first)
        return f"does not compile: {type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}"
    tensor_core = ("wgmma.mma_async" if arch >= 90 else "mma.sync") in c.ptx
    problems = [f"{c.spill_bytes} bytes spilled" * (c.spill_bytes > 0),
                f"{c.shared} bytes shared" * (c.shared > SHARED_LIMIT[arch]),
                "no tensor-core instruction" * (variant.dtype == "bf16" and not tensor_core)]
    return "; ".join(p for p in problems if p) or None


def main(archs) -> int:
    _import_kernels_without_torch()
    import triton
    from compile_variants import autotune_variants, variants
    print(f"triton {triton.__version__}")
    failures = 0
    for arch in archs:
        for variant, warps, stages in variants(arch) + autotune_variants(arch):
            problem = _check(arch, variant, warps, stages)
            failures += problem is not None
            print(f"sm_{arch} {variant.name:50s} {problem or 'ok'}", flush=True)
    print(f"{failures} variant(s) failed")
    return int(failures > 0)


if __name__ == "__main__":
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    os.environ["TRITON_INTERPRET"] = "0"
    sys.exit(main([int(a) for a in sys.argv[1:]] or [80, 90]))
