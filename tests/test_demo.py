"""The digits demo (real data, no download), reduced: the ANN learns and the SNN catches up."""

import json

import pytest

from sjconv.cli import demo_digits

from fakes import assert_run_metadata


@pytest.mark.slow   # trains for 12 epochs and runs six methods to T=64 on 450 images
def test_demo_reduced_run(tmp_path, capsys):
    prefix = tmp_path / "digits"
    assert demo_digits.cli(["--epochs", "12", "-T", "1", "4", "16", "64", "--device", "cpu",
                            "--out", str(prefix), "--no-progress"]) == 0
    results = json.loads((tmp_path / "digits.json").read_text())
    ann = results["ann_accuracy"]
    assert ann > 80.0, f"the QCFS ANN did not learn: {ann:.2f}% (chance is 10%)"
    assert [m["method"] for m in results["methods"]] == ["qcfs", "neg", "srp", "srp+neg", "cos", "cos+neg", "gn",
                                                         "gn+neg"]
    for m in results["methods"]:
        assert set(m["accuracy"]) == {"1", "4", "16", "64"}, m
        assert abs(m["accuracy"]["64"] - ann) <= 3.0, (m["method"], m["accuracy"]["64"], ann)
    printed = capsys.readouterr().out
    rows = [line.split("|")[0].strip() for line in printed.splitlines()[2:]]
    assert rows == ["QCFS", "NegSpike", "SRP (τ=4)", "SRP + Neg (τ=4)", "COS (ρ=4)", "COS + Neg (ρ=4)", "GN (m=4)",
                    "GN + Neg (m=4)"]
    gn = {m["method"]: m for m in results["methods"]}
    assert gn["gn"]["levels"] == gn["gn+neg"]["levels"] == 4 and "levels" not in gn["qcfs"]
    # m = L: at T = 1 the group neurons are the ANN (up to float rounding, which moves no prediction here)
    assert abs(gn["gn"]["accuracy"]["1"] - ann) <= 0.5 and gn["gn+neg"]["accuracy"]["1"] == gn["gn"]["accuracy"]["1"]
    assert all(len(line.split("|")) == 6 for line in printed.splitlines()[1:])
    assert (tmp_path / "digits.png").stat().st_size > 1000


def test_demo_is_reproducible(tmp_path):
    args = ["--epochs", "2", "--width", "8", "-T", "1", "8", "--method", "qcfs", "srp", "--device", "cpu",
            "--no-progress"]
    runs = []
    for name in ("a", "b"):
        assert demo_digits.cli(args + ["--out", str(tmp_path / name)]) == 0
        runs.append(json.loads((tmp_path / f"{name}.json").read_text()))
    for key in ("ann_accuracy", "final_train_loss"):
        assert runs[0][key] == runs[1][key]
    assert_run_metadata(runs[1], args + ["--out", str(tmp_path / "b")], batch_size=64, neg_rule="qcfs")
    assert [m["accuracy"] for m in runs[0]["methods"]] == [m["accuracy"] for m in runs[1]["methods"]]
