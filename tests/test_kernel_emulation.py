"""The fused kernel's source, compiled for the CPU, against the torch backend.

No GPU is needed: the CUDA source of :mod:`sjconv.neurons.kernels.cupy_backend` is compiled with g++
(its host fallback of the float32 operations, behind the shim of ``host_kernel.py``: a launch's
threads in a host loop; float16 via GCC's ``_Float16`` instead of the PTX ``cvt`` instructions)
and driven through :func:`cupy_backend.prepare`, the same layout logic the GPU path uses. This
checks the kernel's neuron rules, state handling, strides and dtype conversions bit for bit; the
CuPy launch path is tested in ``test_cupy_launch.py`` (stand-in CuPy), the PTX in
``test_kernel_nvrtc.py``, and the PTX half-precision conversions by the GPU tests in ``test_cupy.py``.
"""

import pytest
import torch
from spikingjelly.activation_based import functional

from sjconv.errors import BackendUnavailableError
from sjconv.neurons import SpikingNode, rules
from sjconv.neurons.kernels import kernel_check
from sjconv.neurons.kernels import cupy_backend as cb

from host_kernel import FORMATS, compile_for_host, emulate


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    return compile_for_host(tmp_path_factory.mktemp("kernel"))


def torch_backend(x_seq, theta, signed, snm, mask):
    node = SpikingNode(theta, signed=signed, prerun="srp" if mask is not None else None, neg_rule="snm" if snm else "qcfs",
                       step_mode="m")
    functional.reset_net(node)
    if mask is not None:
        node.mask = mask
    out = node(x_seq)
    return out, node.v, (node.count if signed else None)


@pytest.mark.parametrize("dtype", list(FORMATS))
@pytest.mark.parametrize("signed,masked,snm", list(cb._flags()))
@pytest.mark.parametrize("shape", [(9, 1), (20, 3, 7, 5)])
def test_host_compiled_kernel_matches_torch_backend(host_kernels, dtype, signed, masked, snm, shape):
    theta = 0.6
    x = (torch.randn(shape) * 0.7).to(dtype)
    mask = torch.rand(shape[1:]) > 0.3 if masked else None
    v0 = torch.full(shape[1:], 0.0 if (signed and snm) else theta / 2)
    c0 = torch.zeros(shape[1:])
    got = emulate(host_kernels, x, v0, c0, mask, theta, signed, snm)
    want = torch_backend(x, theta, signed, snm, mask)
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1])
    if signed:
        assert torch.equal(got[2], want[2])
        assert (want[0] < 0).any()  # the negative rule was exercised
    assert torch.equal(v0, torch.full(shape[1:], 0.0 if (signed and snm) else theta / 2))  # inputs untouched


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "expanded", "strided_steps"])
def test_layouts_used_in_place_or_copied(host_kernels, layout):
    theta = 0.5
    base = torch.randn(5, 2, 6, 4, 3) * 0.6
    if layout == "channels_last":
        x = base.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(5, 2, 6, 4, 3)
    elif layout == "transposed":
        x = base.transpose(-1, -2)
    elif layout == "expanded":
        x = base[:1].expand(5, -1, -1, -1, -1)       # the same step every time (stride 0 in time)
    else:
        x = torch.randn(10, 2, 6, 4, 3)[::2]         # steps further apart than one step
    launch = cb.prepare(x, torch.zeros(x.shape[1:]), torch.zeros(x.shape[1:]), None, True)
    if layout in ("channels_last", "expanded", "strided_steps"):
        assert launch.x.data_ptr() == x.data_ptr()  # no copy of the input
    mask = torch.rand(x.shape[1:]) > 0.5
    state = torch.full(x.shape[1:], theta / 2)
    got = emulate(host_kernels, x, state, torch.zeros(x.shape[1:]), mask, theta, True, False)
    want = torch_backend(x, theta, True, False, mask)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_split_calls_continue_exactly(host_kernels):
    theta = 0.8
    x = torch.randn(12, 50)
    whole = torch_backend(x, theta, True, False, None)
    v, c = torch.full((50,), theta / 2), torch.zeros(50)
    outs = []
    for part in (x[:4], x[4:5], x[5:]):
        out, v, c = emulate(host_kernels, part, v, c, None, theta, True, False)
        outs.append(out)
    assert torch.equal(torch.cat(outs), whole[0]) and torch.equal(v, whole[1]) and torch.equal(c, whole[2])


@pytest.mark.parametrize("dtype", list(FORMATS))
@pytest.mark.parametrize("signed,masked,snm", list(cb._flags()))
def test_exact_ties_at_threshold_zero_and_minus_threshold(host_kernels, dtype, signed, masked, snm):
    """Inputs on a grid of θ/4 make v land exactly on θ, 0 and -θ: the >=, < 0 and <= -θ edges."""
    theta = 0.5
    x = (torch.randint(-2, 3, (24, 400)).float() * theta / 2).to(dtype)
    mask = torch.rand(400) > 0.3 if masked else None
    v0 = torch.full((400,), 0.0 if (signed and snm) else theta / 2)
    got = emulate(host_kernels, x, v0, torch.zeros(400), mask, theta, signed, snm)
    want = torch_backend(x, theta, signed, snm, mask)
    for a, b in zip(got, want):
        assert a is None or torch.equal(a, b)


@pytest.mark.parametrize("dtype", list(FORMATS))
def test_output_rounding_matches_torch_at_ties(host_kernels, dtype):
    theta = kernel_check.TIE_THETA[dtype]   # halfway between two values of the dtype
    x = (torch.randn(16, 300) * 0.8).to(dtype)
    got = emulate(host_kernels, x, torch.full((300,), theta / 2), torch.zeros(300), None, theta, True, False)
    want = torch_backend(x, theta, True, False, None)
    assert torch.equal(got[0], want[0]) and (want[0] != 0).any()
    if dtype is not torch.float32:
        assert float(want[0].abs().max()) != theta  # the tie was really rounded


def _runner(lib):
    return lambda *args, **group: emulate(lib, *args, **group)


@pytest.mark.parametrize("dtype", list(FORMATS))
def test_self_check_accepts_the_kernel(host_kernels, dtype):
    kernel_check.verify(_runner(host_kernels), "cpu", dtype, cb._flags())
    kernel_check.verify(_runner(host_kernels), "cpu", dtype, kernel_check.group_variants(cb._flags()))


def group_torch_backend(x_seq, theta, levels, signed, snm, mask):
    node = SpikingNode(theta, signed=signed, levels=levels, neg_rule="snm" if snm else "qcfs", step_mode="m")
    functional.reset_net(node)
    out = node(x_seq) if mask is None else None
    if mask is not None:   # group nodes take no pre-run: the masked kernels are compared with the rule
        v0 = torch.full(x_seq.shape[1:], 0.0 if snm else theta / levels / 2)
        c0 = torch.zeros(x_seq.shape[1:]) if signed else None
        out, v, c, _ = rules.run_steps(x_seq, v0, c0, mask, theta, signed, "snm" if snm else "qcfs", levels=levels)
        return out, v, c
    return out, node.v, (node.count if signed else None)


@pytest.mark.parametrize("dtype", list(FORMATS))
@pytest.mark.parametrize("signed,masked,snm", list(cb._flags()))
@pytest.mark.parametrize("levels", [1, 3, 8])
def test_host_compiled_group_kernel_matches_torch_backend(host_kernels, dtype, signed, masked, snm, levels):
    theta = 0.7
    x = (torch.randn(12, 3, 7, 5, generator=torch.Generator().manual_seed(levels)) * 0.5).to(dtype)
    mask = torch.rand(3, 7, 5) > 0.3 if masked else None
    v0 = torch.full((3, 7, 5), 0.0 if snm else theta / levels / 2)
    c0 = torch.zeros(3, 7, 5)
    got = emulate(host_kernels, x, v0, c0, mask, theta, signed, snm, levels)
    want = group_torch_backend(x, theta, levels, signed, snm, mask)
    for a, b in zip(got, want):
        assert a is None or torch.equal(a, b)
    if levels > 1:
        assert (want[0].abs() > theta / levels * 1.5).any()    # multi-level spikes happened
    if signed:
        assert (want[0] < 0).any()


def test_group_kernel_continues_across_calls_and_ties(host_kernels):
    """Exact ties on member thresholds (grid of q/2), split calls carrying v and the count."""
    levels, q = 4, 0.125
    x = torch.randint(-9, 10, (14, 300), generator=torch.Generator().manual_seed(3)).float() * (q / 2)
    v, c = torch.full((300,), q / 2), torch.zeros(300)
    whole = rules.run_steps(x, v, c, None, q * levels, True, "qcfs", levels=levels)
    outs = []
    for part in (x[:5], x[5:6], x[6:]):
        out, v, c = emulate(host_kernels, part, v, c, None, q * levels, True, False, levels)
        outs.append(out)
    assert torch.equal(torch.cat(outs), whole[0]) and torch.equal(v, whole[1]) and torch.equal(c, whole[2])


#: the host fallback of an addition and a comparison, and the same flushing subnormals
FTZ_ADD = ("static inline float sj_add(float a, float b) { return a + b; }",
           "static inline float sj_add(float a, float b) { return sj_test_ftz(sj_test_ftz(a) + sj_test_ftz(b)); }")
FTZ_LT = ("static inline bool sj_lt(float a, float b) { return a < b; }",
          "static inline bool sj_lt(float a, float b) { return sj_test_ftz(a) < sj_test_ftz(b); }")

#: one plausible bug per rule or mechanism: (what is replaced, by what, a dtype that shows it)
MUTATIONS = {
    "fires at > instead of >=": ("sj_ge(vi, theta)", "sj_gt(vi, theta)", torch.float32),
    "negative spike at v <= 0": ("sj_lt(vi, 0.0f)", "sj_le(vi, 0.0f)", torch.float32),
    "snm negative spike at v < -θ": ("sj_le(vi, neg_theta)", "sj_lt(vi, neg_theta)", torch.float32),
    "negative spike without a count": ("SIGNED && sj_gt(ci, 0.0f)", "SIGNED && sj_ge(ci, 0.0f)", torch.float32),
    "mask ignored": ("keep ? sj_mul(s, theta) : 0.0f", "sj_mul(s, theta)", torch.float32),
    "final v not stored": ("  v[i] = vi;\n", "\n", torch.float32),
    "last neuron skipped": ("if (i >= n) return;", "if (i >= n - 1) return;", torch.float32),
    "bf16 truncated": ("u += 0x7FFFu + ((u >> 16) & 1u);", "", torch.bfloat16),
    # what CuPy's -ftz=true does to plain float32 arithmetic and comparisons (issue #19)
    "sums flushed to zero": (FTZ_ADD[0], FTZ_ADD[1], torch.float32),
    "comparisons flush to zero": (FTZ_LT[0], FTZ_LT[1], torch.float32),
    "bf16 sums flushed to zero": (FTZ_ADD[0], FTZ_ADD[1], torch.bfloat16),
    "group member fires at >": ("sj_ge(vi, sj_mul((float)(k + 1), q))", "sj_gt(vi, sj_mul((float)(k + 1), q))",
                                torch.float32),
    "group one member short": ("while (k < levels && sj_ge", "while (k < levels - 1 && sj_ge", torch.float32),
    "group takes back more than sent": ("sj_le((float)(back + 1), ci)", "sj_le((float)back, ci)", torch.float32),
    "group negative at v <= -(j-1)q": ("sj_lt(vi, sj_neg(sj_mul((float)back, q)))", "sj_le(vi, sj_neg(sj_mul((float)back, q)))",
                                       torch.float32),
    "group resets one unit": ("vi = sj_sub(vi, kq);", "vi = sj_sub(vi, q * (k != 0));", torch.float32),
    "group final v not stored": ("  v[i] = vi;      /* the state, for the next call */", "", torch.float32),
    "group last neuron skipped": ("if (i >= n) { return; }", "if (i >= n - 1) { return; }", torch.float32),
    "group sums flushed to zero": (FTZ_ADD[0], FTZ_ADD[1], torch.float32),
    "group comparisons flush to zero": (FTZ_LT[0], FTZ_LT[1], torch.float32),
    "group mask ignored": ("D::store(out, t * out_step + i, keep ? kq : 0.0f);",
                           "D::store(out, t * out_step + i, kq);", torch.float32),
}


@pytest.mark.parametrize("bug", list(MUTATIONS))
def test_self_check_rejects_a_wrong_kernel(tmp_path, bug):
    old, new, dtype = MUTATIONS[bug]
    assert cb.kernel_source().count(old) == 1
    lib = compile_for_host(tmp_path, cb.kernel_source().replace(old, new))
    variants = kernel_check.group_variants(cb._flags()) if bug.startswith("group") else cb._flags()
    with pytest.raises(BackendUnavailableError, match="failed its self-check") as err:
        kernel_check.verify(_runner(lib), "cpu", dtype, variants, "test device")
    assert "backend='torch'" in str(err.value) and "differ" in str(err.value)


def test_subnormal_potentials_keep_their_sign(host_kernels):
    """Issue #19's case: signed, θ = 1, v0 = 0.5, x = [0.5, -1e-39]: the potential after the
    second step is a negative subnormal, so a negative spike follows (torch: [1, -1])."""
    x = torch.tensor([[0.5], [-1e-39]])
    want = torch_backend(x, 1.0, True, False, None)
    assert want[0].flatten().tolist() == [1.0, -1.0]
    got = emulate(host_kernels, x, torch.full((1,), 0.5), torch.zeros(1), None, 1.0, True, False)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_a_flushing_kernel_gives_the_wrong_spike_and_the_probe_has_subnormals(tmp_path):
    lib = compile_for_host(tmp_path, cb.kernel_source().replace(*FTZ_ADD))
    x = torch.tensor([[0.5], [-1e-39]])
    got = emulate(lib, x, torch.full((1,), 0.5), torch.zeros(1), None, 1.0, True, False)
    assert got[0].flatten().tolist() == [1.0, 0.0]     # what CuPy's -ftz=true would give
    theta, probe = kernel_check.probes("cpu", torch.float32)[-1]
    tiny = (probe != 0) & (probe.abs() < 2.0**-126)
    assert theta == 1.0 and int(tiny.sum()) > 1000
    assert probe[0, 0] == 0.5 and probe[1, 0] == torch.tensor(-1e-39)
