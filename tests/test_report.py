"""Result files: the accuracy plot leaves matplotlib's global state alone, and files written
atomically get the usual permissions."""

import json
import os
import stat

import pytest
import torch

import sjconv
from sjconv.report import atomic_path, plot_accuracy, write_json
from sjconv.train import save_state_dict


def test_plot_accuracy_leaves_backend_and_pyplot_alone(tmp_path, monkeypatch):
    import matplotlib
    import matplotlib.pyplot as plt

    def forbidden(*args, **kwargs):
        raise AssertionError("plot_accuracy touched matplotlib's global state")

    monkeypatch.setattr(matplotlib, "use", forbidden)
    for name in ("figure", "subplots", "close", "savefig", "switch_backend"):
        monkeypatch.setattr(plt, name, forbidden)
    figures = plt.get_fignums()
    path = tmp_path / "sub" / "acc.png"
    plot_accuracy(str(path), [1, 2, 4], {"QCFS": {1: 50.0, 2: 60.0, 4: 70.0}, "SRP (τ=4)": {4: 72.0}},
                  ann_accuracy=75.0, title="demo")
    assert plt.get_fignums() == figures
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def umask():
    """Set a umask for one test and restore the old one afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_files_get_the_mode_of_a_plain_open(tmp_path, umask, mask):
    umask(mask)
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as f:
        f.write("x")
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o666 & ~mask

    write_json(str(tmp_path / "results.json"), {"a": 1})
    save_state_dict(sjconv.QCFS(4, 1.0), str(tmp_path / "model.pth"))
    for name in ("results.json", "model.pth"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
    assert json.loads((tmp_path / "results.json").read_text()) == {"a": 1}
    assert "thresh" in torch.load(tmp_path / "model.pth", weights_only=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth", "plain.txt", "results.json"]


def test_atomic_path_removes_the_temporary_file_on_error(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- plot styles

def _tick_labels(ax):
    return [label.get_text() for label in ax.get_xticklabels()]


def test_identical_rows_stay_visible_and_finetuned_rows_are_dashed():
    """QCFS and NegSpike (and COS and COS + Neg) can have identical figures: every row gets its
    own marker, a later row smaller markers (so the one below still shows); fine-tuned rows are
    dashed, the others solid, and the ANN line is neither."""
    from sjconv.report import accuracy_figure

    same = {1: 50.0, 2: 60.0, 4: 70.0}
    rows = {"QCFS": same, "NegSpike": dict(same), "COS (ρ=4)": dict(same), "COS + Neg (ρ=4)": dict(same),
            "QCFS + FT (T=4, 2 ep)": {1: 55.0, 2: 65.0, 4: 72.0}}
    fig = accuracy_figure([1, 2, 4], rows, ann_accuracy=75.0, dashed=["QCFS + FT (T=4, 2 ep)"])
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    drawn = [lines[label] for label in rows]
    assert len({line.get_marker() for line in drawn}) == len(rows)
    sizes = [line.get_markersize() for line in drawn]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(rows)
    assert [line.get_linestyle() for line in drawn] == ["-", "-", "-", "-", "--"]
    ann = lines["ANN (75.00%)"]
    assert ann.get_linestyle() not in ("-", "--") and ann.get_marker() in ("None", None, "")


def test_finetuned_rows_of_a_results_dict_are_the_dashed_ones():
    from sjconv.report import finetuned_labels

    results = {"methods": [{"label": "QCFS"}, {"label": "QCFS + FT (T=4, 2 ep)", "finetuned": True}]}
    assert finetuned_labels(results) == ["QCFS + FT (T=4, 2 ep)"]


def test_every_plot_has_the_same_T_axis():
    """The accuracy plot and the error-vs-T plot: log2 scale, one plain-number tick per T, no
    minor ticks, the same label."""
    from matplotlib.ticker import NullLocator

    from sjconv.analysis_plots import error_vs_T_figure
    from sjconv.report import accuracy_figure

    steps = [1, 2, 4, 8, 16, 32, 64]
    acc = accuracy_figure(steps, {"QCFS": {t: 50.0 + t / 2 for t in steps}}).axes[0]
    err = error_vs_T_figure({"Ts": steps, "method": "qcfs",
                             "layers": [{"name": "1", "rel_error": [1.0 / t for t in steps]}]}).axes[0]
    for ax in (acc, err):
        assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
        assert _tick_labels(ax) == [str(t) for t in steps]
        assert isinstance(ax.xaxis.get_minor_locator(), NullLocator)
    assert acc.get_xlabel() == err.get_xlabel() == "time steps T"
