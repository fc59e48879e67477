"""A stand-in GPU for the dry run of ``run_gpu_checks.sh`` on a machine without one (imported at
start-up by every Python that has ``tests/standin_gpu`` on ``PYTHONPATH``, active only with
``SJCONV_STANDIN_GPU=1``).

torch reports one CUDA device ("Stand-in GPU (CPU)", 80 GiB); tensors asked for on "cuda" are
made on the CPU (a torch function mode rewrites the device of factories, ``.to`` and ``.cuda``);
synchronisation, events (wall clock), memory statistics (zero) and the memory fraction are
stand-ins. ``sjconv``'s cupy backend runs through the stand-in ``cupy`` next to this file (the
kernel source compiled for the CPU), accepting the CPU tensors of this GPU. The figures mean
nothing; what the dry run checks is that every step runs, writes and is reported, also when cut.
"""

import os

if os.environ.get("SJCONV_STANDIN_GPU") == "1":
    import time
    from types import SimpleNamespace

    import torch
    from torch.overrides import TorchFunctionMode

    def _cpu(device):
        if isinstance(device, (str, torch.device)) and torch.device(device).type == "cuda":
            return torch.device("cpu")
        if isinstance(device, int):
            return torch.device("cpu")
        return device

    class _CudaOnCpu(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func in (torch.Tensor.cuda,):
                return args[0]
            if "device" in kwargs:
                kwargs["device"] = _cpu(kwargs["device"])
            if func is torch.Tensor.to:
                args = tuple(_cpu(a) if isinstance(a, (str, torch.device)) else a for a in args)
            return func(*args, **kwargs)

    class _Event:
        def __init__(self, enable_timing=False, **kwargs):
            self.t = None

        def record(self, stream=None):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return (end.t - self.t) * 1e3

    props = SimpleNamespace(name="Stand-in GPU (CPU)", total_memory=80 * 2**30, major=9, minor=0,
                            multi_processor_count=1)
    cuda = torch.cuda
    cuda.is_available = lambda: True
    cuda.device_count = lambda: 1
    cuda.current_device = lambda: 0
    cuda.synchronize = lambda device=None: None
    cuda.reset_peak_memory_stats = lambda device=None: None
    cuda.max_memory_allocated = lambda device=None: 0
    cuda.memory_allocated = lambda device=None: 0
    cuda.empty_cache = lambda: None
    cuda.set_per_process_memory_fraction = lambda fraction, device=None: None
    cuda.mem_get_info = lambda device=None: (props.total_memory, props.total_memory)
    cuda.get_device_properties = lambda device=None: props
    cuda.get_device_name = lambda device=None: props.name
    cuda.get_device_capability = lambda device=None: (props.major, props.minor)
    cuda.current_stream = lambda device=None: SimpleNamespace(cuda_stream=0)
    cuda.Event = _Event
    torch.nn.Module.cuda = lambda self, device=None: self
    _CudaOnCpu().__enter__()

    from sjconv.neurons.kernels import cupy_backend as _cb

    class _SaysCuda:
        """A CPU tensor of the stand-in GPU, seen by the cupy backend's input check as on CUDA."""

        is_cuda = True

        def __init__(self, x):
            self._x = x

        def __getattr__(self, name):
            return getattr(self._x, name)

    _check_input = _cb.check_input
    _cb.check_input = lambda x_seq: _check_input(_SaysCuda(x_seq) if x_seq.device.type == "cpu" else x_seq)
