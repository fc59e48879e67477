"""One forward-forward experiment as the command line runs it: spiking FF (both readouts) and the
two baselines on the same data, their curves, timings, figures, JSON and checkpoint."""

import os
import time
from typing import Dict, Iterable, Mapping, Optional

import torch

from ..errors import ConfigError
from ..report import write_json
from .checkpoint import read_ff, save_ff
from .core import FFNet, goodness, overlay
from .data import ff_data
from .options import DATASETS, ROWS
from .train import (BPTTNet, layer_optimizers, random_wrong_labels, train_bptt, train_ff, train_readout,
                    trained_depth)



def accuracy(predicted: torch.Tensor, y: torch.Tensor) -> float:
    """Percent of ``predicted`` equal to ``y``, two decimals."""
    return round((predicted == y).float().mean().item() * 100, 2)


def ff_network(settings: Mapping, classes: int, spiking: bool = True) -> FFNet:
    """The spiking FF network of ``settings`` (a CLI run's), or its ReLU counterpart (T = 1,
    direct input, the ReLU baseline's threshold)."""
    if spiking:
        return FFNet(settings["dims"], classes, T=settings["T"], tau=settings["tau"],
                     v_threshold=settings["v_threshold"], goodness_threshold=settings["goodness_threshold"],
                     coding=settings["encoding"], sharpness=settings["sharpness"])
    return FFNet(settings["dims"], classes, T=1, coding="direct", spiking=False,
                 goodness_threshold=settings["relu_goodness_threshold"], sharpness=1.0)


def _timed(fn, *args, **kwargs):
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - started, 3)


def run_experiment(settings: Mapping, prefix: str, device, resume: bool = False, metadata: Optional[Dict] = None,
                   resume_settings: Iterable[str] = (), threads: Optional[int] = None) -> Dict:
    """Run the FF experiment of ``settings`` (see :func:`sjconv.cli.train_ff.settings_of`) and
    write its files under ``prefix``; returns the results written to PREFIX.json."""
    classes, seed, epochs, schedule = DATASETS[settings["dataset"]].classes, settings["seed"], settings["epochs"], \
        settings["schedule"]
    seconds: Dict[str, float] = {}
    (x_train, y_train, x_test, y_test), seconds["data"] = _timed(ff_data, settings["dataset"],
                                                                 settings.get("data_dir", "data"),
                                                                 settings.get("download", False), seed)
    x_train, y_train, x_test, y_test = (t.to(device) for t in (x_train, y_train, x_test, y_test))
    torch.manual_seed(seed)
    net = ff_network(settings, classes).to(device)
    optimizers = layer_optimizers(net, settings["lr"])
    skip = settings["skip_first_layer"]
    history, curve, start, seconds["ff_train"], seconds["ff_curve"] = [], [], 0, 0.0, 0.0
    checkpoint = prefix + ".pth"
    if resume:
        state = read_ff(checkpoint)
        training = state.get("training") or {}
        check_same_settings(training.get("settings") or {}, settings, resume_settings, checkpoint)
        net.load_state_dict({k: v for k, v in state["state_dict"].items() if not k.startswith("readout.")})
        for opt, saved in zip(optimizers, state.get("optimizers", [])):
            opt.load_state_dict(saved)
        history, curve, start = training["history"], training["curve"], training["epochs_done"]
        seconds["ff_train"], seconds["ff_curve"] = training["seconds_train"], training["seconds_curve"]

    def on_epoch(epoch: int, record: Dict) -> None:
        started = time.perf_counter()
        depth = trained_depth(schedule, epoch, epochs, len(net.layers))
        curve.append(accuracy(net.predict(x_test, skip_first=skip, depth=depth), y_test))
        seconds["ff_curve"] += time.perf_counter() - started
        seconds["ff_train"] += record["seconds"]
        history.append({**record, "test_accuracy": curve[-1]})
        save_ff(checkpoint, net, optimizers, {"settings": dict(settings), "epochs_done": epoch + 1, "history": history,
                                              "curve": curve, "seconds_train": seconds["ff_train"],
                                              "seconds_curve": seconds["ff_curve"]})

    hard = {"hard_temperature": settings["hard_temperature"], "hard_every": settings["hard_every"]}
    train_ff(net, x_train, y_train, epochs, settings["batch_size"], settings["lr"], schedule, settings["negatives"],
             seed=seed, skip_first=skip, optimizers=optimizers, start_epoch=start, on_epoch=on_epoch, **hard)
    test_acc, train_acc = {}, {}
    torch.manual_seed(seed + 1)   # the spikes of the evaluations below
    predicted, seconds["ff_predict_test"] = _timed(net.predict, x_test, skip_first=skip)
    test_acc["ff_goodness"], train_acc["ff_goodness"] = accuracy(predicted, y_test), \
        accuracy(net.predict(x_train, skip_first=skip), y_train)
    started = time.perf_counter()
    features = net.features(x_train, skip)
    net.attach_readout(train_readout(features, y_train, classes, seed=seed), skip)
    seconds["ff_softmax"] = round(time.perf_counter() - started, 3)
    with torch.no_grad():
        test_acc["ff_softmax"] = accuracy(net.predict(x_test, "softmax"), y_test)
        train_acc["ff_softmax"] = accuracy(net.readout(features).argmax(dim=1), y_train)
    curves = {"ff_goodness": curve}
    if settings["baselines"]:
        torch.manual_seed(seed)
        bptt = BPTTNet(ff_network(settings, classes)).to(device)
        bptt_curve = []
        _, seconds["bptt"] = _timed(train_bptt, bptt, x_train, y_train, epochs, settings["batch_size"],
                                    settings["bptt_lr"], seed=seed,
                                    on_epoch=lambda e, r: bptt_curve.append(accuracy(bptt.predict(x_test), y_test)))
        test_acc["bptt"], train_acc["bptt"] = bptt_curve[-1], accuracy(bptt.predict(x_train), y_train)
        torch.manual_seed(seed)
        relu = ff_network(settings, classes, spiking=False).to(device)
        relu_curve = []
        relu_history, _ = _timed(
            train_ff, relu, x_train, y_train, epochs, settings["batch_size"], settings["relu_lr"], schedule,
            settings["negatives"], seed=seed, skip_first=skip, **hard,
            on_epoch=lambda e, r: relu_curve.append(accuracy(
                relu.predict(x_test, skip_first=skip, depth=trained_depth(schedule, e, epochs, len(relu.layers))),
                y_test)))
        seconds["ff_relu"] = round(sum(r["seconds"] for r in relu_history), 3)
        test_acc["ff_relu"], train_acc["ff_relu"] = relu_curve[-1], accuracy(relu.predict(x_train, skip_first=skip),
                                                                             y_train)
        curves.update(bptt=bptt_curve, ff_relu=relu_curve)
    seconds = {k: round(v, 3) for k, v in seconds.items()}
    results = {"dataset": settings["dataset"], "test_accuracy": test_acc, "train_accuracy": train_acc,
               "seconds": seconds, "row_seconds": row_seconds(seconds), "curves": curves, "ff_history": history,
               "settings": dict(settings), "train_images": len(y_train), "test_images": len(y_test),
               "device": str(device), "torch_threads": threads, **(metadata or {})}
    figures = inside_figures(net, x_test, y_test, seed)
    save_ff(checkpoint, net, optimizers, {"settings": dict(settings), "epochs_done": len(history), "history": history,
                                          "curve": curve, "seconds_train": seconds["ff_train"],
                                          "seconds_curve": seconds["ff_curve"]})
    write_json(prefix + ".json", results)
    from .plots import plot_all

    plot_all(prefix, {**results, "dataset": DATASETS[settings["dataset"]].title}, figures)
    return results


def check_same_settings(stored: Mapping, settings: Mapping, names: Iterable[str], where: str) -> None:
    """A resumed run repeats the settings its checkpoint was trained with (another learning rate
    or width would change the run mid-way): one error listing every difference as its flag."""
    differ = [f"--{k.replace('_', '-')} {stored[k]} (this run: {settings[k]})" for k in names
              if k in stored and stored[k] != settings[k]]
    if differ:
        raise ConfigError(f"{where} was written with other settings: {', '.join(differ)}; resume with the stored "
                          "settings, or start a new run")


def row_seconds(seconds: Mapping[str, float]) -> Dict[str, float]:
    """The seconds column of the table: training of each model (FF: its epochs without the
    per-epoch test curve; softmax: the readout on top of the trained FF network)."""
    rows = {"ff_goodness": seconds["ff_train"], "ff_softmax": seconds["ff_softmax"]}
    rows.update({k: seconds[k] for k in ("bptt", "ff_relu") if k in seconds})
    return rows


@torch.no_grad()
def inside_figures(net: FFNet, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> Dict:
    """What the goodness and raster figures show: per layer, the goodness of the test images
    with their true label and with a random wrong one; the spikes of the first test image."""
    torch.manual_seed(seed + 2)
    wrong = random_wrong_labels(y, net.num_classes)
    pos = [goodness(o).cpu().numpy() for o in net(net.encode(overlay(x, y, net.num_classes)))]
    neg = [goodness(o).cpu().numpy() for o in net(net.encode(overlay(x, wrong, net.num_classes)))]
    raster = [o[:, 0].cpu().numpy() for o in net(net.encode(overlay(x[:1], y[:1], net.num_classes)))]
    return {"goodness_pos": pos, "goodness_neg": neg, "raster": raster, "raster_label": int(y[0])}


def format_table(results: Mapping) -> str:
    """One row per model and readout: test accuracy, train accuracy (%), training seconds."""
    header = ["model, readout", "test %", "train %", "seconds"]
    body = [[label, f"{results['test_accuracy'][k]:.2f}", f"{results['train_accuracy'][k]:.2f}",
             f"{results['row_seconds'][k]:.1f}"] for k, label in ROWS.items() if k in results["test_accuracy"]]
    widths = [max(len(r[c]) for r in [header] + body) for c in range(len(header))]
    return "\n".join(" | ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header] + body)
