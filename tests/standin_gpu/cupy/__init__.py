"""Stand-in ``cupy`` for the dry run of ``run_gpu_checks.sh`` (``tests/standin_gpu``): the
``FakeCupy`` of ``tests/host_kernel.py``, whose kernels are the CUDA source compiled for the CPU
with g++. Every launch is checked against its kernel's own signature and runs on the CPU tensors
of the stand-in GPU. The library is built once into ``$SJCONV_STANDIN_CUPY_DIR`` (default: a
temporary folder) and loaded from there by every later process."""

import ctypes
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))   # tests/

from host_kernel import FakeCupy, compile_for_host  # noqa: E402

_folder = pathlib.Path(os.environ.get("SJCONV_STANDIN_CUPY_DIR") or tempfile.mkdtemp(prefix="standin-cupy-"))
_folder.mkdir(parents=True, exist_ok=True)
_lib = ctypes.CDLL(str(_folder / "kernel.so")) if (_folder / "kernel.so").exists() else compile_for_host(_folder)
_fake = FakeCupy(_lib, {0: 0})

__version__ = _fake.__version__
cuda = _fake.cuda
RawModule = _fake.RawModule
