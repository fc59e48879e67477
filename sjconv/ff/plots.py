"""Figures of a forward-forward run: accuracy per epoch of every model, goodness of positive vs
negative data per layer, and the spike raster of one image per layer. Drawn on their own
``Figure`` with an Agg canvas (never through pyplot) and written atomically, as every sjconv plot."""

from typing import Dict, Mapping, Sequence

from ..analysis_plots import _figure, layer_colors
from ..report import atomic_path, row_style
from .options import ROWS


def _save(fig, path: str) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:   # atomic, and listed by report.written_files()
        fig.savefig(tmp, dpi=100, format="png")


def plot_curves(path: str, curves: Mapping[str, Sequence[float]], finals: Mapping[str, float],
                title: str = "", xlabel: str = "epoch") -> None:
    """Test accuracy per epoch, one line per model (``curves``: label -> accuracy after each
    epoch); ``finals`` (label -> accuracy) are models with one figure only (the softmax readout),
    drawn as a marker at the last epoch."""
    fig = _figure((6, 4))
    ax = fig.add_subplot()
    last = max((len(c) for c in curves.values()), default=1)
    for i, (label, values) in enumerate(curves.items()):
        ax.plot(range(1, len(values) + 1), values, label=label, **{**row_style(i), "markersize": 3})
    for j, (label, value) in enumerate(finals.items()):
        ax.plot([last], [value], linestyle="none", label=f"{label} (after training)",
                marker=row_style(len(curves) + j)["marker"], markersize=8)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_goodness(path: str, positive: Sequence, negative: Sequence, threshold: float) -> None:
    """One histogram panel per layer: goodness of the test images with their true label
    (``positive[k]``, a 1-D array per layer) and with a wrong one (``negative[k]``), the
    threshold θ_g as a dashed line."""
    n = len(positive)
    fig = _figure((3.2 * n + 0.5, 3))
    for k in range(n):
        ax = fig.add_subplot(1, n, k + 1)
        top = max(float(max(positive[k])), float(max(negative[k])), threshold) * 1.05
        bins = [top * i / 40 for i in range(41)]
        ax.hist(positive[k], bins=bins, alpha=0.6, label="positive (true label)")
        ax.hist(negative[k], bins=bins, alpha=0.6, label="negative (wrong label)")
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="θ_g")
        ax.set_title(f"layer {k + 1}")
        ax.set_xlabel("goodness")
        if k == 0:
            ax.set_ylabel("test images")
            ax.legend(fontsize=7)
    _save(fig, path)


def plot_raster(path: str, spikes: Sequence, label: int, title: str = "") -> None:
    """Spike raster of one image (with its true ``label`` written in) per layer: a dot at
    (time step, neuron) for every spike; ``spikes[k]`` is layer k's [T, H] 0/1 array."""
    n = len(spikes)
    fig = _figure((3.2 * n + 0.5, 4))
    colors = layer_colors(n)
    for k, s in enumerate(spikes):
        ax = fig.add_subplot(1, n, k + 1)
        steps, neurons = s.nonzero()
        ax.scatter(steps, neurons, s=6, marker="s", linewidths=0, color=colors[k])
        ax.set_xlim(-0.5, s.shape[0] - 0.5)
        ax.set_ylim(-0.5, s.shape[1] - 0.5)
        ax.set_xlabel("time step")
        if k == 0:
            ax.set_ylabel("neuron")
        ax.set_title(f"layer {k + 1}: {int(s.sum())} spikes, rate {s.mean():.3f}", fontsize=9)
    fig.suptitle(title or f"one test image (label {label})", fontsize=10)
    _save(fig, path)


def plot_all(prefix: str, results: Dict, figures: Dict) -> None:
    """Write PREFIX.png, PREFIX_goodness.png and PREFIX_raster.png from a run's ``results``
    (its ``curves`` and ``test_accuracy``) and ``figures`` (goodness arrays and raster)."""
    curves = {ROWS[k]: v for k, v in results["curves"].items() if k in ROWS and v}
    finals = {ROWS[k]: v for k, v in results["test_accuracy"].items() if k not in results["curves"]}
    layerwise = results["settings"]["schedule"] == "layerwise"
    plot_curves(prefix + ".png", curves, finals, title=f"forward-forward on {results['dataset']}",
                xlabel="epoch (FF layerwise: layer 1's epochs, then layer 2's, ...)" if layerwise else "epoch")
    plot_goodness(prefix + "_goodness.png", figures["goodness_pos"], figures["goodness_neg"],
                  results["settings"]["goodness_threshold"])
    plot_raster(prefix + "_raster.png", figures["raster"], figures["raster_label"])

