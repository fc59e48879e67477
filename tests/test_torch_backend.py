"""The in-place torch loop against the reference loop, bit for bit (sjconv.neurons.kernels.torch_backend).

Bit for bit means every output, potential and count has the same bits as
:func:`sjconv.neurons.rules.run_steps` gives: same dtype, same shape, and equal when viewed as
integers (so +0 and -0, and the rounding of θ·s to a half dtype, are compared too).
"""

import pytest
import torch

from sjconv.errors import ConfigError
from sjconv.neurons import rules
from sjconv.neurons.kernels import torch_backend
from sjconv.neurons.kernels.kernel_check import TIE_THETA, probes

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
KINDS = [(False, "qcfs"), (True, "qcfs"), (True, "snm")]  # (signed, neg_rule)
KIND_IDS = ["if", "signed-qcfs", "signed-snm"]
_INT = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}


@pytest.fixture(autouse=True, params=["one-block", "blocks-of-37"])
def block_size(request, monkeypatch):
    """Every test runs twice: with the default block (the tensors here are smaller: one block)
    and with blocks of 37 neurons, so the blocked path and a partial last block are exercised."""
    if request.param == "blocks-of-37":
        monkeypatch.setattr(torch_backend, "BLOCK", 37)
    return torch_backend.BLOCK


def bits(t):
    t = t.contiguous()
    return t.view(_INT[t.element_size()]) if t.dtype != torch.bool else t


def assert_same(got, want, what):
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    differ = bits(got) != bits(want)
    assert not differ.any(), f"{what}: {int(differ.sum())} of {differ.numel()} elements differ in their bits"


def start_state(shape, theta, signed, neg_rule):
    v = torch.full(shape, 0.0 if neg_rule == "snm" else theta / 2)
    return v, (torch.zeros(shape) if signed else None)


def compare(x_seq, v, count, mask, theta, signed, neg_rule, record_v=False):
    """Run both loops on the same arguments and require identical results."""
    want = rules.run_steps(x_seq, v, count, mask, theta, signed, neg_rule, record_v)
    got = torch_backend.run_steps(x_seq, v, count, mask, theta, signed, neg_rule, record_v)
    assert_same(got[0], want[0], "outputs")
    assert_same(got[1], want[1], "potentials")
    if signed:
        assert_same(got[2], want[2], "counts")
    else:
        assert got[2] is count
    if record_v:
        assert_same(got[3], want[3], "potentials per step")
    else:
        assert got[3] is None
    return got


def some_mask(shape, seed=1):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) > 0.4


# ------------------------------------------------------------------ hand-made ties
def tie_sequence(theta):
    """Inputs (exact in every dtype for θ = 0.5) that put v exactly on θ, 0 and −θ, with a
    positive count at the moment v reaches 0 or −θ, and that start from −0 in one neuron."""
    q = theta / 4
    cols = [
        [2 * q, 0.0, 4 * q, 0.0],                 # from θ/2: v = θ (fires, v 0), v = 0, v = θ, 0
        [2 * q, -4 * q, -4 * q, 4 * q],           # θ (fires, count 1), −θ, −2θ, −θ
        [2 * q, -2 * q, -2 * q, -4 * q],          # θ (fires), v = −θ/2 (qcfs: −1), ...
        [-2 * q, 0.0, -4 * q, 8 * q],             # 0 at the start (no count: no spike), −θ, θ
        [6 * q, -6 * q, -2 * q, -0.0],            # 2θ (fires), then −θ/2, −θ, and a −0 input
        [-0.0, -0.0, 0.0, 2 * q],
    ]
    return torch.tensor(cols, dtype=torch.float32).T.contiguous()   # [T=4, 6 neurons]


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("signed,neg_rule", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_hand_made_ties_on_theta_zero_and_minus_theta(dtype, signed, neg_rule, masked):
    theta = 0.5
    x = tie_sequence(theta).to(dtype)
    v, count = start_state(x.shape[1:], theta, signed, neg_rule)
    v[5] = -0.0                                   # a potential of −0 stays −0 + −0 = −0
    if signed:
        count[3] = 1.0                            # a neuron that already fired once
    mask = torch.tensor([True, False, True, False, True, False]) if masked else None
    out, *_ = compare(x, v, count, mask, theta, signed, neg_rule, record_v=True)
    assert (out != 0).any()
    if signed:
        assert (out < 0).any(), "the ties must produce negative spikes too"


@pytest.mark.parametrize("signed,neg_rule", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_probes_of_the_kernel_self_check(dtype, signed, neg_rule):
    """The grid probe (potentials exactly on the edges) and the rounding probe (θ halfway between
    two values of the dtype, so θ·s rounds at a tie), with and without a mask."""
    for theta, x in probes("cpu", dtype):
        v, count = start_state(x.shape[1:], theta, signed, neg_rule)
        for mask in (None, some_mask(x.shape[1:])):
            compare(x, v, count, mask, theta, signed, neg_rule)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_outputs_round_to_nearest_even_like_the_reference(dtype):
    theta = TIE_THETA[dtype]
    x = torch.full((3, 4), theta, dtype=torch.float32).to(dtype)
    v, _ = start_state((4,), theta, False, "qcfs")
    out, *_ = compare(x, v, None, None, theta, False, "qcfs")
    assert float(out[0, 0]) != theta   # θ itself is not representable: the output was rounded


# ------------------------------------------------------------------ random inputs
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("signed,neg_rule", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_random_inputs_and_states(dtype, signed, neg_rule, masked):
    gen = torch.Generator().manual_seed(7)
    shape = (3, 5, 7, 6)
    theta = 0.7   # not a binary fraction: θ·s and v − θ·s round
    x = (torch.randn((12,) + shape, generator=gen) * 0.9).to(dtype)
    v = torch.randn(shape, generator=gen)
    count = torch.randint(-1, 4, shape, generator=gen).float() if signed else None
    mask = some_mask(shape) if masked else None
    out, *_ = compare(x, v, count, mask, theta, signed, neg_rule, record_v=True)
    assert (out > 0).any() and (out == 0).any()


@pytest.mark.parametrize("signed,neg_rule", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_channels_last_input_keeps_its_layout(dtype, signed, neg_rule):
    gen = torch.Generator().manual_seed(3)
    T, N, C, H, W = 6, 2, 5, 4, 3
    steps = [torch.randn(N, C, H, W, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
             for _ in range(T)]
    x = torch.stack(steps)              # [T, N, C, H, W], every step channels_last
    assert x[0].is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    theta = 0.6
    v, count = start_state((N, C, H, W), theta, signed, neg_rule)
    v = v.contiguous(memory_format=torch.channels_last)
    mask = some_mask((N, C, H, W))
    out, v_end, *_ = compare(x, v, count, mask, theta, signed, neg_rule, record_v=True)
    assert out.stride() == x.stride()
    assert out[0].is_contiguous(memory_format=torch.channels_last)
    assert v_end.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("signed,neg_rule", KINDS, ids=KIND_IDS)
def test_expanded_input_and_broadcast_state_and_mask(signed, neg_rule):
    """A static input expanded over T (stride 0), and a state and mask that broadcast to the step."""
    gen = torch.Generator().manual_seed(9)
    x = (torch.randn(1, 2, 3, 4, generator=gen) * 0.7).expand(9, 2, 3, 4)
    theta = 0.8
    v = torch.full((3, 4), 0.0 if neg_rule == "snm" else theta / 2)     # broadcasts over the batch
    count = torch.zeros(()) if signed else None
    mask = some_mask((1, 3, 4))
    compare(x, v, count, mask, theta, signed, neg_rule, record_v=True)


@pytest.mark.parametrize("signed,neg_rule", KINDS, ids=KIND_IDS)
def test_split_calls_carry_the_state(signed, neg_rule):
    """Two calls, the second from the first's final state, equal one call (and the reference)."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(15, 40, generator=gen) * 0.8
    theta = 0.9
    v, count = start_state((40,), theta, signed, neg_rule)
    mask = some_mask((40,))
    whole = torch_backend.run_steps(x, v, count, mask, theta, signed, neg_rule)
    first = compare(x[:6], v, count, mask, theta, signed, neg_rule)
    second = compare(x[6:], first[1], first[2], mask, theta, signed, neg_rule)
    assert_same(torch.cat([first[0], second[0]]), whole[0], "outputs of split calls")
    assert_same(second[1], whole[1], "potentials of split calls")
    if signed:
        assert_same(second[2], whole[2], "counts of split calls")


@pytest.mark.parametrize("signed,neg_rule", KINDS, ids=KIND_IDS)
def test_inputs_are_not_modified(signed, neg_rule):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(8, 30, generator=gen)
    v = torch.randn(30, generator=gen)
    count = torch.randint(0, 3, (30,), generator=gen).float() if signed else None
    mask = some_mask((30,))
    before = [t.clone() for t in (x, v, mask) + ((count,) if signed else ())]
    out, v_end, c_end, _ = torch_backend.run_steps(x, v, count, mask, 0.5, signed, neg_rule)
    after = (x, v, mask) + ((count,) if signed else ())
    for old, new in zip(before, after):
        assert_same(new, old, "an input tensor")
    assert v_end.data_ptr() != v.data_ptr()
    if signed:
        assert c_end.data_ptr() != count.data_ptr()


def test_zero_steps_return_copies_of_the_state():
    x = torch.empty(0, 4)
    v, count = torch.rand(4), torch.ones(4)
    out, v_end, c_end, v_seq = torch_backend.run_steps(x, v, count, None, 1.0, True, "qcfs", record_v=True)
    assert out.shape == (0, 4) and v_seq.shape == (0, 4)
    assert torch.equal(v_end, v) and torch.equal(c_end, count)
    assert v_end.data_ptr() != v.data_ptr() and c_end.data_ptr() != count.data_ptr()


def test_other_dtypes_take_the_reference_path():
    x = torch.randn(5, 9, dtype=torch.float64)
    v = torch.full((9,), 0.5)
    compare(x, v, None, None, 1.0, False, "qcfs")


# ------------------------------------------------------------------ misuse
def test_refuses_inputs_that_need_a_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    v = torch.zeros(4)
    with pytest.raises(ConfigError, match="no_grad"):
        torch_backend.run_steps(x, v, None, None, 1.0, False)
    with torch.no_grad():
        out, *_ = torch_backend.run_steps(x, v, None, None, 1.0, False)
    assert not out.requires_grad


def test_bad_rule_and_missing_count_are_clear_errors():
    x, v = torch.randn(2, 3), torch.zeros(3)
    with pytest.raises(ConfigError, match="neg_rule"):
        torch_backend.run_steps(x, v, torch.zeros(3), None, 1.0, True, "other")
    with pytest.raises(ConfigError, match="count"):
        torch_backend.run_steps(x, v, None, None, 1.0, True)


def test_dense_layouts_run_in_blocks_and_others_in_one(monkeypatch, block_size):
    calls = []
    real = torch_backend._steps
    monkeypatch.setattr(torch_backend, "_steps", lambda *a: calls.append(a[0][0].numel()) or real(*a))
    steps = torch.stack([s.contiguous(memory_format=torch.channels_last) for s in torch.randn(4, 2, 5, 3, 4)])
    v = torch.zeros(2, 5, 3, 4)
    compare(steps, v, None, None, 0.5, False, "qcfs")
    n = 2 * 5 * 3 * 4
    assert calls == ([n] if block_size >= n else [37, 37, 37, 9])
    calls.clear()
    compare(torch.randn(1, 2, 5, 3, 4).expand(4, 2, 5, 3, 4), v, None, None, 0.5, False, "qcfs")
    assert calls == ([n] if block_size >= n else [37, 37, 37, 9])   # expanded over T: steps still dense
    calls.clear()
    compare(torch.randn(4, 2, 5, 3, 8)[..., ::2], v, None, None, 0.5, False, "qcfs")
    assert calls == [n]         # steps with gaps in memory: one block on the tensors as they are


@pytest.mark.parametrize("device,calls", [("cpu", 3), ("meta", 1)])
def test_layers_are_blocked_on_the_cpu_only(monkeypatch, block_size, device, calls):
    """Blocks keep a block's buffers in the CPU's cache; on a GPU (here the meta device, which
    runs no arithmetic) each operation is a launch and a layer runs as one block (issue #19)."""
    monkeypatch.setattr(torch_backend, "BLOCK", 37)
    seen = []
    real = torch_backend._steps
    monkeypatch.setattr(torch_backend, "_steps", lambda xs, *args: seen.append(xs[0].numel()) or real(xs, *args))
    x = torch.randn(4, 100, device=device)
    v, count = torch.zeros(100, device=device), torch.zeros(100, device=device)
    out = torch_backend.run_steps(x, v, count, torch.ones(100, dtype=torch.bool, device=device), 0.5, True)
    assert len(seen) == calls and sum(seen) == 100 and out[0].shape == x.shape
