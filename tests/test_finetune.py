"""Fine-tuning in SNN mode (docs/methods.md#training, docs/protocols.md#fine-tuning): trainable nodes keep the inference forward, the
θ gradient matches a hand derivation, the ZIF surrogate, TET, one optimisation step, the round trip
to the official ANN layout."""

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, surrogate

import sjconv
from sjconv.errors import ConfigError
from sjconv.finetune import ann_state_dict, finetune, tet_loss
from sjconv.neurons import METHODS, NODE_CLASSES, rules

from reference import calibrate_thresholds


def _node(signed, prerun, **kw):
    kwargs = {"prerun_steps": 2} if prerun else {}
    return NODE_CLASSES[(signed, prerun)](0.8, step_mode="m", **kwargs, **kw)


def _begin(node, x_seq):
    functional.reset_net(node)
    if node.prerun:
        with torch.no_grad():
            node.begin_prerun()
            node(x_seq[:2])
            node.end_prerun()


@pytest.mark.parametrize("kind, neg_rule", [(kind, rule) for kind in NODE_CLASSES for rule in ("qcfs", "snm")
                                             if kind[0] or rule == "qcfs"])
def test_trainable_forward_equals_inference_bit_for_bit(kind, neg_rule):
    signed, prerun = kind
    gen = torch.Generator().manual_seed(5)
    x = (torch.randint(-4, 5, (12, 40), generator=gen).float() * 0.2)   # potentials land on θ, 0, -θ
    x = torch.cat([x, torch.randn(12, 60, generator=gen)], dim=1)
    node = _node(signed, prerun, neg_rule=neg_rule)
    _begin(node, x)
    with torch.no_grad():
        want = node(x)
        v_want = node.v.clone()
    node.learnable_threshold()
    _begin(node, x)
    got = node(x.clone().requires_grad_())
    assert got.requires_grad and torch.equal(got.detach(), want)
    assert torch.equal(node.v.detach(), v_want)
    got.sum().backward()
    assert node.theta.grad is not None and torch.isfinite(node.theta.grad).all()


def _forward_mode_theta_gradient(xs, theta, gamma):
    """d(sum of outputs)/dθ of one IF neuron by forward-mode differentiation written out by hand:
    z = v - θ, s = H(z) with ds = ZIF'(z)·(dv - dθ), v' = v - θ s (dv' = dv - s - θ ds),
    out = θ s (d out = s + θ ds); v0 = θ/2 is a constant."""
    zif = lambda z: max(0.0, gamma - abs(z)) / gamma ** 2  # noqa: E731
    v, dv, total = theta / 2, 0.0, 0.0
    for x in xs:
        v = v + x
        s = 1.0 if v >= theta else 0.0
        ds = zif(v - theta) * (dv - 1.0)
        total += s + theta * ds
        v, dv = v - theta * s, dv - s - theta * ds
    return total


def test_theta_gradient_of_one_neuron_matches_hand_derivation():
    node = sjconv.ConvertedIFNode(1.0, step_mode="m").learnable_threshold()
    x = torch.tensor([0.7, 0.6, 0.1]).view(3, 1)
    node(x).sum().backward()
    # by hand: t1 fires (z=0.2, ZIF'=0.8, ds=-0.8), t2 (z=-0.2, dv=-0.2, ds=-0.96), t3 (z=-0.1, dv=0.76,
    # ds=-0.216): dL/dθ = 1 + (-0.8 - 0.96 - 0.216) = -0.976
    assert node.theta.grad.item() == pytest.approx(-0.976, abs=1e-6)
    assert _forward_mode_theta_gradient([0.7, 0.6, 0.1], 1.0, 1.0) == pytest.approx(-0.976, abs=1e-12)


def test_theta_gradient_random_sequences_both_paths():
    gen = np.random.default_rng(3)
    for _ in range(5):
        xs = gen.normal(0.3, 0.6, size=6).round(3).tolist()
        node = sjconv.ConvertedIFNode(0.9, step_mode="m").learnable_threshold()
        node(torch.tensor(xs, dtype=torch.float64).view(6, 1).float()).sum().backward()
        want = _forward_mode_theta_gradient([float(np.float32(x)) for x in xs], 0.9, 1.0)
        assert node.theta.grad.item() == pytest.approx(want, abs=1e-4)
    # amplitude path only (z far from 0: the surrogate is 0): dL/dθ = number of spikes
    node = sjconv.ConvertedIFNode(1.0, step_mode="m").learnable_threshold()
    x = [3.0, 0.0, -9.0, 12.0]   # z = 2.5, 1.5, -8.5, 3.5: three spikes, all outside the triangle
    node(torch.tensor(x).view(4, 1)).sum().backward()
    assert node.theta.grad.item() == 3.0 == _forward_mode_theta_gradient(x, 1.0, 1.0)


def test_zif_derivative_is_the_triangle():
    for gamma in (1.0, 0.5, 2.0):
        z = torch.linspace(-3, 3, 601, requires_grad=True)
        out = rules.zif(gamma)(z)
        assert torch.equal(out.detach(), (z >= 0).float())
        out.sum().backward()
        want = (1 / gamma) ** 2 * torch.clamp(gamma - z.detach().abs(), min=0)
        assert torch.allclose(z.grad, want, atol=1e-6)


def test_any_spikingjelly_surrogate_is_accepted():
    x = torch.randn(5, 30)
    node = sjconv.SignedIFNode(0.5, step_mode="m", surrogate_function=surrogate.ATan()).learnable_threshold()
    with torch.no_grad():
        want = node(x)
    functional.reset_net(node)
    got = node(x.clone().requires_grad_())
    assert torch.equal(got.detach(), want)
    got.sum().backward()
    assert node.theta.grad.abs().item() > 0


def test_tet_with_lambda_zero_is_mean_ce_over_steps():
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(4, 6, 3, generator=gen), torch.randint(0, 3, (6,), generator=gen)
    mean_ce = torch.stack([torch.nn.functional.cross_entropy(logits[t], labels) for t in range(4)]).mean()
    assert torch.allclose(tet_loss(logits, labels, lam=0.0), mean_ce)
    mse = ((logits - 1.0) ** 2).mean()
    assert torch.allclose(tet_loss(logits, labels, lam=0.25), 0.75 * mean_ce + 0.25 * mse)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    images = torch.randn(24, 1, 8, 8)
    labels = torch.randint(0, 3, (24,))
    ann = calibrate_thresholds(sjconv.models.small_cnn(num_classes=3, in_channels=1, image_size=8), images)
    return ann, images, labels


@pytest.mark.parametrize("method", list(METHODS))
def test_one_step_on_a_fixed_batch_lowers_the_loss(small, method):
    ann, images, labels = small
    snn = sjconv.convert(ann, method=method, tau=2 if METHODS[method].prerun else None)
    batch = [(images, labels)]

    def loss():
        with torch.no_grad():
            return float(tet_loss(sjconv.simulate(snn, images, T=3), labels, lam=1e-3))

    before = loss()
    history = finetune(snn, batch, T=3, epochs=1, lr=1e-3, optimizer="sgd", momentum=0.0, progress=False)
    assert history[0]["loss"] == pytest.approx(before, rel=1e-5)   # the training forward is the inference one
    assert loss() < before


def test_freezing_and_bn_statistics(small):
    ann, images, labels = small
    snn = sjconv.convert(ann, method="qcfs")
    weights = {k: v.clone() for k, v in snn.state_dict().items()}
    finetune(snn, [(images, labels)], T=2, epochs=1, lr=1e-2, train_weights=False, progress=False)
    after = snn.state_dict()
    changed = {k for k in weights if not torch.equal(weights[k], after[k])}
    assert changed and all(k.endswith(".theta") for k in changed)
    finetune(snn, [(images, labels)], T=2, epochs=1, lr=1e-2, train_thresholds=False, progress=False)
    final = snn.state_dict()
    assert all(torch.equal(after[k], final[k]) for k in final if "running" in k or k.endswith(".theta"))


def test_cupy_and_bad_arguments_are_clear_errors(small):
    ann, images, labels = small
    snn = sjconv.convert(ann, method="qcfs")
    for kwargs, match in (({"loss": "mse"}, "loss"), ({"lam": 1.5}, "lam"), ({"optimizer": "rmsprop"}, "optimizer"),
                          ({"T": 0}, "T")):
        args = {"T": 2, **kwargs}
        with pytest.raises(ConfigError, match=match):
            finetune(snn, [(images, labels)], epochs=1, progress=False, **args)
    for node in sjconv.neurons.spiking_nodes(snn):
        node.__dict__["_backend"] = "cupy"   # as if converted with backend='cupy' on a machine with CuPy
    with pytest.raises(ConfigError, match="backend='torch'"):
        finetune(snn, [(images, labels)], T=2, progress=False)


def test_finetuned_state_maps_onto_the_ann_layout(small):
    ann, images, labels = small
    snn = sjconv.convert(ann, method="neg")
    finetune(snn, [(images, labels)], T=2, epochs=2, lr=1e-2, progress=False)
    state = ann_state_dict(snn, ann)
    assert set(state) == set(ann.state_dict())
    fresh = sjconv.models.small_cnn(num_classes=3, in_channels=1, image_size=8)
    sjconv.load_checkpoint(fresh, state)
    again = sjconv.convert(fresh, method="neg")
    assert torch.equal(sjconv.simulate(again, images, T=4), sjconv.simulate(snn, images, T=4))


# --------------------------------------------------------------------------- command line
def test_finetune_cli_checkpoint_loads_and_evaluates(fake_cifar, tiny_checkpoint, capsys):
    import json

    from sjconv.cli import eval_cifar, finetune_snn

    from fakes import assert_run_metadata

    out = fake_cifar / "ft" / "r20_ft.pth"
    argv = ["--arch", "resnet20", "--checkpoint", str(tiny_checkpoint), "--L", "4",
            "--data-dir", str(fake_cifar / "data"), "--method", "neg", "-T", "2", "--epochs", "1",
            "--lr", "1e-2", "--batch-size", "6", "--limit", "6", "--workers", "0", "--device", "cpu",
            "--no-progress", "--out", str(out)]
    code = finetune_snn.cli(argv)
    assert code == 0, capsys.readouterr().err
    state = torch.load(out, weights_only=True)
    before = torch.load(tiny_checkpoint, weights_only=True)
    assert set(state) == set(before)                          # the official layout, key for key
    assert any(not torch.equal(state[k], before[k]) for k in state if k.endswith("thresh"))
    model = sjconv.models.resnet20(num_classes=10, L=4)
    sjconv.load_checkpoint(model, str(out))
    log = json.loads((fake_cifar / "ft" / "r20_ft.json").read_text())
    assert log["method"] == "neg" and log["T"] == 2 and len(log["history"]) == 1
    assert_run_metadata(log, argv, batch_size=6, neg_rule="qcfs")
    res = fake_cifar / "ft" / "eval.json"
    assert eval_cifar.cli(["--arch", "resnet20", "--checkpoint", str(out), "--L", "4", "--data-dir",
                           str(fake_cifar / "data"), "--method", "neg", "-T", "1", "2", "--batch-size", "6",
                           "--limit", "6", "--workers", "0", "--device", "cpu", "--no-progress", "--out", str(res)]) == 0
    assert set(json.loads(res.read_text())["methods"][0]["accuracy"]) == {"1", "2"}


@pytest.mark.parametrize("args, match", [
    (["--method", "qcfs", "--neg-rule", "snm"], "signed"),
    (["--method", "qcfs", "--tau", "3"], "--tau"),
    (["--lam", "2"], "--lam"),
    (["--freeze-weights", "--freeze-thresholds"], "nothing to train"),
])
def test_finetune_cli_bad_arguments_are_one_line(fake_cifar, tiny_checkpoint, capsys, args, match):
    from sjconv.cli import finetune_snn

    code = finetune_snn.cli(["--arch", "resnet20", "--checkpoint", str(tiny_checkpoint), "--data-dir",
                             str(fake_cifar / "data"), "--device", "cpu", "--out", str(fake_cifar / "x.pth")] + args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and match in err and len(err.strip().splitlines()) == 1
    assert not (fake_cifar / "x.pth").exists()
