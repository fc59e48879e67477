"""The neuron kernels: every way of running the rules of :mod:`sjconv.neurons.rules` fast, side by side.

- :mod:`.torch_backend` -- the in-place torch loop of the IF kinds (any device, bit-identical)
- :mod:`.torch_group`   -- the in-place torch loop of the group neurons
- :mod:`.launch`        -- storage layouts: the launch layout of fused kernels, dense-storage views
- :mod:`.cupy_backend`  -- the fused CUDA kernels (source: ``neuron.cu``), launched with CuPy
- :mod:`.kernel_check`  -- the bit-exact self-check a fused kernel passes before its first launch
- :mod:`.registry`      -- the backend table: name -> check and ``run(x_seq, state, kind, record_v)``

This layer imports the rules and the records below it, never the nodes or the network above it.
"""

from .registry import BACKEND_TABLE, BACKENDS, Backend, check_backend, get_backend

__all__ = ["BACKEND_TABLE", "BACKENDS", "Backend", "check_backend", "get_backend"]
