"""Build and install mat_kernels.

The compiled CUDA extension ``mat_kernels._C`` (sources in ``csrc/``) is built only when a CUDA
build of torch and a CUDA toolkit are present. ``MAT_KERNELS_BUILD_CUDA=1`` forces the build
(and fails loudly if it cannot), ``MAT_KERNELS_BUILD_CUDA=0`` skips it. ``TORCH_CUDA_ARCH_LIST``
is respected; the default covers sm_80 and sm_90.

Install after torch with ``pip install --no-build-isolation .`` so that pip does not fetch a
second, CUDA-enabled torch into an isolated build environment.
"""
import glob
import os

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _cuda_extension():
    flag = os.environ.get("MAT_KERNELS_BUILD_CUDA", "auto").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError as exc:
        if flag in ("1", "true", "yes", "on"):
            raise RuntimeError(f"MAT_KERNELS_BUILD_CUDA=1 but torch cannot be imported: {exc}")
        return [], {}
    reasons = []
    if torch.version.cuda is None:
        reasons.append("torch is a CPU-only build")
    if CUDA_HOME is None:
        reasons.append("no CUDA toolkit found (set CUDA_HOME)")
    if reasons:
        if flag in ("1", "true", "yes", "on"):
            raise RuntimeError("MAT_KERNELS_BUILD_CUDA=1 but the CUDA extension cannot be built: " + "; ".join(reasons))
        print("mat_kernels: skipping the CUDA extension: " + "; ".join(reasons))
        return [], {}
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "*.cu")))
    if not sources:
        return [], {}
    # No -std flag: torch's BuildExtension adds the standard its headers need (C++20 for torch
    # 2.13, C++17 for older releases); the .cu files include no torch header and build with either.
    ext = CUDAExtension(
        name="mat_kernels._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": ["-O3"],
                            "nvcc": ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]},
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _cuda_extension()

setup(
    name="mat_kernels",
    version="0.1.0",
    description="Fused Triton/CUDA kernels and a faithful PyTorch implementation of MAT "
                "(Mask-Aware Transformer for large-hole image inpainting)",
    long_description=open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mat_kernels", "mat_kernels.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.4",
        "triton>=3.0; platform_system == 'Linux'",
        "numpy",
        "pillow",
        "safetensors",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        # FID / P-IDS / U-IDS need scipy (matrix square root) and scikit-learn (linear SVM).
        "metrics": ["scipy", "scikit-learn"],
        "test": ["pytest", "pytest-benchmark", "hypothesis", "scipy", "scikit-learn", "scikit-image"],
        # mat-iopaint: IOPaint (Sanster/IOPaint) with this package's MAT generator. IOPaint pins
        # huggingface_hub==0.25.2, which transformers >= 4.46 refuses: without the cap pip
        # backtracks through every newer transformers release.
        "iopaint": ["iopaint==1.6.0", "transformers>=4.39.1,<4.46"],
    },
    entry_points={
        "console_scripts": [
            "mat-bench=mat_kernels.cli.bench:main",
            "mat-info=mat_kernels.cli.info:main",
            "mat-inpaint=mat_kernels.cli.inpaint:main",
            "mat-iopaint=mat_kernels.cli.iopaint:main",
            "mat-train=mat_kernels.cli.train:main",
        ],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    include_package_data=True,
)
