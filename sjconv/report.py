"""Result tables (docs/protocols.md#result-tables layout), JSON files and accuracy-vs-T plots, and the files a
run writes: atomic writes, the list of them, the name of a checkpoint's training state.

It imports no torch (matplotlib only when plotting), so the command-line tools use it before torch."""

import contextlib
import json
import os
import secrets
from typing import Dict, Iterable, List, Mapping, Optional

#: every path :func:`atomic_path` renamed into place in this process, in order (see :func:`written_files`)
_WRITTEN: List[str] = []


def written_files() -> List[str]:
    """Paths that :func:`atomic_path` has put in place in this process, oldest first (a copy).

    What a tool has written when it is interrupted: the command line compares this list before
    and after its run, so "nothing was written" is only said when it is true."""
    return list(_WRITTEN)


def training_state_path(checkpoint: str) -> str:
    """Where the training state of ``checkpoint`` goes: ``run.pth`` -> ``run.state.pth``."""
    return os.path.splitext(checkpoint)[0] + ".state.pth"


def method_label(method: str, tau: int = 0, neg_rule: str = "qcfs", levels=None) -> str:
    """Row label of a method (from the method table), e.g. 'SRP (τ=4)', 'COS + Neg (ρ=4)',
    'NegSpike (SNM)', 'GN (m=4)' (``levels``: members of a group method); a name outside the table
    is its own label."""
    from .catalog import METHODS

    record = METHODS.get(method)
    return record.row_label(tau, neg_rule, levels) if record else method


def format_table(title: str, steps: Iterable[int], rows: Mapping[str, Mapping[int, float]],
                 ann_accuracy: Optional[float] = None) -> str:
    """Accuracy table: first column the row label, then T=0 (the ANN, first row only), then one
    column per T. Values are percentages with two decimals; missing entries are blank."""
    steps = list(steps)
    header = [title, "T=0"] + [str(t) for t in steps]
    body = []
    for i, (label, accs) in enumerate(rows.items()):
        ann = f"{ann_accuracy:.2f}" if (i == 0 and ann_accuracy is not None) else ""
        body.append([label, ann] + [f"{accs[t]:.2f}" if t in accs else "" for t in steps])
    widths = [max(len(r[c]) for r in [header] + body) for c in range(len(header))]
    widths = [max(w, 5) for w in widths]
    return "\n".join(" | ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header] + body)


def _create_beside(path: str) -> str:
    """Create a new empty file next to ``path`` and return its name. It is opened with
    ``O_CREAT | O_EXCL`` and mode 0o666, so the kernel applies the umask exactly as for a plain
    ``open(path, "w")`` (``mkstemp`` would make it 0600, and the rename would keep that)."""
    directory, name = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # a name already taken: draw another
            continue
        os.close(fd)
        return tmp


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error
    removed, so a crash never leaves a half-written file. The file ends up with the mode a plain
    ``open(path, "w")`` gives a new file (``0o666 & ~umask``)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _create_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
        _WRITTEN.append(path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, data) -> None:
    """Write ``data`` as JSON atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


#: marker of each row of an accuracy plot, in row order (then again, with another line width)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def row_style(index: int, finetuned: bool = False) -> dict:
    """Line style of row ``index`` of an accuracy plot: its own marker, drawn smaller the later
    the row comes, so that rows with identical figures (QCFS under NegSpike, COS under
    COS + Neg) still show every marker; fine-tuned rows dashed, the others solid."""
    return {"marker": MARKERS[index % len(MARKERS)], "markersize": max(3.0, 8.0 - 0.6 * index),
            "linestyle": "--" if finetuned else "-", "linewidth": 1.5 if index < len(MARKERS) else 1.0}


def style_T_axis(ax, steps: Iterable[int]) -> None:
    """The T axis of every sjconv plot: log2 scale, a tick at each T written as a plain number
    (1 2 4 ... 64, not 2^k), no minor ticks, labelled 'time steps T'."""
    from matplotlib.ticker import NullLocator

    steps = sorted(set(steps))
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps)
    ax.set_xticklabels([str(t) for t in steps])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("time steps T")


def plot_accuracy(path: str, steps: Iterable[int], rows: Mapping[str, Mapping[int, float]],
                  ann_accuracy: Optional[float] = None, title: str = "", dashed: Iterable[str] = ()) -> None:
    """PNG of accuracy vs T (:func:`style_T_axis`), one line per row (:func:`row_style`: its own
    marker; the rows named in ``dashed``, fine-tuned ones, dashed), the ANN as a dotted line.

    Drawn on its own ``Figure`` with an Agg canvas, never through pyplot: the process's
    matplotlib backend and pyplot's figures are left as they are (a caller's interactive session
    or its own plots are not affected)."""
    fig = accuracy_figure(steps, rows, ann_accuracy, title, dashed)
    with atomic_path(path) as tmp:   # the format from ``path``, as the temporary name ends in .tmp
        fig.savefig(tmp, format=os.path.splitext(path)[1][1:] or "png")


def accuracy_figure(steps: Iterable[int], rows: Mapping[str, Mapping[int, float]],
                    ann_accuracy: Optional[float] = None, title: str = "", dashed: Iterable[str] = ()):
    """The ``matplotlib.figure.Figure`` that :func:`plot_accuracy` writes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = list(steps)
    dashed = set(dashed)
    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (label, accs) in enumerate(rows.items()):
        ts = [t for t in steps if t in accs]
        ax.plot(ts, [accs[t] for t in ts], label=label, **row_style(i, label in dashed))
    if ann_accuracy is not None:
        ax.axhline(ann_accuracy, color="black", linestyle=":", linewidth=1, label=f"ANN ({ann_accuracy:.2f}%)")
    style_T_axis(ax, steps)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def rows_from_results(results: Dict) -> Dict[str, Dict[int, float]]:
    """Table rows from a results dict written by :func:`sjconv.experiment.run_methods`."""
    return {m["label"]: {int(t): a for t, a in m["accuracy"].items()} for m in results["methods"]}


def finetuned_labels(results: Dict) -> List[str]:
    """Labels of the fine-tuned rows of a results dict (drawn dashed by :func:`plot_accuracy`)."""
    return [m["label"] for m in results["methods"] if m.get("finetuned")]
