"""Memory budgets: parsing, the chunk chooser, and identical results under a budget."""

import pytest
import torch

import sjconv
from sjconv.errors import ConfigError, SjconvError
from sjconv.memory import SAFETY, Footprint, choose_chunk, format_bytes, measure_footprint, parse_memory

from reference import calibrate_thresholds


@pytest.mark.parametrize("text,value", [("24GB", 24 * 10**9), ("24GiB", 24 * 2**30), ("512 MB", 512 * 10**6),
                                        ("1.5e9B", 1_500_000_000), ("2kib", 2048), (1000, 1000),
                                        ("4096 b", 4096)])
def test_parse_memory(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("text,value", [("24", 24 * 10**9), (" 0.5 ", 5 * 10**8), ("1e1", 10 * 10**9)])
def test_a_bare_number_is_gigabytes(text, value):
    assert parse_memory(text) == value == parse_memory(text.strip() + "GB")


def test_python_numbers_are_byte_counts():
    assert parse_memory(24) == 24 and parse_memory(2.5e9) == 2_500_000_000


@pytest.mark.parametrize("text", ["lots", "24XB", "-3GB", "0", "0GB", "GB"])
def test_parse_memory_rejects_nonsense(text):
    with pytest.raises(ConfigError, match="memory"):
        parse_memory(text)


@pytest.mark.parametrize("n,text", [(24, "24 B"), (3 * 2**20 + 2**19, "3.50 MiB"), (1.5 * 2**30, "1.50 GiB"),
                                    (2048, "2.00 KiB")])
def test_sizes_in_messages_use_a_readable_unit(n, text):
    assert format_bytes(n) == text


@pytest.mark.parametrize("fixed,per_step,budget,T", [(10, 7, 1000, 500), (0, 1, 10**9, 64), (100, 50, 400, 64),
                                                     (3 * 2**30, 2**27, 24 * 10**9, 1024)])
def test_chunk_is_the_largest_that_fits(fixed, per_step, budget, T):
    chunk = Footprint(fixed, per_step, "computed").chunk_for(budget, T)
    assert 1 <= chunk <= T
    assert fixed + per_step * chunk <= SAFETY * budget
    assert chunk == T or fixed + per_step * (chunk + 1) > SAFETY * budget


def test_budget_too_small_for_one_step_is_a_clear_error():
    with pytest.raises(SjconvError, match="does not fit even one time step.*--batch-size"):
        Footprint(900, 200, "computed").chunk_for(1000, 8)
    # small sizes are shown in a unit that keeps their digits, not as '0.00 GiB'
    with pytest.raises(SjconvError, match=r"budget of 24 B .*: it needs 1150976 B \(computed\)"):
        Footprint(2**20, 100 * 2**10, "computed").chunk_for(24, 8)


#: what a measured footprint may miss that does not grow with the steps (cuDNN workspaces)
FIXED_SLACK = 64 * 2**20


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(5)
    images = torch.randn(4, 3, 32, 32)
    return calibrate_thresholds(sjconv.models.resnet20(), images), images


def test_computed_footprint_covers_the_largest_activation(resnet):
    ann, images = resnet
    snn = sjconv.convert(ann, "neg", "m")
    fp = measure_footprint(snn.net, images)
    largest = 4 * 16 * 32 * 32 * 4  # batch·channels·H·W·float32 of the first stage
    weights = sum(p.numel() * 4 for p in ann.parameters())
    assert fp.how == "computed" and fp.per_step >= 2 * largest and fp.fixed >= weights
    small = choose_chunk(snn.net, images, 1000, fp.fixed + 10 * fp.per_step)
    large = choose_chunk(snn.net, images, 1000, fp.fixed + 100 * fp.per_step)
    assert 1 <= small < large <= 100


@pytest.mark.parametrize("method", ["qcfs", "srp+neg"])
def test_results_under_a_budget_equal_unconstrained(resnet, method):
    ann, images = resnet
    snn = sjconv.convert(ann, method, "m", tau=3 if "srp" in method else None)
    fp = measure_footprint(snn.net, images)
    budget = int((fp.fixed + 3.5 * fp.per_step) / SAFETY)  # allows a chunk of 3 steps
    assert choose_chunk(snn.net, images, 10, budget) == 3
    full = sjconv.simulate(snn, images, 10)
    assert torch.equal(sjconv.simulate(snn, images, 10, memory_budget=budget), full)
    loader = [(images, torch.arange(4))]
    assert sjconv.evaluate(snn, loader, [1, 5, 10], progress=False, memory_budget=budget) == \
        sjconv.evaluate(snn, loader, [1, 5, 10], progress=False)


@pytest.mark.gpu
def test_measured_footprint_predicts_cuda_peak(resnet):
    """The footprint measured at a few steps predicts the peak of 8 steps: 10 % on the per-step
    part, plus a fixed slack for what does not grow with the steps but may differ at the larger
    batch (a cuDNN workspace for batch 32 instead of 4 to 12: tens of MiB at most for ResNet20)."""
    import copy

    ann, images = resnet
    images = images.cuda()
    snn = sjconv.convert(copy.deepcopy(ann).cuda(), "qcfs", "m")   # the module-scoped fixture stays on the CPU
    fp = measure_footprint(snn.net, images)
    assert fp.how == "measured"
    torch.cuda.reset_peak_memory_stats()
    sjconv.simulate(snn, images, 8, chunk=8)
    peak = torch.cuda.max_memory_allocated()
    assert peak <= fp.fixed + 8 * fp.per_step * 1.1 + FIXED_SLACK
    assert next(ann.parameters()).device.type == "cpu"


def _largest_tensor_during(snn, images, T, **kw):
    """Largest module output (elements) while evaluating T steps: what a run must hold at once."""
    largest = [0]
    hooks = [m.register_forward_hook(lambda m, i, o: largest.__setitem__(0, max(largest[0], o.numel())))
             for m in snn.net.modules()]
    sjconv.evaluate(snn, [(images, torch.arange(images.shape[0]))], [1, T], progress=False, **kw)
    for h in hooks:
        h.remove()
    return largest[0]


@pytest.mark.parametrize("mode,chunk", [("s", None), ("m", 4)])
def test_step_and_chunked_modes_hold_nothing_of_size_T(resnet, mode, chunk):
    ann, images = resnet
    snn = sjconv.convert(ann, "srp+neg", mode, tau=3)
    sizes = [_largest_tensor_during(snn, images, T, chunk=chunk) for T in (4, 40)]
    assert sizes[0] == sizes[1]
    unconstrained = sjconv.convert(ann, "srp+neg", "m", tau=3)
    assert _largest_tensor_during(unconstrained, images, 40) == (40 // (chunk or 1)) * sizes[1]


def _oom_above(snn, images, max_steps, error=lambda: torch.OutOfMemoryError("CUDA out of memory (simulated)")):
    """Make the network's first module raise ``error()`` (CUDA's out-of-memory error by default)
    on calls of more steps."""
    first = next(m for m in snn.net.modules() if not list(m.children()))
    calls = []

    def hook(module, inputs):
        steps = inputs[0].numel() // images.numel()   # the first module sees the images, T times
        calls.append(steps)
        if steps > max_steps:
            raise error()

    return first.register_forward_pre_hook(hook), calls


@pytest.mark.parametrize("method", ["qcfs", "srp+neg"])
def test_out_of_memory_under_a_budget_halves_the_chunk_and_reruns_the_batch(resnet, method):
    ann, images = resnet
    snn = sjconv.convert(ann, method, "m", tau=3 if "srp" in method else None)
    loader = [(images, torch.arange(4)), (images.flip(0), torch.arange(4))]
    want = sjconv.evaluate(snn, loader, [1, 5, 12], progress=False)
    handle, calls = _oom_above(snn, images, 3)
    info = {}
    try:
        with pytest.warns(RuntimeWarning) as record:
            got = sjconv.evaluate(snn, loader, [1, 5, 12], progress=False, memory_budget="1TB", info=info)
    finally:
        handle.remove()
    assert got == want
    assert info["chunk_used"] == 3   # the chunk the run ended with: the smallest, after halving
    assert info["oom_retries"] == 2
    assert [str(w.message).split(";")[0] for w in record] == [
        "out of memory with 12 time steps per call under the memory budget",
        "out of memory with 6 time steps per call under the memory budget"]
    assert record[0].filename == __file__
    # the footprint probe (1 and 2 steps), then 12 -> 6 -> 3, and 3 for the second batch
    assert [c for c in calls if c > 3] == [12, 6] and calls[-1] == 3


def test_out_of_memory_with_an_explicit_chunk_is_not_retried(resnet):
    ann, images = resnet
    snn = sjconv.convert(ann, "qcfs", "m")
    handle, _ = _oom_above(snn, images, 3)
    try:
        with pytest.raises(torch.OutOfMemoryError):
            sjconv.evaluate(snn, [(images, torch.arange(4))], [8], progress=False, chunk=4, memory_budget="1TB")
    finally:
        handle.remove()


#: allocation failures as cuDNN and cuBLAS raise them (RuntimeError, not torch.OutOfMemoryError)
ALLOCATION_ERRORS = {
    "cudnn": lambda: RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    "cublas": lambda: RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    "cuda runtime": lambda: RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be ..."),
}


@pytest.mark.parametrize("kind", list(ALLOCATION_ERRORS))
def test_every_allocation_failure_halves_the_chunk_alike(resnet, kind):
    ann, images = resnet
    snn = sjconv.convert(ann, "qcfs", "m")
    loader = [(images, torch.arange(4))]
    want = sjconv.evaluate(snn, loader, [1, 4], progress=False)
    handle, calls = _oom_above(snn, images, 2, ALLOCATION_ERRORS[kind])
    info = {}
    try:
        with pytest.warns(RuntimeWarning, match="out of memory with 4 time steps"):
            got = sjconv.evaluate(snn, loader, [1, 4], progress=False, memory_budget="1TB", info=info)
    finally:
        handle.remove()
    assert got == want and info == {"chunk_used": 2, "oom_retries": 1}


def test_other_runtime_errors_are_not_retried(resnet):
    ann, images = resnet
    snn = sjconv.convert(ann, "qcfs", "m")
    handle, calls = _oom_above(snn, images, 2, lambda: RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"))
    try:
        with pytest.raises(RuntimeError, match="EXECUTION_FAILED"):
            sjconv.evaluate(snn, [(images, torch.arange(4))], [8], progress=False, memory_budget="1TB")
    finally:
        handle.remove()
    assert [c for c in calls if c > 2] == [8]   # one attempt, no halving


class _FakePeaks:
    """Stands in for the CUDA peak of one call: ``peaks[steps]`` bytes, recording the calls."""

    def __init__(self, peaks):
        self.peaks, self.calls = peaks, []

    def __call__(self, net, images, steps):
        self.calls.append(steps)
        return self.peaks[steps] if not callable(self.peaks) else self.peaks(len(self.calls), steps)


def test_measured_footprint_warms_up_before_measuring(resnet):
    from sjconv.memory import WARMUP_STEPS, _measured

    ann, images = resnet
    snn = sjconv.convert(ann, "qcfs", "m")
    # the first call (cuDNN benchmarking, CuPy compiling) peaks far higher than later ones
    fake = _FakePeaks(lambda call, steps: 10**9 if call == 1 else 1000 + 300 * steps)
    fp = _measured(snn.net, images, fake)
    assert fake.calls == [WARMUP_STEPS, 1, 2]
    assert (fp.fixed, fp.per_step, fp.how) == (1000, 300, "measured")


@pytest.mark.parametrize("peaks", [{1: 5000, 2: 5000}, {1: 6000, 2: 5000}])
def test_a_per_step_estimate_at_or_below_zero_falls_back_to_the_computed_one(resnet, peaks):
    from sjconv.memory import _computed, _measured

    ann, images = resnet
    snn = sjconv.convert(ann, "qcfs", "m")
    fp = _measured(snn.net, images, _FakePeaks(peaks))
    assert fp.per_step == _computed(snn.net, images).per_step > 0
    assert fp.how == "measured, per step computed"
    assert fp.chunk_for(10 * fp.per_step, 1000) < 1000   # a budget still limits the chunk


@pytest.mark.parametrize("exc,expected", [
    (torch.OutOfMemoryError("x"), True), (MemoryError(), True),
    (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"), True),
    (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"), False), (ValueError("out of memory"), False)])
def test_allocation_failures_are_recognised(exc, expected):
    from sjconv.memory import is_allocation_failure

    assert is_allocation_failure(exc) is expected
