"""Spiking forward-forward (sjconv.ff): overlay, coding, loss, locality, both schedules, hard
negatives, both readouts, checkpoints. Tiny networks and a few samples: the whole file runs in seconds."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from sjconv.errors import CheckpointError, ConfigError
from sjconv.ff import (BPTTNet, FFNet, encode, ff_loss, ff_step, goodness, hard_wrong_labels, layer_optimizers,
                       load_ff, neutral, overlay, random_wrong_labels, rms_normalize, save_ff, train_bptt, train_ff,
                       train_readout)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(n=6, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_overlay_writes_the_label_as_the_images_maximum():
    x, y = _images()
    out = overlay(x, y, 4)
    assert out.shape == x.shape and torch.equal(out[:, 4:], x[:, 4:])       # the rest of the image is kept
    expected = torch.zeros(6, 4)
    expected[torch.arange(6), y] = x.amax(dim=1)
    assert torch.equal(out[:, :4], expected)
    assert torch.equal(x, _images()[0])                                     # the input is not modified


def test_overlay_of_several_candidates_is_one_vectorised_call():
    x, _ = _images()
    every = overlay(x, torch.arange(4).expand(6, 4), 4)                    # [N, C, D]
    assert every.shape == (6, 4, 16)
    for label in range(4):
        assert torch.equal(every[:, label], overlay(x, torch.full((6,), label), 4))


def test_neutral_label_is_equal_entries():
    x, _ = _images()
    out = neutral(x, 4)
    assert torch.allclose(out[:, :4], (x.amax(dim=1) / 4)[:, None].expand(6, 4)) and torch.equal(out[:, 4:], x[:, 4:])


def test_encodings():
    x, _ = _images()
    direct = encode(x, 5, "direct")
    assert direct.shape == (5, 6, 16) and torch.equal(direct[3], x)
    torch.manual_seed(0)
    spikes = encode(torch.tensor([0.0, 0.25, 0.5, 1.0]).expand(2000, 4), 8, "poisson")
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(spikes.mean(dim=(0, 1)), torch.tensor([0.0, 0.25, 0.5, 1.0]), atol=0.02)
    with pytest.raises(ConfigError, match="encoding must be one of poisson, direct"):
        encode(x, 2, "latency")


def test_normalisation_keeps_the_direction_at_unit_rms():
    x = torch.rand(3, 5, 7) * torch.tensor([1.0, 10.0, 100.0, 0.5, 2.0])[None, :, None]
    out = rms_normalize(x)
    assert torch.allclose(out.pow(2).mean(dim=(0, 2)), torch.ones(5), atol=1e-4)
    assert torch.allclose(rms_normalize(x * 7.0), out, atol=1e-5)   # the scale (a layer's goodness) does not pass


def test_goodness_is_the_mean_squared_rate():
    spikes = torch.zeros(4, 2, 3)
    spikes[:2, 0, 0] = 1        # sample 0: one neuron at rate 0.5
    spikes[:, 1] = 1            # sample 1: every neuron at rate 1
    assert torch.allclose(goodness(spikes), torch.tensor([0.25 / 3, 1.0]))


def test_loss_is_softplus_not_log_of_two_plus_exp():
    g_pos, g_neg, theta = torch.tensor([0.3, 0.1]), torch.tensor([0.0, 0.2]), 0.1
    expected = (F.softplus(theta - g_pos) + F.softplus(g_neg - theta)).mean()
    assert torch.allclose(ff_loss(g_pos, g_neg, theta), expected)
    at_threshold = ff_loss(torch.tensor([theta]), torch.tensor([theta]), theta)
    assert math.isclose(at_threshold.item(), 2 * math.log(2), rel_tol=1e-6)
    # perfect separation drives softplus to 0; the users' log1p(1 + exp(z)) never goes below log 2 per term
    assert ff_loss(torch.tensor([50.0]), torch.tensor([-50.0]), 0.0).item() < 1e-6
    assert torch.log1p(1 + torch.exp(torch.tensor(-50.0))).item() == pytest.approx(math.log(2))
    sharp = ff_loss(g_pos, g_neg, theta, sharpness=10.0)
    assert torch.allclose(sharp, (F.softplus(10 * (theta - g_pos)) + F.softplus(10 * (g_neg - theta))).mean())


def _net(**kw):
    settings = dict(dims=[16, 12, 10, 8], num_classes=4, T=4, v_threshold=0.3, coding="direct")
    settings.update(kw)
    return FFNet(**settings)


def test_locality_each_layers_loss_reaches_only_its_own_weights():
    torch.manual_seed(0)
    net = _net()
    x, y = _images()
    outputs = net(net.encode(overlay(x, y, 4)))
    for k, out in enumerate(outputs):
        net.zero_grad(set_to_none=True)
        goodness(out).sum().backward(retain_graph=True)
        grads = [layer.linear.weight.grad for layer in net.layers]
        assert all(g is None for g in grads[:k]), f"layer {k}'s loss reached a layer below it"
        assert grads[k] is not None and grads[k].abs().sum() > 0
        assert all(g is None for g in grads[k + 1:])
    # without detach (BPTT) the same loss does reach the layers below: the test can fail
    net.zero_grad(set_to_none=True)
    goodness(net(net.encode(overlay(x, y, 4)), detach=False)[-1]).sum().backward()
    assert net.layers[0].linear.weight.grad is not None


def test_each_optimizer_holds_only_its_layers_parameters():
    net = _net()
    optimizers = layer_optimizers(net, 1e-3)
    assert len(optimizers) == len(net.layers)
    for opt, layer in zip(optimizers, net.layers):
        held = {id(p) for group in opt.param_groups for p in group["params"]}
        assert held == {id(p) for p in layer.parameters()}


def test_an_ff_step_moves_only_the_layers_it_trains():
    torch.manual_seed(0)
    net = _net()
    x, y = _images()
    before = [layer.linear.weight.clone() for layer in net.layers]
    losses = ff_step(net, layer_optimizers(net, 1e-2), overlay(x, y, 4), overlay(x, (y + 1) % 4, 4), [1])
    after = [layer.linear.weight for layer in net.layers]
    assert len(losses) == 1
    assert torch.equal(before[0], after[0]) and torch.equal(before[2], after[2])
    assert not torch.equal(before[1], after[1])


def test_every_layer_runs_all_steps_in_one_multi_step_call():
    net = _net(T=5)
    calls = []
    for layer in net.layers:
        layer.node.register_forward_hook(lambda m, inp, out: calls.append(tuple(inp[0].shape)))
    x, _ = _images(n=3)
    net.label_scores(x)
    # the C = 4 candidates of the 3 images go through each layer once, as [T, N·C, features]
    assert calls == [(5, 12, 12), (5, 12, 10), (5, 12, 8)]
    assert net.layers[0].node.step_mode == "m"


def test_goodness_prediction_matches_one_pass_per_label():
    torch.manual_seed(0)
    net = _net()
    x, _ = _images()
    scores = net.label_scores(x)
    for label in range(4):
        one = net.layer_goodness(overlay(x, torch.full((6,), label), 4)).sum(dim=0)
        assert torch.allclose(scores[:, label], one, atol=1e-6)
    skipped = net.label_scores(x, skip_first=True)
    for label in range(4):
        one = net.layer_goodness(overlay(x, torch.full((6,), label), 4))[1:].sum(dim=0)
        assert torch.allclose(skipped[:, label], one, atol=1e-6)
    assert torch.equal(net.predict(x), scores.argmax(dim=1))


def test_poisson_candidates_share_the_images_spikes():
    """With Poisson coding the C candidates of an image see the same image spikes (only the label
    entries differ): an image whose label entries do not reach the network scores all equal."""
    torch.manual_seed(0)
    net = _net(coding="poisson")
    with torch.no_grad():
        net.layers[0].linear.weight[:, :4] = 0   # the first layer ignores the label entries
    scores = net.label_scores(_images()[0])
    assert torch.allclose(scores, scores[:, :1].expand_as(scores))


def test_random_negatives_are_wrong_and_uniform():
    torch.manual_seed(0)
    y = torch.randint(0, 5, (5000,))
    wrong = random_wrong_labels(y, 5)
    assert not (wrong == y).any()
    offsets = torch.bincount((wrong - y) % 5, minlength=5)[1:] / 5000
    assert torch.allclose(offsets, torch.full((4,), 0.25), atol=0.03)


def test_hard_negatives_follow_the_networks_scores():
    torch.manual_seed(0)
    y = torch.zeros(4000, dtype=torch.long)
    scores = torch.tensor([5.0, 3.0, 0.0, 0.0]).expand(4000, 4)   # label 1 is the most confusing wrong label
    wrong = hard_wrong_labels(scores, y)
    assert not (wrong == y).any()
    counts = torch.bincount(wrong, minlength=4)
    assert counts[1] > 2 * counts[2] and counts[1] > 2 * counts[3]
    cold = torch.bincount(hard_wrong_labels(scores, y, temperature=0.05), minlength=4)
    assert cold[1] == 4000


def _toy(n=64, d=16, classes=4, seed=0):
    """Separable data: class c lights the inputs of block c (beyond the label entries)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.rand(n, d, generator=g) * 0.2
    block = (d - classes) // classes
    for c in range(classes):
        x[y == c, classes + c * block: classes + (c + 1) * block] += 0.8
    return x.clamp(0, 1), y


@pytest.mark.parametrize("schedule", ["joint", "layerwise"])
@pytest.mark.parametrize("negatives", ["random", "hard"])
def test_training_learns_the_toy_problem(schedule, negatives):
    torch.manual_seed(0)
    x, y = _toy()
    net = FFNet([16, 32, 32], num_classes=4, T=4, v_threshold=0.5, goodness_threshold=0.1, coding="direct",
                sharpness=10.0)
    history = train_ff(net, x, y, epochs=8, batch_size=16, lr=0.01, schedule=schedule, negatives=negatives)
    assert len(history) == (8 if schedule == "joint" else 16)
    assert [r["layer"] for r in history][:9] == (["all"] * 8 if schedule == "joint" else [1] * 8 + [2])
    acc = (net.predict(x) == y).float().mean().item()
    assert acc >= 0.9, acc


def test_layerwise_trains_one_layer_after_the_other():
    torch.manual_seed(0)
    x, y = _toy()
    net = FFNet([16, 20, 20], num_classes=4, T=2, coding="direct")
    snapshots = []
    train_ff(net, x, y, epochs=2, batch_size=32, schedule="layerwise",
             on_epoch=lambda e, r: snapshots.append([layer.linear.weight.clone() for layer in net.layers]))
    assert len(snapshots) == 4
    first, second = snapshots[1], snapshots[3]
    start_of_second = snapshots[0]
    assert torch.equal(start_of_second[1], snapshots[1][1])            # layer 2 untouched while layer 1 trains
    assert torch.equal(first[0], second[0])                            # layer 1 frozen while layer 2 trains
    assert not torch.equal(first[1], second[1])


def test_training_is_reproducible_and_resumable():
    x, y = _toy()

    def fresh():
        torch.manual_seed(0)
        return FFNet([16, 20, 20], num_classes=4, T=3)

    whole = fresh()
    train_ff(whole, x, y, epochs=3, batch_size=16, negatives="hard", seed=5)
    part = fresh()
    optimizers = layer_optimizers(part, 3e-3)

    def interrupt(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):   # stopped after its first epoch
        train_ff(part, x, y, epochs=3, batch_size=16, negatives="hard", seed=5, optimizers=optimizers,
                 on_epoch=interrupt)
    train_ff(part, x, y, epochs=3, batch_size=16, negatives="hard", seed=5, optimizers=optimizers, start_epoch=1)
    for a, b in zip(whole.parameters(), part.parameters()):
        assert torch.equal(a, b)


def test_softmax_readout_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    x, y = _toy()
    net = FFNet([16, 20, 12], num_classes=4, T=3, coding="direct")
    train_ff(net, x, y, epochs=3, batch_size=16)
    features = net.features(x)
    assert features.shape == (64, 32)
    head = train_readout(features, y, 4, steps=200)
    net.attach_readout(head)
    assert (net.predict(x, "softmax") == y).float().mean() >= 0.9
    skipped = net.features(x, skip_first=True)
    assert torch.equal(skipped, features[:, 20:])
    path = str(tmp_path / "ff.pth")
    save_ff(path, net)
    loaded = load_ff(path)
    assert loaded.config == net.config
    assert torch.equal(loaded.predict(x), net.predict(x))
    assert torch.equal(loaded.predict(x, "softmax"), net.predict(x, "softmax"))
    with pytest.raises(ConfigError, match="no softmax readout"):
        FFNet([16, 8], num_classes=4).predict(x, "softmax")
    (tmp_path / "other.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not read"):
        load_ff(str(tmp_path / "other.pth"))
    torch.save({"weights": 1}, tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="not a forward-forward checkpoint"):
        load_ff(str(tmp_path / "plain.pth"))


def test_bptt_baseline_learns_end_to_end():
    torch.manual_seed(0)
    x, y = _toy()
    model = BPTTNet(FFNet([16, 20, 20], num_classes=4, T=3, coding="direct"))
    train_bptt(model, x, y, epochs=10, batch_size=16, lr=0.01)
    assert (model.predict(x) == y).float().mean() >= 0.9
    assert all(layer.linear.weight.grad is not None for layer in model.body.layers)   # every layer got a gradient


def test_relu_network_is_the_non_spiking_counterpart():
    net = FFNet([16, 8], num_classes=4, T=1, coding="direct", spiking=False, goodness_threshold=2.0)
    x, _ = _images()
    out = net(net.encode(x))[0]
    assert out.shape == (1, 6, 8) and (out >= 0).all() and not torch.equal(out, (out > 0).float())


@pytest.mark.parametrize("kwargs, message", [
    ({"dims": [16]}, "at least one layer width"),
    ({"dims": [16, 3]}, "first layer (3 neurons) must be at least as wide as the 4 classes"),
    ({"dims": [3, 8]}, "must hold the 4 label entries"),
    ({"T": 0}, "T must be >= 1"),
    ({"goodness_threshold": 0.0}, "goodness_threshold must be > 0"),
])
def test_bad_networks_are_refused(kwargs, message):
    settings = dict(dims=[16, 8], num_classes=4)
    settings.update(kwargs)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FFNet(**settings)


def test_ff_is_independent_of_conversion():
    """sjconv.ff imports none of the conversion stack (neurons, convert, simulate, models)."""
    import subprocess
    import sys

    code = ("import sys, sjconv.ff.experiment, sjconv.cli.train_ff; "
            "print(sorted(m for m in sys.modules if m.startswith('sjconv')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": ROOT}).stdout
    for name in ("sjconv.neurons", "sjconv.convert", "sjconv.simulate", "sjconv.models", "sjconv.train"):
        assert f"'{name}'" not in out, out
    assert "'sjconv.ff.core'" in out
