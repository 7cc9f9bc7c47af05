"""Every lm-head kernel variant compiles for sm_80 and sm_90 at its default tiles, with no GPU.

For each (kernel, dtype, flags) the launchers can start, and each config of the opt-in autotune set:
it compiles; bf16 tiles lower to wgmma on sm_90
and to mma.sync on sm_80 (no wgmma there, no mma.sync fallback on sm_90); shared memory fits the
architecture; ptxas -v reports no spills; and every row stride is widened to int64 before it multiplies
a row index (row * stride passes 2**31 once V * H does). Each compile uses a fresh cache directory.
"""
from __future__ import annotations

import re

import pytest

triton = pytest.importorskip("triton", reason="triton is not installed: nothing to compile")

from compile_variants import autotune_variants, compile_all, variants  # tests/kernels is on sys.path

from sport_fast.kernels.linear_logprobs_tiles import SHARED_LIMIT

ARCHS = (80, 90)
CASES = [(arch, v, w, s) for arch in ARCHS for v, w, s in variants(arch) + autotune_variants(arch)]


@pytest.fixture(scope="module")
def compiled():
    """Every variant compiled once for every target (in worker processes, two at a time)."""
    return compile_all(ARCHS)


def _ids(cases):
    return [f"sm{arch}-{v.name}" for arch, v, _, _ in cases]


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_compiles_without_spills_within_shared_memory(compiled, case):
    arch, variant, warps, stages = case
    c = compiled[(arch, variant.name)]
    assert c.registers > 0, f"sm_{arch} {variant.name}: no ptxas register report in:\n{c.ptxas_log}"
    assert c.spill_bytes == 0, (f"sm_{arch} {variant.name} (warps={warps}, stages={stages}): ptxas spills "
                                f"{c.spill_bytes} bytes at {c.registers} registers:\n{c.ptxas_log}")
    assert c.shared <= SHARED_LIMIT[arch], (f"sm_{arch} {variant.name}: {c.shared} bytes of shared memory, "
                                            f"limit {SHARED_LIMIT[arch]}")


TENSOR_CORE_CASES = [c for c in CASES if c[1].dtype == "bf16"]  # every bf16 kernel multiplies tiles


@pytest.mark.parametrize("case", TENSOR_CORE_CASES, ids=_ids(TENSOR_CORE_CASES))
def test_bf16_products_use_the_architectures_tensor_core_instruction(compiled, case):
    arch, variant, _, _ = case
    ptx = compiled[(arch, variant.name)].ptx
    wgmma, mma = "wgmma.mma_async" in ptx, "mma.sync" in ptx
    if arch >= 90:
        assert wgmma and not mma, f"sm_90 {variant.name}: wgmma={wgmma}, mma.sync={mma} (want wgmma only)"
    else:
        assert mma and not wgmma, f"sm_80 {variant.name}: mma.sync={mma}, wgmma={wgmma} (want mma.sync)"


def test_fp32_products_stay_exact(compiled):
    """fp32 inputs multiply in IEEE fp32: no TF32 tensor-core instruction anywhere."""
    for arch, variant, _, _ in CASES:
        ptx = compiled[(arch, variant.name)].ptx
        if variant.dtype == "fp32":
            assert "mma" not in ptx and ".tf32" not in ptx, f"sm_{arch} {variant.name}: tensor-core op in fp32"
    assert any(v.dtype == "fp32" for _, v, _, _ in CASES), "no fp32 variant was checked"


@pytest.mark.parametrize("case", [c for c in CASES if c[0] == 90], ids=_ids([c for c in CASES if c[0] == 90]))
def test_row_strides_are_widened_to_int64_before_use(compiled, case):
    arch, variant, _, _ = case
    ttir = compiled[(arch, variant.name)].ttir
    strides = [n for n in variant.kernel.arg_names if n.startswith("stride_")]
    assert strides, f"{variant.name}: no stride arguments to check"
    body = [line.strip() for line in ttir.splitlines() if "tt.func" not in line]  # past the signature
    used = {name: [line for line in body if re.search(rf"%{name}\b", line)] for name in strides}
    for name, uses in used.items():  # a stride of a gradient the variant skips is never used: nothing to check
        narrow = [u for u in uses if not re.search(rf"= arith\.extsi %{name} : i32 to i64", u)]
        assert not narrow, f"{variant.name}: {name} used as i32 (row * stride can overflow): {narrow[:2]}"
    assert {"stride_h", "stride_w"} & {n for n, u in used.items() if u} or used.get("stride_part"), \
        f"{variant.name}: none of the input strides appears in the TTIR; the check would be vacuous"
