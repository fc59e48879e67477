"""The fused kernel's CUDA source compiled for the CPU with g++ (shared by the emulation tests), and
a stand-in ``cupy`` module that launches it (:class:`FakeCupy`: the launch tests, and the dry run of
``run_gpu_checks.sh`` through ``tests/standin_gpu``).

The source's host fallback (``#ifndef __CUDA_ARCH__``: plain float32 ``+ - * < <=`` instead of
the inline PTX) is compiled behind a small shim: CUDA qualifiers defined away, float16 via GCC's
``_Float16`` instead of the PTX ``cvt`` instructions, and one extern "C" wrapper per kernel
variant that runs a launch's grid of blocks of threads in a host loop (every thread, also those
past ``n``, so the kernel's own bounds check is exercised).
"""

import ctypes
import re
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
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
        import pytest

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


_C_TYPES = {"long long": np.int64, "int": np.int32, "float": np.float32}


def kernel_signature(source: str, kernel: str = "sjconv_neuron"):
    """numpy scalar type of each parameter of ``kernel`` (a template name of the source), in order
    (pointers: uint64, as CuPy takes them)."""
    params = re.search(r"void " + re.escape(kernel) + r"\((.*?)\)\s*\{", source, re.S).group(1)
    types = []
    for param in params.split(","):
        words = param.replace("__restrict__", "").replace("const", "").split()
        if "*" in param:
            types.append(np.uint64)
        else:
            types.append(_C_TYPES[" ".join(words[:-1])])
    return types


_FORMAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


class FakeCupy:
    """Just enough of CuPy for ``cupy_backend``: Device contexts, streams, RawModule/RawKernel."""

    __version__ = "14.2.0 (stand-in)"

    def __init__(self, lib, streams):
        self.lib, self.streams = lib, streams
        self.device_stack = []
        self.compiled, self.resolved, self.launches = [], [], []
        fake = self

        class Device:
            def __init__(self, index):
                self.index = index

            def __enter__(self):
                fake.device_stack.append(self.index)

            def __exit__(self, *exc):
                fake.device_stack.pop()

        class Stream:
            def __init__(self, ptr):
                self.ptr = ptr

            @staticmethod
            def from_external(obj):
                kind, ptr = obj.__cuda_stream__()
                assert kind == 0
                return Stream(ptr)

        self.cuda = SimpleNamespace(Device=Device, Stream=Stream,   # and what versions() and check_environment read
                                    runtime=SimpleNamespace(runtimeGetVersion=lambda: 13000,
                                                            driverGetVersion=lambda: 13000),
                                    nvrtc=SimpleNamespace(getVersion=lambda: (13, 0)))
        self.RawModule = lambda **kw: FakeModule(fake, **kw)

    @property
    def device(self):
        return self.device_stack[-1] if self.device_stack else None


class FakeModule:
    def __init__(self, fake, code, options, name_expressions):
        self.fake, self.code, self.names = fake, code, list(name_expressions)
        self.device = None
        assert options == cb.MODULE_OPTIONS

    def compile(self):
        assert self.fake.device is not None, "compiled outside a Device context"
        self.device = self.fake.device
        self.fake.compiled.append((self.device, self.names[0].split("<")[1].split(",")[0]))

    def get_function(self, name):
        assert name in self.names
        assert self.fake.device == self.device, "kernel resolved outside its module's device"
        self.fake.resolved.append((self.device, name))
        return FakeKernel(self.fake, name, self.device, kernel_signature(self.code, name.split("<")[0]))


class FakeKernel:
    def __init__(self, fake, name, device, signature):
        self.fake, self.name, self.device, self.signature = fake, name, device, signature
        fmt, *flags = (w.strip() for w in name[name.index("<") + 1:-1].split(","))
        self.dtype, self.flags = _FORMAT_DTYPES[fmt], [f == "true" for f in flags]

    def __call__(self, grid, block, args, stream=None, shared_mem=0):
        fake = self.fake
        assert fake.device == self.device, f"launched on device {fake.device}, kernel of device {self.device}"
        assert stream is not None and stream.ptr == fake.streams[self.device], "not torch's current stream"
        assert len(args) == len(self.signature)
        for i, (arg, want) in enumerate(zip(args, self.signature)):
            assert type(arg) is want, f"argument {i}: {type(arg).__name__}, the kernel takes {want.__name__}"
        n = int(args[5])
        assert len(grid) == 1 and len(block) == 1 and grid[0] * block[0] >= n > (grid[0] - 1) * block[0]
        fake.launches.append((self.device, self.name, grid, block))
        if self.name.startswith("sjconv_group_neuron<"):   # (q, levels): host_kernel.call takes θ = q·m (exact)
            q, levels = float(args[9]), int(args[10])
            call(fake.lib, self.dtype, *self.flags, args[:5], *args[5:9], q * levels, grid[0], block[0], levels)
        else:
            call(fake.lib, self.dtype, *self.flags, args[:5], *args[5:], grid[0], block[0])
