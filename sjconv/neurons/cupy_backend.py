"""Fused CuPy kernels: one launch runs all T steps of a neuron layer (docs/methods.md §2-§4, §12).

Each thread owns one neuron: it loads ``v`` (and the signed count, and the SRP mask) once,
keeps them in registers for all T steps, reads every input once, writes every output once and
stores the final state back, so a later call (the next chunk) continues exactly where this one
stopped. The arithmetic is the float32 sequence of :mod:`sjconv.neurons.rules` (``v += x``;
compare; ``v -= θ·s``; output θ·s rounded to the input dtype), so spikes are bit-identical to the
torch backend.

- dtypes: float32, float16, bfloat16 inputs (arithmetic in float32, output in the input dtype).
  Half formats are converted with PTX ``cvt`` / bit operations, so no CUDA headers are needed and
  the source compiles the same under cupy-cuda12x and cupy-cuda13x.
- layout: works on the tensor's storage as it is when one time step is dense (contiguous or
  channels_last); other layouts are copied to contiguous first.
- stream: launched on torch's current CUDA stream; modules compiled once per device and dtype.
- inference only: inputs that require grad are refused (the kernel has no backward).
- self-checked: the first launch for a device and dtype is preceded by a bit-exact comparison of
  every kernel variant with the rules on probe inputs (:mod:`sjconv.neurons.kernel_check`).
- group neurons (§12): ``sjconv_group_neuron`` takes the unit q (θ/m rounded to float32) and the
  member count m as arguments; member j's threshold is ``j·q`` rounded once to float32, as in the
  rules, and the members are counted up from the lowest (thresholds never decrease with j, so the
  members that fire are always the first k).
"""

import functools

import numpy as np
import torch

from ..errors import BackendUnavailableError, ConfigError
from . import kernel_check
from .launch import prepare

__all__ = ["multi_step", "prepare", "require_cupy", "kernel_name", "group_kernel_name", "check_input",
           "external_stream"]

_SOURCE = r"""
typedef unsigned short u16;

#ifndef SJCONV_HOST_EMULATION   /* tests compile this source for the CPU with their own versions */
__device__ __forceinline__ float sj_h2f(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ u16 sj_f2h(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
#endif

struct F32 { typedef float T;
  static __device__ __forceinline__ float load(const float* p, long long i) { return p[i]; }
  static __device__ __forceinline__ void store(float* p, long long i, float f) { p[i] = f; } };

struct F16 { typedef u16 T;
  static __device__ __forceinline__ float load(const u16* p, long long i) { return sj_h2f(p[i]); }
  static __device__ __forceinline__ void store(u16* p, long long i, float f) { p[i] = sj_f2h(f); } };

struct BF16 { typedef u16 T;
  static __device__ __forceinline__ float load(const u16* p, long long i) {
    return __uint_as_float(((unsigned int)p[i]) << 16); }
  static __device__ __forceinline__ void store(u16* p, long long i, float f) {
    unsigned int u = __float_as_uint(f);                 /* round to nearest even (f is finite) */
    u += 0x7FFFu + ((u >> 16) & 1u);
    p[i] = (u16)(u >> 16); } };

template <typename D, bool SIGNED, bool MASKED, bool SNM>
__global__ void sjconv_neuron(const typename D::T* __restrict__ x, typename D::T* __restrict__ out,
                              float* __restrict__ v, float* __restrict__ count,
                              const unsigned char* __restrict__ mask,
                              const long long n, const int steps, const long long x_step,
                              const long long out_step, const float theta) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float vi = v[i];
  float ci = SIGNED ? count[i] : 0.0f;
  const bool keep = MASKED ? (mask[i] != 0) : true;
  #pragma unroll 4
  for (int t = 0; t < steps; ++t) {
    vi = __fadd_rn(vi, D::load(x, t * x_step + i));
    float s = 0.0f;
    if (vi >= theta) {
      s = 1.0f;
    } else if (SIGNED && ci > 0.0f && (SNM ? (vi <= -theta) : (vi < 0.0f))) {
      s = -1.0f;
    }
    vi = __fsub_rn(vi, __fmul_rn(theta, s));
    if (SIGNED) ci = __fadd_rn(ci, s);
    D::store(out, t * out_step + i, keep ? __fmul_rn(s, theta) : 0.0f);
  }
  v[i] = vi;
  if (SIGNED) count[i] = ci;
}

template <typename D, bool SIGNED, bool MASKED, bool SNM>
__global__ void sjconv_group_neuron(const typename D::T* __restrict__ x, typename D::T* __restrict__ out,
                                    float* __restrict__ v, float* __restrict__ count,
                                    const unsigned char* __restrict__ mask,
                                    const long long n, const int steps, const long long x_step,
                                    const long long out_step, const float q, const int levels) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) { return; }
  float vi = v[i];
  float ci = SIGNED ? count[i] : 0.0f;
  const bool keep = MASKED ? (mask[i] != 0) : true;
  for (int t = 0; t < steps; ++t) {
    vi = __fadd_rn(vi, D::load(x, t * x_step + i));
    int k = 0;                                         /* members j with v >= j·q */
    while (k < levels && vi >= __fmul_rn((float)(k + 1), q)) ++k;
    if (SIGNED && k == 0) {                            /* members j with v below -(j-1)·q (SNM: <= -j·q), c >= j */
      int back = 0;
      while (back < levels && (float)(back + 1) <= ci &&
             (SNM ? (vi <= -__fmul_rn((float)(back + 1), q)) : (vi < -__fmul_rn((float)back, q)))) ++back;
      k = -back;
    }
    const float s = (float)k;
    const float kq = __fmul_rn(s, q);
    vi = __fsub_rn(vi, kq);
    if (SIGNED) ci = __fadd_rn(ci, s);
    D::store(out, t * out_step + i, keep ? kq : 0.0f);
  }
  v[i] = vi;      /* the state, for the next call */
  if (SIGNED) count[i] = ci;
}
"""

_FORMATS = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
_BLOCK = 256


def _flags():
    for signed in (False, True):
        for masked in (False, True):
            for snm in ((False, True) if signed else (False,)):
                yield signed, masked, snm


def _name(fmt, signed, masked, snm, kernel="sjconv_neuron"):
    b = lambda flag: "true" if flag else "false"  # noqa: E731
    return f"{kernel}<{fmt}, {b(signed)}, {b(masked)}, {b(snm)}>"


def group_kernel_name(dtype: torch.dtype, signed: bool, masked: bool, snm: bool) -> str:
    """The group-neuron kernel (§12) of one dtype and flag combination."""
    return _name(_FORMATS[dtype], signed, masked, snm, kernel="sjconv_group_neuron")


def require_cupy():
    try:
        import cupy
    except ImportError:
        raise BackendUnavailableError(
            "backend='cupy' needs CuPy: pip install 'sjconv[cupy13]' for a CUDA 13 torch (torch.version.cuda "
            "13.x, as on PyPI) or 'sjconv[cupy12]' for CUDA 12, or use backend='torch'") from None
    return cupy


@functools.lru_cache(maxsize=None)
def _module(device_index: int, fmt: str):
    """RawModule with every flag combination of one dtype, compiled once per device."""
    cupy = require_cupy()
    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(code=_SOURCE, options=("--std=c++14",),
                                name_expressions=[_name(fmt, *f) for f in _flags()]
                                + [_name(fmt, *f, kernel="sjconv_group_neuron") for f in _flags()])
        module.compile()
    return module


class _StreamHandle:
    """A raw ``cudaStream_t`` behind the CUDA stream protocol (what CuPy 14 accepts)."""

    def __init__(self, ptr: int):
        self.ptr = ptr

    def __cuda_stream__(self):
        return (0, self.ptr)


def external_stream(cupy, ptr: int, device_index: int):
    """A CuPy stream object for torch's stream ``ptr``: ``Stream.from_external`` (CuPy >= 14,
    stream protocol) or ``ExternalStream`` (CuPy 13, deprecated in 14)."""
    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is not None:
        return from_external(_StreamHandle(ptr))
    return cupy.cuda.ExternalStream(ptr, device_index)


def check_input(x_seq: torch.Tensor) -> None:
    if not x_seq.is_cuda:
        raise ConfigError(f"backend='cupy' runs on CUDA tensors, got a tensor on {x_seq.device}: "
                         "move the network and inputs to the GPU or use backend='torch'")
    if x_seq.dtype not in _FORMATS:
        raise ConfigError(f"backend='cupy' supports float32, float16 and bfloat16 inputs, got {x_seq.dtype}")
    if x_seq.requires_grad and torch.is_grad_enabled():
        raise BackendUnavailableError("backend='cupy' is inference-only (no backward): run under torch.no_grad() "
                           "or use backend='torch'")


def kernel_name(dtype: torch.dtype, signed: bool, masked: bool, snm: bool) -> str:
    return _name(_FORMATS[dtype], signed, masked, snm)


def multi_step(x_seq, v, count, mask, theta: float, signed: bool, snm: bool, levels=None):
    """Run all ``x_seq.shape[0]`` steps in one launch; returns ``(out, v, count)``; ``levels``: the
    members of a group neuron (§12; None: the IF kinds).

    ``v``/``count`` are float32 tensors shaped like one step (updated copies are returned, the
    arguments are not modified), ``mask`` a bool tensor or None. The first call for a device and
    dtype runs the kernel self-check (:mod:`sjconv.neurons.kernel_check`) and raises if it fails.
    """
    check_input(x_seq)
    _ensure_verified(x_seq.device, x_seq.dtype)
    return _fused(x_seq, v, count, mask, theta, signed, snm, levels)


def _fused(x_seq, v, count, mask, theta: float, signed: bool, snm: bool, levels=None):
    """:func:`multi_step` without the input checks and the self-check."""
    if levels is not None:
        return _fused_group(x_seq, v, count, mask, theta, signed, snm, levels)
    cupy = require_cupy()
    launch = prepare(x_seq, v, count, mask, signed)
    result = launch.out, launch.v, (launch.count if signed else None)
    if launch.n == 0 or launch.steps == 0:
        return result
    device = launch.x.device
    kernel = _module(device.index, _FORMATS[launch.x.dtype]).get_function(
        kernel_name(launch.x.dtype, signed, mask is not None, snm))
    ptrs = launch.pointer_args()
    args = tuple(np.uint64(p) for p in ptrs[:5]) + (np.int64(launch.n), np.int32(launch.steps),
                                                     np.int64(ptrs[7]), np.int64(ptrs[8]), np.float32(theta))
    stream = external_stream(cupy, torch.cuda.current_stream(device).cuda_stream, device.index)
    with cupy.cuda.Device(device.index), stream:
        kernel(((launch.n + _BLOCK - 1) // _BLOCK,), (_BLOCK,), args)
    return result


def _fused_group(x_seq, v, count, mask, theta: float, signed: bool, snm: bool, levels: int):
    """One launch of the group-neuron kernel: the unit q = θ/m rounded to float32 (as torch rounds
    the scalar of ``k * q``) and m are its last arguments."""
    cupy = require_cupy()
    launch = prepare(x_seq, v, count, mask, signed)
    result = launch.out, launch.v, (launch.count if signed else None)
    if launch.n == 0 or launch.steps == 0:
        return result
    device = launch.x.device
    kernel = _module(device.index, _FORMATS[launch.x.dtype]).get_function(
        group_kernel_name(launch.x.dtype, signed, mask is not None, snm))
    ptrs = launch.pointer_args()
    args = tuple(np.uint64(p) for p in ptrs[:5]) + (np.int64(launch.n), np.int32(launch.steps),
                                                     np.int64(ptrs[7]), np.int64(ptrs[8]),
                                                     np.float32(theta / levels), np.int32(levels))
    stream = external_stream(cupy, torch.cuda.current_stream(device).cuda_stream, device.index)
    with cupy.cuda.Device(device.index), stream:
        kernel(((launch.n + _BLOCK - 1) // _BLOCK,), (_BLOCK,), args)
    return result


def _ensure_verified(device: torch.device, dtype: torch.dtype) -> None:
    """The kernel self-check of :mod:`kernel_check`, once per device and dtype in this process."""
    def where():
        cupy = require_cupy()
        return f"{torch.cuda.get_device_name(device)} (CuPy {cupy.__version__}, CUDA {torch.version.cuda})"

    kernel_check.ensure_verified("cupy", _fused, device, dtype,
                                 list(_flags()) + kernel_check.group_variants(_flags()), where)
