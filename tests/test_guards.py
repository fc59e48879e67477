"""Guard rails of the Python API (sjconv.guards): runs in eval mode, unconverted and compiled
networks refused, images and step counts checked, non-finite weights refused."""

import copy

import pytest
import torch

import sjconv
from sjconv import analysis
from sjconv.errors import ConfigError
from sjconv.simulate import accuracies, count_correct, count_correct_ann, evaluate_ann

from reference import calibrate_thresholds


@pytest.fixture(scope="module")
def small():
    """A small QCFS CNN with batch norm statistics far from a batch's own (so train mode shows),
    its images and labels."""
    torch.manual_seed(4)
    ann = sjconv.models.small_cnn(num_classes=3, in_channels=1, image_size=8)
    with torch.no_grad():
        for m in ann.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    images = torch.randn(6, 1, 8, 8)
    calibrate_thresholds(ann, images)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    return ann, images, labels


def _modes(module):
    return [m.training for m in module.modules()]


def _mixed_train(module):
    """Train mode everywhere except one module (so a plain ``train(flag)`` would not restore it)."""
    module.train()
    next(m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)).eval()
    return _modes(module)


# ------------------------------------------------------------------------------ 1. eval mode
@pytest.mark.parametrize("method", ["qcfs", "srp", "cos"])
def test_simulate_and_evaluate_run_in_eval_mode_and_give_modes_back(small, method):
    ann, images, labels = small
    snn = sjconv.convert(ann, method=method)
    want_logits = sjconv.simulate(snn, images, T=4)
    want_counts = count_correct(snn, [(images, labels)], T=[1, 4], progress=False)
    state = copy.deepcopy(snn.state_dict())
    modes = _mixed_train(snn)
    assert torch.equal(sjconv.simulate(snn, images, T=4), want_logits)
    assert count_correct(snn, [(images, labels)], T=[1, 4], progress=False) == want_counts
    assert sjconv.evaluate(snn, [(images, labels)], T=[1, 4], progress=False, memory_budget="1GB") == \
        accuracies(*want_counts)
    assert _modes(snn) == modes
    after = snn.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())   # batch norm statistics untouched


def test_analysis_runs_both_networks_in_eval_mode(small):
    ann, images, _ = small
    snn = sjconv.convert(ann, method="qcfs")
    want = analysis.analyze(ann, snn, images, 3)
    ann_modes, snn_modes = _mixed_train(ann), _mixed_train(snn)
    assert analysis.analyze(ann, snn, images, 3) == want
    assert _modes(ann) == ann_modes and _modes(snn) == snn_modes


def test_evaluate_ann_gives_every_module_its_mode_back(small):
    ann, images, labels = small
    modes = _mixed_train(ann)
    evaluate_ann(ann, [(images, labels)], progress=False)
    assert _modes(ann) == modes


# ------------------------------------------------------------------- 2. unconverted networks
def test_an_unconverted_ann_is_refused_everywhere(small):
    ann, images, labels = small
    for run in (lambda: sjconv.simulate(ann, images, T=2),
                lambda: sjconv.evaluate(ann, [(images, labels)], T=[1, 2], progress=False),
                lambda: count_correct(ann, [(images, labels)], T=2, progress=False),
                lambda: analysis.analyze(ann, ann, images, 2),
                lambda: analysis.error_vs_T(ann, ann, images, [1, 2])):
        with pytest.raises(ConfigError, match=r"no sjconv spiking nodes.*sjconv\.convert"):
            run()


# ------------------------------------------------------------------------ 3. non-finite values
@pytest.mark.parametrize("name, value", [("0.weight", float("nan")), ("1.running_var", float("inf")),
                                         ("2.thresh", float("nan"))])
def test_convert_refuses_non_finite_weights_buffers_and_thresholds(small, name, value):
    ann = copy.deepcopy(small[0])
    with torch.no_grad():
        ann.state_dict()[name].view(-1)[0] = value
    with pytest.raises(ConfigError, match=rf"NaN or inf in {name.replace('.', '[.]')} \(1 of"):
        sjconv.convert(ann, method="qcfs")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_evaluate_ann_refuses_nan_or_inf_images_as_evaluate_does(small, bad):
    ann, images, labels = small
    images = images.clone()
    images[0, 0, 0, 0] = bad
    with pytest.raises(ConfigError, match="NaN or inf"):
        evaluate_ann(ann, [(images, labels)], progress=False)
    with pytest.raises(ConfigError, match="NaN or inf"):
        count_correct_ann(ann, [(images, labels)], progress=False)


# ------------------------------------------------------------------------------ 4. compile
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_sjconv_functions_refuse_a_compiled_network(small, backend):
    """Refused before anything is compiled (so inductor costs nothing here)."""
    ann, images, labels = small
    snn = sjconv.convert(ann, method="cos", tau=2)
    compiled = torch.compile(snn, backend=backend)
    for run in (lambda: sjconv.simulate(compiled, images, T=2),
                lambda: sjconv.evaluate(compiled, [(images, labels)], T=2, progress=False),
                lambda: analysis.analyze(ann, compiled, images, 2)):
        with pytest.raises(ConfigError, match=f"torch.compile .backend '{backend}'.*snn"):
            run()


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("mode", ["m", "s"])
def test_calling_a_compiled_network_is_refused_by_its_nodes(small, backend, mode):
    ann, images, _ = small
    snn = sjconv.convert(ann, method="qcfs", step_mode=mode)
    compiled = torch.compile(snn, backend=backend)
    x = images.unsqueeze(0).repeat(2, 1, 1, 1, 1) if mode == "m" else images
    with pytest.raises(ConfigError, match="sjconv spiking nodes do not run under torch.compile"):
        compiled(x)


def test_a_compiled_submodule_is_refused(small):
    ann, images, _ = small
    snn = sjconv.convert(ann, method="qcfs")
    snn.net[0].compile(backend="eager")
    with pytest.raises(ConfigError, match="module 'net.0' is compiled"):
        sjconv.simulate(snn, images, T=2)


# ---------------------------------------------------------------------------- 10. arguments
def test_16_bit_images_are_widened_exactly(small):
    ann, images, _ = small
    snn = sjconv.convert(ann, method="qcfs")
    for dtype in (torch.float16, torch.bfloat16):
        low = images.to(dtype)
        assert torch.equal(sjconv.simulate(snn, low, T=3), sjconv.simulate(snn, low.float(), T=3))


@pytest.mark.parametrize("images, match", [
    (lambda x: (x * 40 + 128).clamp(0, 255).to(torch.uint8), "images must be floating point, got torch.uint8"),
    (lambda x: x.double(), r"images are torch.float64 but the network is torch.float32: pass images.to"),
    (lambda x: x.unsqueeze(0).repeat(3, 1, 1, 1, 1), r"\[N, C, H, W\], got shape \(3, 6, 1, 8, 8\).*time axis"),
    (lambda x: x[0], r"\[N, C, H, W\], got shape \(1, 8, 8\)"),
    (lambda x: x.numpy(), "images must be a torch.Tensor"),
])
def test_bad_images_are_one_line_config_errors(small, images, match):
    ann, x, labels = small
    snn = sjconv.convert(ann, method="qcfs")
    bad = images(x)
    runs = [lambda: sjconv.simulate(snn, bad, T=2), lambda: analysis.analyze(ann, snn, bad, 2)]
    if isinstance(bad, torch.Tensor):
        runs += [lambda: sjconv.evaluate(snn, [(bad, labels)], T=2, progress=False),
                 lambda: evaluate_ann(ann, [(bad, labels)], progress=False)]
    for run in runs:
        with pytest.raises(ConfigError, match=match) as info:
            run()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("T", [2.5, "8", True, 0, None])
def test_bad_T_is_a_config_error_naming_T(small, T):
    ann, images, labels = small
    snn = sjconv.convert(ann, method="qcfs")
    for run in (lambda: sjconv.simulate(snn, images, T=T), lambda: analysis.analyze(ann, snn, images, T),
                lambda: sjconv.evaluate(snn, [(images, labels)], T=T, progress=False)):
        with pytest.raises(ConfigError, match="^T must"):
            run()


@pytest.mark.parametrize("T", ["16", [4, 2.5], [], [1, "8"]])
def test_bad_lists_of_T_are_refused_not_read_as_digits(small, T):
    ann, images, labels = small
    snn = sjconv.convert(ann, method="qcfs")
    with pytest.raises(ConfigError, match="^T must"):
        sjconv.evaluate(snn, [(images, labels)], T=T, progress=False)


def test_analyze_with_several_T_names_error_vs_T(small):
    ann, images, _ = small
    snn = sjconv.convert(ann, method="qcfs")
    with pytest.raises(ConfigError, match="T must be a whole number .*; for several values of T use "
                                          "sjconv.analysis.error_vs_T"):
        analysis.analyze(ann, snn, images, [4, 8])
    with pytest.raises(ConfigError, match="^Ts must"):
        analysis.error_vs_T(ann, snn, images, [4, 8.5])


@pytest.mark.parametrize("chunk", [2.5, "2", 0])
def test_bad_chunk_is_a_config_error(small, chunk):
    ann, images, labels = small
    snn = sjconv.convert(ann, method="qcfs")
    for run in (lambda: sjconv.simulate(snn, images, T=4, chunk=chunk),
                lambda: sjconv.evaluate(snn, [(images, labels)], T=4, chunk=chunk, progress=False)):
        with pytest.raises(ConfigError, match="^chunk must"):
            run()
