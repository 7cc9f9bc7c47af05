"""Every kernel variant the launchers can start, compiled for a GPU target with no GPU, and what ptxas said.

``variants(arch)`` lists every kernel and flag combination at the default tiles of
``linear_logprobs_tiles`` for bf16 and fp32 inputs, ``autotune_variants(arch)`` the opt-in autotune set;
``compile_variant`` compiles one with ``triton.compile`` (a fresh cache, nothing reused) and returns the
facts the compile test asserts on.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import os
import re
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import triton
from triton.backends.compiler import GPUTarget

from sport_fast.kernels import linear_logprobs_atomic as atomic
from sport_fast.kernels import linear_logprobs_chunked as chunked
from sport_fast.kernels import linear_logprobs_triton as tk
from sport_fast.kernels.linear_logprobs_tiles import AUTOTUNE_EXTRA, MERGE_TILES, TILES

DTYPES = {"bf16": "16bit", "fp32": "fp32"}
# pointer arguments -> "x" (the input dtype), or a fixed type; every other runtime argument is an i32
POINTERS = {
    "_forward_partials_kernel": {"h_ptr": "x", "w_ptr": "x", "t_ptr": "i64", "lse_part_ptr": "fp32",
                                 "tgt_part_ptr": "fp32"},
    "_merge_partials_kernel": {"lse_part_ptr": "fp32", "tgt_part_ptr": "fp32", "logp_ptr": "fp32",
                               "lse_ptr": "fp32"},
    "_dlogits_kernel": {"h_ptr": "x", "w_ptr": "x", "t_ptr": "i64", "lse_ptr": "fp32", "g_ptr": "fp32",
                        "dl_ptr": "x"},
    "_d_hidden_kernel": {"dl_ptr": "x", "w_ptr": "x", "dh_ptr": "x"},
    "_d_weight_kernel": {"dl_ptr": "x", "h_ptr": "x", "acc_ptr": "acc", "dw_ptr": "out"},
    "_atomic_backward_kernel": {"h_ptr": "x", "w_ptr": "x", "t_ptr": "i64", "lse_ptr": "fp32", "g_ptr": "fp32",
                                "dh_ptr": "fp32", "dw_ptr": "fp32"},
}
# runtime integers that are multiples of 16 in every real launch (Triton specializes them the same way)
ALIGNED_INTS = ("H", "stride_h", "stride_w", "stride_dl", "stride_dh", "stride_dw")


@dataclass
class Variant:
    name: str
    kernel: object
    dtype: str
    constexprs: dict
    out: str = "x"  # d_weight's store dtype
    acc: str = "fp32"  # d_weight's accumulator: fp32 across chunks, else d_weight itself

    def signature(self) -> dict:
        pointers = POINTERS[self.kernel.__name__]
        sig = {}
        params = inspect.signature(self.kernel.fn).parameters.values()  # jit or interpreted: .fn is the function
        for name, param in zip(self.kernel.arg_names, params):
            if "constexpr" in str(param.annotation):
                sig[name] = "constexpr"
            elif name in pointers:
                kind = {"x": self.dtype, "out": self.out, "acc": self.acc}.get(pointers[name], pointers[name])
                sig[name] = "*" + kind
            else:
                sig[name] = "i32"
        return sig

    def attrs(self) -> dict:
        names = self.kernel.arg_names
        aligned = [i for i, n in enumerate(names) if n in POINTERS[self.kernel.__name__] or n in ALIGNED_INTS]
        return {(i,): [["tt.divisibility", 16]] for i in aligned}


def _tiles(arch, dtype, kernel):
    cfg = TILES[arch][DTYPES[dtype]][kernel]
    return {k: cfg[k] for k in ("BLOCK_N", "BLOCK_V", "BLOCK_H")}, cfg["num_warps"], cfg["num_stages"]


def variants(arch: int) -> list[tuple[Variant, int, int]]:
    """(variant, num_warps, num_stages) for every kernel and flag combination the launchers use."""
    out = []
    for dtype in DTYPES:
        flags = {"IEEE": dtype == "fp32", "UPCAST": False}
        tmas = (False, True) if arch >= 90 else (False,)
        for tma in tmas:
            for kernel, fn in (("forward", tk._forward_partials_kernel), ("dlogits", chunked._dlogits_kernel)):
                blocks, w, s = _tiles(arch, dtype, kernel)
                out.append((Variant(f"{kernel}[{dtype},tma={tma}]", fn, dtype, {**blocks, **flags, "TMA": tma}), w, s))
            blocks, w, s = _tiles(arch, dtype, "atomic")
            needs = ((True, True), (True, False), (False, True)) if not tma else ((True, True),)
            for dh, dw in needs:
                c = {**blocks, **flags, "TMA": tma, "NEED_DH": dh, "NEED_DW": dw}
                out.append((Variant(f"atomic[{dtype},tma={tma},dh={dh},dw={dw}]", atomic._atomic_backward_kernel,
                                    dtype, c), w, s))
        blocks, w, s = _tiles(arch, dtype, "d_hidden")
        out.append((Variant(f"d_hidden[{dtype}]", chunked._d_hidden_kernel, dtype, {**blocks, **flags}), w, s))
        blocks, w, s = _tiles(arch, dtype, "d_weight")
        for accumulate in (False, True):  # first chunk / later chunks
            for store in sorted({dtype, "fp32"}):  # the fp32 accumulator / the last chunk's d_weight
                c = {**blocks, **flags, "ACCUMULATE": accumulate}
                acc = "fp32" if accumulate else store  # not accumulating, the launcher passes d_weight twice
                out.append((Variant(f"d_weight[{dtype},acc={accumulate},out={store}]", chunked._d_weight_kernel,
                                    dtype, c, out=store, acc=acc), w, s))
    c = {k: MERGE_TILES[k] for k in ("BLOCK_N", "BLOCK_S")}
    out.append((Variant("merge", tk._merge_partials_kernel, "fp32", c), MERGE_TILES["num_warps"],
                MERGE_TILES["num_stages"]))
    return out


AUTOTUNED = {"forward": (tk._forward_partials_kernel, {"TMA": False}),
             "dlogits": (chunked._dlogits_kernel, {"TMA": False}),
             "d_hidden": (chunked._d_hidden_kernel, {}),
             "d_weight": (chunked._d_weight_kernel, {"ACCUMULATE": True}),
             "atomic": (atomic._atomic_backward_kernel, {"TMA": False, "NEED_DH": True, "NEED_DW": True})}


def autotune_variants(arch: int) -> list[tuple[Variant, int, int]]:
    """The opt-in autotune set beyond the defaults, bf16, at each kernel's heaviest flags."""
    out = []
    for kernel, configs in AUTOTUNE_EXTRA[arch].items():
        fn, flags = AUTOTUNED[kernel]
        for c in configs:
            blocks = {k: c[k] for k in ("BLOCK_N", "BLOCK_V", "BLOCK_H")}
            tag = "x".join(str(b) for b in blocks.values())
            name = f"autotune:{kernel}[{tag},w{c['num_warps']},s{c['num_stages']}]"
            v = Variant(name, fn, "bf16", {**blocks, "IEEE": False, "UPCAST": False, **flags}, out="fp32")
            out.append((v, c["num_warps"], c["num_stages"]))
    return out


@dataclass
class Compiled:
    ptx: str
    ttir: str
    shared: int
    registers: int
    spill_bytes: int
    ptxas_log: str


def compile_all(archs) -> dict:
    """{(arch, variant name): Compiled} for every variant, two compiles at a time in fresh processes.

    The workers import the kernels with TRITON_INTERPRET=0, whatever the caller runs under: an
    interpreted kernel cannot be compiled.
    """
    cases = [(arch, v.name) for arch in archs for v, _, _ in variants(arch) + autotune_variants(arch)]
    env = {"TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": os.environ.get("TRITON_DEFAULT_FP_FUSION", "1")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # spawned workers inherit the environment at start
    try:
        with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1), mp_context=get_context("spawn")) as pool:
            return dict(zip(cases, pool.map(_compile_case, cases)))
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _compile_case(case) -> Compiled:
    arch, name = case
    variant, warps, stages = next(c for c in variants(arch) + autotune_variants(arch) if c[0].name == name)
    return compile_variant(variant, warps, stages, arch)


def compile_variant(variant: Variant, num_warps: int, num_stages: int, arch: int) -> Compiled:
    """Compile for sm_{arch} in a fresh cache directory, with ptxas's -v log captured."""
    with tempfile.TemporaryDirectory() as cache, triton.knobs.cache.scope(), triton.knobs.compilation.scope(), \
            triton.knobs.nvidia.scope():
        triton.knobs.cache.dir = cache
        triton.knobs.compilation.always_compile = True
        triton.knobs.nvidia.dump_ptxas_log = True
        log = io.StringIO()
        src = triton.compiler.ASTSource(variant.kernel, variant.signature(), variant.constexprs, variant.attrs())
        with contextlib.redirect_stdout(log):
            k = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                               options={"num_warps": num_warps, "num_stages": num_stages})
    text = log.getvalue()
    regs = re.search(r"Used (\d+) registers", text)
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", text)]
    return Compiled(k.asm["ptx"], k.asm["ttir"], k.metadata.shared, int(regs.group(1)) if regs else -1,
                    sum(spills), text)
