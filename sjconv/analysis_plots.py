"""Text table and plots of the per-layer statistics of :mod:`sjconv.analysis`.

The statistics are computed there (plain dicts); this module only presents them: a text table
(:func:`format_layer_table`) and PNG figures (:func:`plot_analysis`). Figures are drawn on their
own ``matplotlib.figure.Figure`` with an Agg canvas, never through pyplot, so the process's
matplotlib backend and open figures are not touched.
"""

import math
import re
from typing import List, Optional

from .analysis import CASES
from .report import atomic_path, style_T_axis

#: the per-method figures of :func:`plot_analysis`, each written to ``<prefix>_<kind>.png``
PLOT_KINDS = ("rates", "cases", "error_vs_T")

#: room left above the tallest bar, as a fraction of its height (the legend sits there)
HEADROOM = 0.25

#: legend text of each docs/protocols.md#unevenness-statistics case (keys of :data:`sjconv.analysis.CASES`)
CASE_LABELS = {"a0_exact": "a=0, φ=a", "case1": "case 1: a=0, φ>a", "a0_below": "a=0, φ<a",
               "apos_exact": "a>0, φ=a", "case2": "case 2: a>0, φ>a", "case3": "case 3: a>0, φ<a"}

#: colormap of the one-line-per-layer plot: a wide range of hues, so neighbouring layers differ
LAYER_COLORMAP = "turbo"


def _fmt(value, spec=".4f"):
    return "-" if value is None else format(value, spec)


def format_layer_table(result: dict) -> str:
    """Compact text table of an :func:`sjconv.analysis.analyze` result: one row per neuron layer,
    then the per-layer operation counts and the energy totals."""
    head = (f"method={result['method']} T={result['T']} tau={result['tau']} images={result['images']}")
    cols = ["layer", "theta", "neurons", "rate", "rate+", "rate-", "a=0", "c1", "a>0", "c2", "c3", "rel_err"]
    rows = []
    for L in result["layers"]:
        c = L["cases"]
        rows.append([L["name"], _fmt(L["theta"], ".4g"), str(L["neurons"]), _fmt(L["rate"]),
                     _fmt(L["rate_pos"]), _fmt(L["rate_neg"]), _fmt(c["a_zero"]), _fmt(c["case1"]),
                     _fmt(c["a_pos"]), _fmt(c["case2"]), _fmt(c["case3"]), _fmt(L["rel_error"])])
    ops = result["ops"]
    ocols = ["synaptic layer", "input", "ann_macs", "snn_sops", "sops_prerun", "snn_macs"]
    orows = [[o["name"], o["input"], _fmt(o["macs"], ".4g"), _fmt(o["sops"], ".4g"),
              _fmt(o["sops_prerun"], ".4g"), _fmt(o["snn_macs"], ".4g")] for o in ops["layers"]]

    def table(cols, rows):
        widths = [max(len(str(x)) for x in col) for col in zip(cols, *rows)]
        line = lambda r: "  ".join(str(x).rjust(w) if i else str(x).ljust(w)  # noqa: E731
                                   for i, (x, w) in enumerate(zip(r, widths)))
        return [line(cols)] + [line(r) for r in rows]

    foot = (f"per image: SNN {ops['snn_sops_per_image']:.4g} SOPs + {ops['snn_macs_per_image']:.4g} MACs"
            f" = {ops['snn_energy_pj']:.4g} pJ; ANN {ops['ann_macs_per_image']:.4g} MACs"
            f" = {ops['ann_energy_pj']:.4g} pJ (E_AC={ops['e_ac_pj']} pJ, E_MAC={ops['e_mac_pj']} pJ)")
    return "\n".join([head] + table(cols, rows) + [COLUMN_LEGEND, ""] + table(ocols, orows) + [foot])


#: what the columns of :func:`format_layer_table` hold, printed under its layer table (docs/protocols.md#unevenness-statistics cases)
COLUMN_LEGEND = "\n".join([
    "a=0, a>0: fraction of elements whose ANN activation a is 0, > 0 (φ: the SNN's mean output over T)",
    "c1: case 1, a=0 and φ>a;  c2: case 2, a>0 and φ>a;  c3: case 3, a>0 and φ<a  (docs/protocols.md#unevenness-statistics)",
    "rate: spikes / neuron / step (rate+, rate-: positive, negative spikes);  rel_err: ‖φ − a‖ / ‖a‖",
])


def layer_colors(n: int) -> list:
    """``n`` distinct RGBA colours, evenly spaced along :data:`LAYER_COLORMAP` (a cycle of 10
    default colours would give 19 layers only 10 colours)."""
    from matplotlib import colormaps

    cmap = colormaps[LAYER_COLORMAP]
    return [cmap(i / (n - 1)) if n > 1 else cmap(0.0) for i in range(n)]


def layer_labels(names: List[str]) -> List[str]:
    """What the plots call each neuron layer: its module path (``layer1.2``, ``conv2_x.0.act``), or,
    where the path is only indices (a layer of an ``nn.Sequential``: ``2``, ``5``, ``9``), its place
    among the neuron layers with the path beside it (``neuron 1 (module 2)``)."""
    return [f"neuron {i} (module {name})" if re.fullmatch(r"[0-9.]+", name) else name
            for i, name in enumerate(names, start=1)]


def _figure(size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _title(result: dict) -> str:
    return f"{result['method']}, T={result['T']}" + (f", tau={result['tau']}" if result["tau"] else "")


def rates_figure(result: dict):
    """Firing rate per neuron layer of an ``analyze`` result, positive and negative spikes stacked."""
    names = layer_labels([L["name"] for L in result["layers"]])
    x = list(range(len(names)))
    fig = _figure((max(6.0, 0.5 * len(names) + 2), 4))
    ax = fig.add_subplot()
    pos = [L["rate_pos"] for L in result["layers"]]
    neg = [L["rate_neg"] for L in result["layers"]]
    ax.bar(x, pos, label="positive")
    ax.bar(x, neg, bottom=pos, label="negative")
    tallest = max((p + n for p, n in zip(pos, neg)), default=0.0)
    ax.set_ylim(0, (1 + HEADROOM) * tallest if tallest > 0 else 1.0)
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("spikes / neuron / step")
    ax.set_title(f"Firing rate ({_title(result)})")
    ax.legend()
    return fig


def cases_figure(result: dict):
    """docs/protocols.md#unevenness-statistics case fractions per neuron layer of an ``analyze`` result, stacked to 1."""
    names = layer_labels([L["name"] for L in result["layers"]])
    x = list(range(len(names)))
    fig = _figure((max(6.0, 0.5 * len(names) + 2), 4))
    ax = fig.add_subplot()
    bottom = [0.0] * len(names)
    for key in CASES:
        vals = [L["cases"][key] for L in result["layers"]]
        ax.bar(x, vals, bottom=bottom, label=CASE_LABELS[key])
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1 + HEADROOM / 5)   # the stacks reach 1: a little room above them
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
    ax.set_ylabel("fraction of elements")
    ax.set_title(f"Unevenness-error cases ({_title(result)})")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def error_vs_T_figure(errors_vs_T: dict):
    """Relative error vs T of an :func:`sjconv.analysis.error_vs_T` result (log-x), one line per
    layer, each layer in its own colour (:func:`layer_colors`)."""
    fig = _figure((7, 4.5))
    ax = fig.add_subplot()
    Ts = errors_vs_T["Ts"]
    layers = errors_vs_T["layers"]
    labels = layer_labels([L["name"] for L in layers])
    for L, label, color in zip(layers, labels, layer_colors(len(layers))):
        ax.plot(Ts, [math.nan if e is None else e for e in L["rel_error"]], marker="o", ms=3,
                color=color, label=label)
    style_T_axis(ax, Ts)
    ax.set_ylabel("‖φ(T) − a‖ / ‖a‖")
    ax.set_title(f"Relative error vs T ({errors_vs_T['method']})")
    ax.legend(fontsize=6, ncol=2)
    return fig


def method_prefix(prefix: str, method: str) -> str:
    """Path prefix of ``method``'s figures in a run writing to ``prefix``: ``r`` and ``srp+neg``
    give ``r_srp_neg`` (no '+' in file names)."""
    return f"{prefix}_{method.replace('+', '_')}"


def plot_path(path_prefix: str, kind: str) -> str:
    """The file of figure ``kind`` (one of :data:`PLOT_KINDS`) under ``path_prefix``."""
    return f"{path_prefix}_{kind}.png"


def analysis_files(prefix: str, methods) -> List[str]:
    """Every file ``--analyze`` of a run writing to ``prefix`` may write for ``methods``: the
    JSON ``<prefix>_analysis.json`` and each method's figures (see :func:`method_prefix`)."""
    return [f"{prefix}_analysis.json"] + [plot_path(method_prefix(prefix, m), kind)
                                          for m in methods for kind in PLOT_KINDS]


def plot_analysis(result: dict, errors_vs_T: Optional[dict] = None,
                  path_prefix: str = "analysis") -> List[str]:
    """Write PNGs ``<prefix>_rates.png`` (:func:`rates_figure`), ``<prefix>_cases.png``
    (:func:`cases_figure`) and, with ``errors_vs_T``, ``<prefix>_error_vs_T.png``
    (:func:`error_vs_T_figure`). Returns the written paths."""
    figures = [("rates", rates_figure(result)), ("cases", cases_figure(result))]
    if errors_vs_T is not None:
        figures.append(("error_vs_T", error_vs_T_figure(errors_vs_T)))
    paths = []
    for kind, fig in figures:
        path = plot_path(path_prefix, kind)
        fig.tight_layout()
        with atomic_path(path) as tmp:   # atomic, and listed by report.written_files()
            fig.savefig(tmp, dpi=100, format="png")
        paths.append(path)
    return paths
