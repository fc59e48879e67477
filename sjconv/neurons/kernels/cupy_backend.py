"""Fused CuPy kernels: one launch runs all T steps of a neuron layer (docs/methods.md#if-neuron, docs/methods.md#signed-neuron, docs/methods.md#srp, docs/methods.md#group-neuron).

Each thread owns one neuron: it loads ``v`` (and the signed count, and the SRP mask) once,
keeps them in registers for all T steps, reads every input once, writes every output once and
stores the final state back, so a later call (the next chunk) continues exactly where this one
stopped. The arithmetic is the float32 sequence of :mod:`sjconv.neurons.rules` (``v += x``;
compare; ``v -= θ·s``; output θ·s rounded to the input dtype), so spikes are bit-identical to the
torch backend.

- dtypes: float32, float16, bfloat16 inputs (arithmetic in float32, output in the input dtype).
  Half formats are converted with PTX ``cvt`` / bit operations, so no CUDA headers are needed and
  the source compiles the same under cupy-cuda12x and cupy-cuda13x.
- subnormals: CuPy compiles with ``-ftz=true``, so the float32 additions, multiplications and
  comparisons are inline PTX without ``.ftz`` (a subnormal potential stays a subnormal, as in
  torch); ``tests/test_kernel_nvrtc.py`` checks that the compiled PTX has no ``.ftz``.
- layout: works on the tensor's storage as it is when one time step is dense (contiguous or
  channels_last); other layouts are copied to contiguous first.
- launch: each variant is resolved once per (device, format, flags) inside that device's CuPy
  context, and launched there with torch's current stream of the input's device passed explicitly.
- environment: :func:`check_environment` runs when a network is built (CuPy's CUDA major version
  against torch's, NVRTC loadable); compile and load failures are one-line
  :class:`~sjconv.errors.BackendUnavailableError` messages with the fix.
- inference only: inputs that require grad are refused (the kernel has no backward).
- self-checked: the first launch for a device and dtype is preceded by a bit-exact comparison of
  every kernel variant with the rules on probe inputs (:mod:`sjconv.neurons.kernels.kernel_check`).
- group neurons (docs/methods.md#group-neuron): ``sjconv_group_neuron`` takes the unit q (θ/m rounded to float32) and the
  member count m as arguments; member j's threshold is ``j·q`` rounded once to float32, as in the
  rules, and the members are counted up from the lowest (thresholds never decrease with j, so the
  members that fire are always the first k).
"""

import functools
import os
from typing import Optional

import numpy as np
import torch

from ...errors import BackendUnavailableError, ConfigError
from . import kernel_check
from .launch import prepare

__all__ = ["multi_step", "prepare", "require_cupy", "check_environment", "kernel_name", "group_kernel_name",
           "check_input",
           "external_stream"]

#: the kernels' CUDA source (a package data file, read when a module is built and by the host tests)
SOURCE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "neuron.cu")


@functools.lru_cache(maxsize=None)
def kernel_source() -> str:
    """The CUDA source of the fused kernels (:data:`SOURCE_FILE`), read once per process."""
    with open(SOURCE_FILE, encoding="utf-8") as f:
        return f.read()

_FORMATS = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
_BLOCK = 256
#: NVRTC options of the module (CuPy adds its own, -ftz=true among them)
MODULE_OPTIONS = ("--std=c++14",)


def _flags():
    """Every kernel variant of one format, as ``(signed, masked, snm)``."""
    for signed in (False, True):
        for masked in (False, True):
            for snm in ((False, True) if signed else (False,)):
                yield signed, masked, snm


#: the kernel templates: the IF kinds, and the group neurons (docs/methods.md#group-neuron)
_KERNELS = {False: "sjconv_neuron", True: "sjconv_group_neuron"}


def _name(fmt, signed, masked, snm, kernel="sjconv_neuron"):
    b = lambda flag: "true" if flag else "false"  # noqa: E731
    return f"{kernel}<{fmt}, {b(signed)}, {b(masked)}, {b(snm)}>"


def group_kernel_name(dtype: torch.dtype, signed: bool, masked: bool, snm: bool) -> str:
    """The group-neuron kernel (docs/methods.md#group-neuron) of one dtype and flag combination."""
    return _name(_FORMATS[dtype], signed, masked, snm, kernel=_KERNELS[True])


def module_names(fmt: str):
    """The name expressions of one format's module: every variant of :func:`_flags`, of both kernels."""
    return [_name(fmt, *f, kernel=k) for k in _KERNELS.values() for f in _flags()]


def require_cupy():
    try:
        import cupy
    except ImportError:
        raise BackendUnavailableError(
            "backend='cupy' needs CuPy: pip install 'sjconv[cupy13]' for a CUDA 13 torch (torch.version.cuda "
            "13.x, as on PyPI) or 'sjconv[cupy12]' for CUDA 12, or use backend='torch'") from None
    return cupy


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"


def cupy_cuda_major(cupy) -> Optional[int]:
    """The CUDA major version CuPy was built for: from its wheel's name (cupy-cuda12x,
    cupy-cuda13x), else from the CUDA runtime it loads; None when neither tells."""
    from importlib import metadata

    for major in (13, 12, 11):
        try:
            metadata.version(f"cupy-cuda{major}x")
            return major
        except metadata.PackageNotFoundError:
            pass
    try:
        return int(cupy.cuda.runtime.runtimeGetVersion()) // 1000
    except Exception:  # noqa: BLE001 - a source build without a loadable runtime: nothing to compare
        return None


_NVRTC_FIX = {12: "pip install nvidia-cuda-nvrtc-cu12", 13: "pip install 'cuda-toolkit[nvrtc]==13.*'"}


def check_environment() -> None:
    """What ``backend='cupy'`` needs, checked when a network is built (cheap; no compilation):
    CuPy importable, a CUDA GPU visible, CuPy built for torch's CUDA major version, NVRTC
    loadable. Raises :class:`BackendUnavailableError` with the fix; a success is remembered."""
    if _ENVIRONMENT_OK:
        return
    cupy = require_cupy()
    if not torch.cuda.is_available():
        raise BackendUnavailableError("backend='cupy' needs a CUDA GPU and none is visible: use backend='torch'")
    torch_major = int(torch.version.cuda.split(".")[0]) if torch.version.cuda else None
    cupy_major = cupy_cuda_major(cupy)
    if torch_major is not None and cupy_major is not None and torch_major != cupy_major:
        raise BackendUnavailableError(
            f"CuPy {cupy.__version__} is built for CUDA {cupy_major} but torch {torch.__version__} for CUDA "
            f"{torch.version.cuda}: pip uninstall cupy-cuda{cupy_major}x && pip install 'sjconv[cupy{torch_major}]' "
            f"(cupy-cuda{torch_major}x), or use backend='torch'")
    try:
        cupy.cuda.nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001 - pathfinder, OSError, CUDA errors: all mean "no NVRTC"
        fix = _NVRTC_FIX.get(cupy_major, "install the NVRTC of CuPy's CUDA version")
        raise BackendUnavailableError(
            f"CuPy {cupy.__version__} cannot load NVRTC, the compiler of its kernels ({_first_line(exc)}): "
            f"{fix}, or use backend='torch'") from None
    _ENVIRONMENT_OK.append(True)


#: non-empty once :func:`check_environment` passed in this process
_ENVIRONMENT_OK = []


def _build_error(exc: BaseException, device_index: int, fmt: str) -> BackendUnavailableError:
    """A failure to compile or load the kernel, as one line with the fix."""
    text = str(exc)
    if "UNSUPPORTED_PTX_VERSION" in text or "NO_BINARY_FOR_GPU" in text or "INVALID_PTX" in text:
        fix = ("the NVIDIA driver is older than CuPy's compiler (NVRTC): update the driver, or install the "
               "CuPy build (and torch) for the CUDA version the driver supports (nvidia-smi shows it)")
    elif "nvrtc" in text.lower() and ("not found" in text.lower() or "load" in text.lower()):
        fix = "CuPy cannot load NVRTC: " + " (CUDA 12) or ".join(_NVRTC_FIX.values()) + " (CUDA 13)"
    else:
        fix = "use backend='torch' (identical spikes) and please report this with your GPU, CUDA and CuPy versions"
    return BackendUnavailableError(f"backend='cupy' could not build its {fmt} kernel on cuda:{device_index} "
                                   f"({_first_line(exc)}): {fix}")


@functools.lru_cache(maxsize=None)
def _module(device_index: int, fmt: str):
    """RawModule with every variant of one format, compiled and loaded once per device."""
    cupy = require_cupy()
    with cupy.cuda.Device(device_index):
        try:
            module = cupy.RawModule(code=kernel_source(), options=MODULE_OPTIONS, name_expressions=module_names(fmt))
            module.compile()
        except Exception as exc:  # noqa: BLE001 - NVRTC, driver and loader errors alike
            raise _build_error(exc, device_index, fmt) from None
    return module


@functools.lru_cache(maxsize=None)
def _kernel(device_index: int, fmt: str, signed: bool, masked: bool, snm: bool, group: bool = False):
    """One kernel variant (``group``: the group-neuron kernel) on one device, resolved once inside
    that device's context (a kernel resolved elsewhere would load the module on the current device
    instead)."""
    cupy = require_cupy()
    with cupy.cuda.Device(device_index):
        try:
            return _module(device_index, fmt).get_function(_name(fmt, signed, masked, snm, kernel=_KERNELS[group]))
        except BackendUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _build_error(exc, device_index, fmt) from None


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


@functools.lru_cache(maxsize=64)
def _stream(ptr: int, device_index: int):
    """:func:`external_stream`, made once per torch stream (torch reuses a few streams)."""
    return external_stream(require_cupy(), ptr, device_index)


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


def multi_step(x_seq, v, count, mask, theta: float, signed: bool, snm: bool, levels=None, in_place: bool = False):
    """Run all ``x_seq.shape[0]`` steps in one launch; returns ``(out, v, count)``; ``levels``: the
    members of a group neuron (docs/methods.md#group-neuron; None: the IF kinds).

    ``v``/``count`` are float32 tensors shaped like one step (updated copies are returned, the
    arguments are not modified; with ``in_place`` they are updated where they lie when their layout
    allows, and returned), ``mask`` a bool tensor or None. The first call for a device and
    dtype runs the kernel self-check (:mod:`sjconv.neurons.kernels.kernel_check`) and raises if it fails.
    """
    check_input(x_seq)
    _ensure_verified(x_seq.device, x_seq.dtype)
    return _fused(x_seq, v, count, mask, theta, signed, snm, levels, in_place)


def _device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _fused(x_seq, v, count, mask, theta: float, signed: bool, snm: bool, levels=None, in_place: bool = False):
    """:func:`multi_step` without the input checks and the self-check: one launch on torch's
    current stream of the input's device, inside that device's CuPy context. Group neurons
    (``levels`` = m) get the unit q = θ/m rounded to float32 (as torch rounds the scalar of
    ``k * q``) and m as their last arguments instead of θ."""
    cupy = require_cupy()
    launch = prepare(x_seq, v, count, mask, signed, in_place)
    result = launch.out, launch.v, (launch.count if signed else None)
    if launch.n == 0 or launch.steps == 0:
        return result
    index = _device_index(launch.x.device)
    kernel = _kernel(index, _FORMATS[launch.x.dtype], bool(signed), mask is not None, bool(snm),
                     levels is not None)
    ptrs = launch.pointer_args()
    tail = (np.float32(theta),) if levels is None else (np.float32(theta / levels), np.int32(levels))
    args = tuple(np.uint64(p) for p in ptrs[:5]) + (np.int64(launch.n), np.int32(launch.steps),
                                                     np.int64(ptrs[7]), np.int64(ptrs[8])) + tail
    stream = _stream(torch.cuda.current_stream(index).cuda_stream, index)
    with cupy.cuda.Device(index):
        kernel(((launch.n + _BLOCK - 1) // _BLOCK,), (_BLOCK,), args, stream=stream)
    return result


def _ensure_verified(device: torch.device, dtype: torch.dtype) -> None:
    """The kernel self-check of :mod:`kernel_check`, once per device and dtype in this process."""
    def where():
        cupy = require_cupy()
        return f"{torch.cuda.get_device_name(device)} (CuPy {cupy.__version__}, CUDA {torch.version.cuda})"

    kernel_check.ensure_verified("cupy", _fused, device, dtype,
                                 list(_flags()) + kernel_check.group_variants(_flags()), where)
