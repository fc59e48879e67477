"""The fused kernel source compiles with NVRTC (the compiler CuPy uses) for every dtype and flag
combination, without a GPU. torch's CUDA wheels ship libnvrtc; ``SJCONV_NVRTC=/path/libnvrtc.so``
picks another one (e.g. CUDA 12's, as cupy-cuda12x uses)."""

import ctypes
import glob
import os

import pytest
import torch

from sjconv.neurons import cupy_backend as cb


def _find_nvrtc():
    if os.environ.get("SJCONV_NVRTC"):
        return os.environ["SJCONV_NVRTC"]
    site = os.path.dirname(os.path.dirname(torch.__file__))
    for pattern in ("nvidia/cu*/lib/libnvrtc.so*", "nvidia/cuda_nvrtc/lib/libnvrtc.so*"):
        found = sorted(p for p in glob.glob(os.path.join(site, pattern)) if "builtins" not in p)
        if found:
            return found[0]
    return None


def _check(lib, code):
    if code != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise AssertionError(lib.nvrtcGetErrorString(code).decode())


@pytest.mark.parametrize("arch", ["compute_75", "compute_90"])
def test_kernel_source_compiles_with_nvrtc(arch):
    path = _find_nvrtc()
    if path is None:
        pytest.skip("no libnvrtc found (torch CPU wheel); set SJCONV_NVRTC to check")
    lib = ctypes.CDLL(path)
    names = [cb.kernel_name(dtype, *flags) for dtype in (torch.float32, torch.float16, torch.bfloat16)
             for flags in cb._flags()]
    prog = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), cb._SOURCE.encode(), b"sjconv.cu", 0, None, None))
    try:
        for name in names:
            _check(lib, lib.nvrtcAddNameExpression(prog, name.encode()))
        options = (ctypes.c_char_p * 2)(b"--std=c++14", f"--gpu-architecture={arch}".encode())
        code = lib.nvrtcCompileProgram(prog, 2, options)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        assert code == 0, log.value.decode()
        lowered = []
        for name in names:
            out = ctypes.c_char_p()
            _check(lib, lib.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(out)))
            lowered.append(out.value.decode())
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetPTX(prog, ptx))
        text = ptx.value.decode()
        assert all(f".entry {sym}(" in text for sym in lowered)
        assert "cvt.rn.f16.f32" in text and "cvt.f32.f16" in text
        assert "fma." not in text  # no contraction: v -= θ·s stays a multiply and a subtract
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
