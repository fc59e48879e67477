"""The fused kernel source compiles with NVRTC (the compiler CuPy uses) for every dtype and flag
combination, without a GPU, and its PTX has no flush-to-zero instruction although CuPy compiles
with ``-ftz=true``. torch's CUDA wheels ship libnvrtc; ``SJCONV_NVRTC=/path/libnvrtc.so`` picks
another one (e.g. CUDA 12's, as cupy-cuda12x uses). Where CuPy itself imports and loads NVRTC,
the PTX is also built through CuPy's own option assembly (``RawModule.compile``)."""

import ctypes
import glob
import os

import pytest
import torch

from sjconv.neurons.kernels import cupy_backend as cb


def _find_nvrtc():
    if os.environ.get("SJCONV_NVRTC"):
        return os.environ["SJCONV_NVRTC"]
    site = os.path.dirname(os.path.dirname(torch.__file__))
    for pattern in ("nvidia/cu*/lib/libnvrtc.so*", "nvidia/cuda_nvrtc/lib/libnvrtc.so*"):
        found = sorted(p for p in glob.glob(os.path.join(site, pattern)) if "builtins" not in p)
        if found:
            return found[0]
    return None


def assert_no_flush_to_zero(ptx: str):
    """No ``.ftz`` anywhere, and the float32 operations are the non-flushing PTX ones."""
    flushing = sorted({line.strip() for line in ptx.splitlines() if ".ftz" in line})
    assert not flushing, f"{len(flushing)} flush-to-zero instructions, e.g. {flushing[:3]}"
    for op in ("add.rn.f32", "sub.rn.f32", "mul.rn.f32", "setp.ge.f32", "setp.lt.f32", "setp.le.f32"):
        assert op in ptx


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
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), cb.kernel_source().encode(), b"sjconv.cu", 0, None, None))
    try:
        for name in names:
            _check(lib, lib.nvrtcAddNameExpression(prog, name.encode()))
        # -ftz=true as CuPy adds it to every compilation (cupy/cuda/compiler.py)
        options = (ctypes.c_char_p * 3)(b"--std=c++14", f"--gpu-architecture={arch}".encode(), b"-ftz=true")
        code = lib.nvrtcCompileProgram(prog, 3, options)
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
        assert_no_flush_to_zero(text)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


class _Compiled(Exception):
    """Raised once CuPy's NVRTC call has returned: what follows (loading the module) needs a GPU."""


def _cupy_or_skip():
    try:
        import cupy
        from cupy.cuda import compiler
        compiler._get_nvrtc_version()   # loads NVRTC
    except Exception as exc:  # noqa: BLE001 - not installed, or no NVRTC/driver library: nothing to test
        pytest.skip(f"CuPy with a loadable NVRTC is needed ({type(exc).__name__}: {str(exc)[:80]})")
    return cupy, compiler


def test_ptx_built_by_cupys_own_options_has_no_flush_to_zero(monkeypatch):
    """The backend's module compiled the way ``cupy.RawModule`` compiles it
    (``cupy._core.core.compile_with_cache`` with the module's options and name expressions, which
    adds CuPy's include paths, ``-ftz=true`` and the architecture), on a machine without a GPU:
    the architecture is given (sm_90, as PTX) and CuPy's NVRTC call is intercepted after it
    returns, before the module would be loaded onto a device."""
    cupy, compiler = _cupy_or_skip()
    seen = {}
    real_compile = compiler._NVRTCProgram.compile

    def compile_and_stop(self, options=(), log_stream=None):
        result = real_compile(self, options, log_stream)
        if "sjconv_neuron" in self.src:
            seen["options"], seen["ptx"] = options, result[0]
            raise _Compiled
        return result

    monkeypatch.setenv("CUPY_CACHE_IN_MEMORY", "1")
    monkeypatch.setattr(compiler, "_get_arch", lambda: "90")
    monkeypatch.setattr(compiler, "_get_arch_for_options_for_nvrtc", lambda arch=None: ("-arch=compute_90", "ptx"))
    monkeypatch.setattr(compiler._NVRTCProgram, "compile", compile_and_stop)
    for fmt in ("F32", "F16", "BF16"):
        seen.clear()
        with pytest.raises(_Compiled):
            cupy._core.core.compile_with_cache(cb.kernel_source(), cb.MODULE_OPTIONS, prepend_cupy_headers=False,
                                               backend="nvrtc", name_expressions=tuple(cb.module_names(fmt)))
        assert "-ftz=true" in seen["options"]   # CuPy asks for flush-to-zero ...
        ptx = seen["ptx"].decode() if isinstance(seen["ptx"], bytes) else seen["ptx"]
        assert ptx.count(".entry") == len(cb.module_names(fmt))
        assert_no_flush_to_zero(ptx)            # ... and the kernel has none
