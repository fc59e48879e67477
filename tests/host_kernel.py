"""The fused kernel's CUDA source compiled for the CPU with g++ (shared by the emulation tests).

The source's host fallback (``#ifndef __CUDA_ARCH__``: plain float32 ``+ - * < <=`` instead of
the inline PTX) is compiled behind a small shim: CUDA qualifiers defined away, float16 via GCC's
``_Float16`` instead of the PTX ``cvt`` instructions, and one extern "C" wrapper per kernel
variant that runs a launch's grid of blocks of threads in a host loop (every thread, also those
past ``n``, so the kernel's own bounds check is exercised).
"""

import ctypes
import shutil
import subprocess

import pytest
import torch

from sjconv.neurons.kernels import cupy_backend as cb

SHIM = r"""
#include <cstring>
#include <cmath>
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
typedef unsigned short u16_;
static inline float sj_h2f(u16_ h) { _Float16 x; std::memcpy(&x, &h, 2); return (float)x; }
static inline u16_ sj_f2h(float f) { _Float16 x = (_Float16)f; u16_ h; std::memcpy(&h, &x, 2); return h; }
static inline float sj_bits2f(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned int sj_f2bits(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
/* what a flush-to-zero unit does to a float32 (tests put it into mutated sources) */
static inline float sj_test_ftz(float f) { return std::fpclassify(f) == FP_SUBNORMAL ? std::copysign(0.0f, f) : f; }
struct Dim3 { unsigned int x; };
static Dim3 blockIdx, threadIdx, blockDim;
"""

FORMATS = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def symbol(dtype, signed, masked, snm, group=False):
    return f"run_{'group_' if group else ''}{FORMATS[dtype]}_{int(signed)}{int(masked)}{int(snm)}"


def _wrappers():
    lines = []
    for dtype, fmt in FORMATS.items():
        for (signed, masked, snm), group in ((f, g) for g in (False, True) for f in cb._flags()):
            name = (cb.group_kernel_name if group else cb.kernel_name)(dtype, signed, masked, snm)
            params, args = ("float q, int levels", "q, levels") if group else ("float theta", "theta")
            lines.append(
                f'extern "C" void {symbol(dtype, signed, masked, snm, group)}(void* x, void* out, void* v, void* c, '
                f"void* m, long long n, int steps, long long xs, long long os, {params}, "
                f"unsigned int grid, unsigned int block) {{\n"
                f"  blockDim.x = block;\n"
                f"  for (unsigned int b = 0; b < grid; ++b) for (unsigned int t = 0; t < block; ++t) {{\n"
                f"    blockIdx.x = b; threadIdx.x = t;\n"
                f"    {name}((const {fmt}::T*)x, ({fmt}::T*)out, (float*)v, (float*)c, "
                f"(const unsigned char*)m, n, steps, xs, os, {args}); }}\n}}")
    return "\n".join(lines)


def compile_for_host(folder, source=None):
    """``source`` (default: the kernel's) behind the shim, compiled with g++ into a library in
    ``folder`` (the test skips without g++)."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("needs g++ to compile the kernel source for the CPU")
    src = folder / "kernel.cpp"
    src.write_text(SHIM + (cb.kernel_source() if source is None else source) + _wrappers())
    lib = folder / "kernel.so"
    proc = subprocess.run([compiler, "-std=c++17", "-O2", "-ffp-contract=off", "-fPIC", "-shared",
                           str(src), "-o", str(lib)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return ctypes.CDLL(str(lib))


def call(lib, dtype, signed, masked, snm, pointers, n, steps, x_step, out_step, theta, grid, block, levels=None):
    """One emulated launch of a variant: the kernel's arguments as Python numbers (group neurons,
    ``levels`` = m: q = θ/m in float32 and m in place of θ, as ``cupy_backend._fused`` passes them)."""
    fn = getattr(lib, symbol(dtype, signed, masked, snm, levels is not None))
    tail = ((ctypes.c_float(float(theta)),) if levels is None
            else (ctypes.c_float(float(theta) / levels), ctypes.c_int(int(levels))))
    fn(*(ctypes.c_void_p(int(p)) for p in pointers), ctypes.c_longlong(int(n)), ctypes.c_int(int(steps)),
       ctypes.c_longlong(int(x_step)), ctypes.c_longlong(int(out_step)), *tail,
       ctypes.c_uint(int(grid)), ctypes.c_uint(int(block)))


def emulate(lib, x_seq, v, count, mask, theta, signed, snm, levels=None, block=256):
    """``cupy_backend._fused`` with the launch run by the host-compiled kernel."""
    launch = cb.prepare(x_seq, v, count, mask, signed)
    p = launch.pointer_args()
    if launch.n and launch.steps:
        call(lib, launch.x.dtype, signed, mask is not None, snm, p[:5], p[5], p[6], p[7], p[8], theta,
             (launch.n + block - 1) // block, block, levels)
    return launch.out, launch.v, (launch.count if signed else None)
