"""Command-line tools: smoke runs on a tiny synthetic CIFAR and clear one-line errors."""

import json
import os
import subprocess
import sys

import pytest
import torch

from sjconv.cli import eval_cifar, train_qcfs

from fakes import assert_run_metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_eval_cifar_smoke(fake_cifar, tiny_checkpoint, capsys):
    out = fake_cifar / "res" / "r.json"
    argv = ["--arch", "resnet20", "--checkpoint", str(tiny_checkpoint), "--L", "4",
            "--data-dir", str(fake_cifar / "data"), "--method", "qcfs", "neg", "srp", "srp+neg",
            "--tau", "2", "-T", "1", "2", "4", "--limit", "10", "--batch-size", "4", "--neg-rule", "snm",
            "--device", "cpu", "--workers", "0", "--out", str(out), "--no-progress"]
    code = eval_cifar.cli(argv)
    assert code == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split("|")[0].strip() == "CIFAR-10" and "T=0" in table[0]
    assert [row.split("|")[0].strip() for row in table[1:]] == ["QCFS", "NegSpike (SNM)", "SRP (τ=2)",
                                                                "SRP + Neg (SNM, τ=2)"]
    results = json.loads(out.read_text())
    assert results["num_images"] == 10 and results["T"] == [1, 2, 4]
    assert [m["method"] for m in results["methods"]] == ["qcfs", "neg", "srp", "srp+neg"]
    assert all(set(m["accuracy"]) == {"1", "2", "4"} for m in results["methods"])
    assert all(m["chunk_used"] is None for m in results["methods"])   # no --chunk, no budget: all at once
    assert_run_metadata(results, argv, batch_size=4, neg_rule="snm")
    assert (fake_cifar / "res" / "r.png").stat().st_size > 1000


def test_eval_cifar_step_modes_give_the_same_json(fake_cifar, tiny_checkpoint):
    accs = []
    for extra in (["--step-mode", "m"], ["--step-mode", "s"], ["--step-mode", "m", "--chunk", "3"]):
        out = fake_cifar / f"r{len(accs)}.json"
        assert eval_cifar.cli(["--arch", "resnet20", "--checkpoint", str(tiny_checkpoint), "--L", "4",
                               "--data-dir", str(fake_cifar / "data"), "--method", "neg", "-T", "1", "5", "8",
                               "--limit", "8", "--device", "cpu", "--workers", "0", "--out", str(out),
                               "--no-progress"] + extra) == 0
        accs.append(json.loads(out.read_text())["methods"][0]["accuracy"])
    assert accs[0] == accs[1] == accs[2]


def test_cifar100_and_train_script(fake_cifar, capsys):
    ckpt = fake_cifar / "ckpt" / "r20_c100.pth"
    assert train_qcfs.cli(["--arch", "resnet20", "--dataset", "cifar100", "--data-dir", str(fake_cifar / "data"),
                           "--epochs", "1", "--batch-size", "4", "--limit", "8", "--device", "cpu", "--workers", "0",
                           "--L", "4", "--out", str(ckpt), "--no-progress"]) == 0
    state = torch.load(ckpt, weights_only=True)
    assert "conv2_x.0.act.thresh" in state and state["fc.weight"].shape == (100, 64)
    out = fake_cifar / "c100.json"
    assert eval_cifar.cli(["--arch", "resnet20", "--dataset", "cifar100", "--checkpoint", str(ckpt), "--L", "4",
                           "--data-dir", str(fake_cifar / "data"), "-T", "2", "--limit", "4", "--device", "cpu",
                           "--workers", "0", "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["dataset"] == "cifar100"


def run_example(*args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", "eval_cifar.py"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _in_process(capsys, *args):
    """``eval_cifar`` run in this process, as ``run_example`` runs it in a new one: exit status
    (argparse's exit included) and stderr. Loading torch once instead of per case saves seconds."""
    try:
        code = eval_cifar.cli(list(args))
    except SystemExit as exc:
        code = exc.code
    return subprocess.CompletedProcess(args, code, "", capsys.readouterr().err)


def test_cli_bad_inputs(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    """Each mistake is one ``error:`` line and a non-zero exit. The first case runs the example
    script in a new interpreter (what a user runs); the others call the same entry point here."""
    data = tmp_path / "empty"
    data.mkdir()
    monkeypatch.chdir(tmp_path)   # the default --out of some cases is relative
    base = ["--data-dir", str(data), "--device", "cpu", "--out", str(tmp_path / "never.json")]
    proc = run_example("--arch", "resnet20", "--checkpoint", str(tmp_path / "missing.pth"), *base, cwd=tmp_path)
    assert_one_line_error(proc, "checkpoint file not found")

    def run(*args):
        return _in_process(capsys, *args)

    proc = run("--arch", "resnet20", "--checkpoint", str(tiny_checkpoint), *base)
    assert_one_line_error(proc, "CIFAR-10 not found", "--download")
    proc = run("--arch", "vgg16", "--checkpoint", str(tiny_checkpoint), *base)
    assert_one_line_error(proc, "does not match architecture 'vgg16 (cifar10)'", "missing keys",
                          "--arch resnet20 --dataset cifar10")
    proc = run("--arch", "resnet20", "--checkpoint", str(tiny_checkpoint), "--dataset", "cifar100", *base)
    assert_one_line_error(proc, "shape mismatch: fc.bias (10,) vs (100,)")
    if not torch.cuda.is_available():
        proc = run("--arch", "resnet20", "--checkpoint", str(tiny_checkpoint), "--backend", "cupy",
                   "--data-dir", str(data))
        assert_one_line_error(proc, "needs a CUDA GPU", "--backend torch")
        proc = run("--arch", "resnet20", "--checkpoint", str(tiny_checkpoint), "--device", "cuda",
                   "--data-dir", str(data))
        assert_one_line_error(proc, "no CUDA GPU", "--device cpu")
    proc = run("--arch", "alexnet", "--checkpoint", str(tiny_checkpoint))
    assert proc.returncode == 2 and "invalid choice: 'alexnet'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("--arch", "resnet20", "--checkpoint", str(tiny_checkpoint), "-T", "0")
    assert proc.returncode == 2 and "expected a number >= 1" in proc.stderr
    assert not (tmp_path / "never.json").exists() and not (tmp_path / "results.json").exists()


def test_eval_cifar_analyze_and_memory_budget(fake_cifar, tiny_checkpoint, capsys):
    """--analyze writes its JSON (with the run's metadata) and per-method plots, and removes the
    analysis files an earlier run with the same --out left for methods not in this run."""
    out = fake_cifar / "an" / "r.json"
    out.parent.mkdir()
    stale = [out.parent / name for name in ("r_cos_rates.png", "r_cos_neg_error_vs_T.png", "r_analysis.json")]
    unrelated = [out.parent / name for name in ("r_notes.png", "r_cos_rates.png.bak", "q_neg_rates.png")]
    for path in stale + unrelated:
        path.write_text("from an earlier run")
    argv = ["--arch", "resnet20", "--checkpoint", str(tiny_checkpoint), "--L", "4",
            "--data-dir", str(fake_cifar / "data"), "--method", "qcfs", "srp+neg", "--tau", "2",
            "-T", "1", "4", "--limit", "6", "--device", "cpu", "--workers", "0",
            "--memory-budget", "2GB", "--analyze", "--analyze-images", "3",
            "--out", str(out), "--no-progress"]
    assert eval_cifar.cli(argv) == 0
    captured = capsys.readouterr()
    printed = captured.out
    rows = json.loads(out.read_text())["methods"]
    chunks = [m["chunk_used"] for m in rows]
    assert all(1 <= c <= 4 for c in chunks), chunks   # chosen under the budget, at most max(T) (τ=2 < 4)
    budget_lines = [line for line in captured.err.splitlines() if line.startswith("memory budget 2GB: ")]
    assert len(budget_lines) == 1 and all(str(c) in budget_lines[0] for c in chunks)
    assert "method=qcfs T=4" in printed and "method=srp+neg T=4 tau=2" in printed
    report = json.loads((fake_cifar / "an" / "r_analysis.json").read_text())
    assert report["images"] == 3 and [m["method"] for m in report["methods"]] == ["qcfs", "srp+neg"]
    assert len(report["methods"][0]["layers"]) == 19   # resnet20: stem + 9 blocks x 2 neuron layers
    for name in ("qcfs_rates", "qcfs_cases", "srp_neg_error_vs_T"):
        assert (fake_cifar / "an" / f"r_{name}.png").exists()
    assert json.loads(out.read_text())["memory_budget"] == 2 * 10**9
    assert_run_metadata(report, argv, batch_size=128, neg_rule="qcfs")
    assert not any(path.exists() for path in stale[:2]) and all(p.read_text() == "from an earlier run"
                                                              for p in unrelated)
    removed = [line for line in captured.err.splitlines() if line.startswith("removed 2 analysis file(s)")]
    assert len(removed) == 1 and all(str(path) in removed[0] for path in stale[:2])


def test_a_run_without_analyze_removes_an_earlier_runs_analysis(tmp_path, capsys):
    import argparse

    from sjconv.cli.common import analyze_if_asked

    prefix = tmp_path / "r"
    old = [tmp_path / "r_analysis.json", tmp_path / "r_qcfs_rates.png", tmp_path / "r_srp_neg_cases.png"]
    for path in old + [tmp_path / "r.json", tmp_path / "r.png"]:
        path.write_text("x")
    analyze_if_asked(argparse.Namespace(analyze=False), None, None, [1], str(prefix), "cpu", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.png"]
    assert capsys.readouterr().err.startswith("removed 3 analysis file(s) of an earlier run")


def test_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    from urllib.error import URLError

    from torchvision.datasets import cifar

    from sjconv.data import cifar_dataset
    from sjconv.errors import SjconvError

    def offline(*args, **kwargs):
        raise URLError("network is unreachable")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    with pytest.raises(SjconvError, match="could not download CIFAR-10 .*--data-dir"):
        cifar_dataset("cifar10", str(tmp_path), download=True)


def _files_under(folder):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(folder) for f in files)


@pytest.mark.parametrize("tool", ["eval_cifar", "train_qcfs", "demo_digits"])
def test_unwritable_output_is_one_line_before_any_work(tool, fake_cifar, tiny_checkpoint, capsys):
    """An output whose folder cannot exist (an existing *file* stands on its path, which stops
    root too, unlike a read-only folder) is one error line, exit 2, before any data is loaded or
    model trained: nothing is written."""
    from sjconv.cli import demo_digits

    blocker = fake_cifar / "blocker"
    blocker.write_text("a file, not a folder\n")
    before = _files_under(fake_cifar)
    common = ["--device", "cpu", "--no-progress"]
    data = ["--data-dir", str(fake_cifar / "data"), "--workers", "0", "--limit", "4"]
    if tool == "eval_cifar":
        code = eval_cifar.cli(["--arch", "resnet20", "--checkpoint", str(tiny_checkpoint), "--L", "4", "-T", "1",
                               "--out", str(blocker / "r.json"), *data, *common])
    elif tool == "train_qcfs":
        code = train_qcfs.cli(["--arch", "resnet20", "--epochs", "1", "--L", "4", "--out", str(blocker / "c.pth"),
                               *data, *common])
    else:
        code = demo_digits.cli(["--epochs", "1", "-T", "1", "--method", "qcfs", "--analyze",
                                "--out", str(blocker / "sub" / "digits"), *common])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: cannot write") and f"{blocker} is a file" in lines[0]
    assert _files_under(fake_cifar) == before


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("stage", ["evaluation", "analysis"])
def test_interrupt_names_what_was_written(stage, fake_cifar, tiny_checkpoint, capsys, monkeypatch):
    """Ctrl-C during the evaluation: nothing was written; during ``--analyze``, after the results:
    the line names the JSON and the plot already in place. Exit status 130 either way."""
    import sjconv.experiment

    if stage == "evaluation":
        monkeypatch.setattr(sjconv.experiment, "run_methods", _interrupt)
    else:
        monkeypatch.setattr(sjconv.experiment, "analyze_methods", _interrupt)
    out = fake_cifar / "int" / "r.json"
    code = eval_cifar.cli(["--arch", "resnet20", "--checkpoint", str(tiny_checkpoint), "--L", "4", "-T", "1",
                           "--data-dir", str(fake_cifar / "data"), "--limit", "4", "--workers", "0",
                           "--device", "cpu", "--analyze", "--out", str(out), "--no-progress"])
    last = capsys.readouterr().err.splitlines()[-1]
    assert code == 130
    if stage == "evaluation":
        assert last == "interrupted: nothing was written" and not out.exists()
    else:
        assert last == f"interrupted: wrote {out.with_suffix('.png')}, {out}"
        assert out.exists() and out.with_suffix(".png").exists()


@pytest.mark.parametrize("tool", ["eval_cifar", "train_qcfs", "demo_digits", "finetune_snn"])
def test_help_states_each_default_once(tool, capsys):
    """Every tool uses cli.common.HelpFormatter: no option's help says '(default:' twice (the
    formatter's and a hand-written one), and options with a value show it."""
    import importlib
    import re

    module = importlib.import_module(f"sjconv.cli.{tool}")
    with pytest.raises(SystemExit):
        module.parse_args(["--help"])
    text = capsys.readouterr().out
    blocks, current = {}, None
    for line in text.splitlines():   # an option's block: its "  --name" line and the lines under it
        match = re.match(r"^  (-[-\w]+)", line)
        if match:
            current = match.group(1)
            blocks[current] = ""
        if current:
            blocks[current] += " " + line.strip()
    assert blocks, text
    for option, help_text in blocks.items():
        assert help_text.count("(default:") <= 1, (option, help_text)
    assert "(default:" in blocks["--batch-size"] and "(default:" in blocks["--seed" if tool != "eval_cifar" else "--L"]
    assert "(default:" not in blocks["--no-progress"]   # a flag's False is not stated


def test_run_cli_turns_out_of_memory_into_one_line(capsys):
    """torch's OOM error is one ``error:`` line and exit status 2 (``run_cli`` recognises it without
    importing torch itself); any other exception still propagates."""
    from sjconv.cli.common import run_cli

    def oom(argv):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    def bug(argv):
        raise RuntimeError("a bug")

    assert run_cli(oom, []) == 2
    assert capsys.readouterr().err.startswith("error: out of GPU memory: pass --memory-budget")
    with pytest.raises(RuntimeError, match="a bug"):
        run_cli(bug, [])


def test_cpu_out_of_memory_is_one_line(capsys):
    """The CPU allocator's failure is a plain RuntimeError in its own words: one ``error:`` line
    that says CPU and what to lower, exit status 2 (as for CUDA's OOM)."""
    from sjconv.cli.common import run_cli

    def too_big(argv):
        torch.empty(2**62, dtype=torch.uint8)   # 4 EiB: refused at once by the allocator

    assert run_cli(too_big, []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: out of CPU memory: lower --batch-size")


@pytest.mark.parametrize("tool", ["eval_cifar", "train_qcfs", "demo_digits", "finetune_snn"])
def test_every_option_has_a_help_text(tool, monkeypatch):
    import argparse
    import importlib

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", lambda self, argv=None: self)
    parser = importlib.import_module(f"sjconv.cli.{tool}").parse_args([])
    bare = [a.option_strings[-1] for a in parser._actions if a.option_strings and not a.help]
    assert bare == []


@pytest.mark.parametrize("typed, shown", [("200MB", ("200 MB", "190 MB", "180 MB")),
                                          ("0.125GiB", ("128 MiB", "181.2 MiB", "115.2 MiB")),
                                          ("0.1", ("100 MB", "190 MB", "90 MB"))])
def test_memory_budget_error_uses_the_users_unit(typed, shown):
    """The budget, the size one step needs and the share of the budget a run plans for (the
    safety factor, said, not hidden) all in the unit the budget was typed in."""
    from sjconv.errors import SjconvError
    from sjconv.memory import SAFETY, Footprint, parse_memory

    with pytest.raises(SjconvError) as info:
        Footprint(fixed=150 * 10**6, per_step=40 * 10**6, how="computed").chunk_for(parse_memory(typed), 4)
    budget, needed, usable = shown
    assert str(info.value).startswith(f"a memory budget of {budget} does not fit even one time step: it needs "
                                      f"{needed} (computed), and a run plans for at most {SAFETY:.0%} of the "
                                      f"budget ({usable};")


@pytest.mark.parametrize("built, into, hint", [
    (("resnet20", 10), "vgg16", "the checkpoint holds a resnet20 with 10 classes (--arch resnet20 --dataset cifar10)"),
    (("vgg16", 100), "vgg11", "the checkpoint holds a vgg16 with 100 classes (--arch vgg16 --dataset cifar100)"),
    (("resnet34", 7), "resnet18", "the checkpoint holds a resnet34 with 7 classes (--arch resnet34)"),
])
def test_architecture_mismatch_is_short_and_names_the_matching_arch(built, into, hint):
    import sjconv
    from sjconv.errors import CheckpointError

    arch, classes = built
    with pytest.raises(CheckpointError) as info:
        sjconv.load_checkpoint(sjconv.models.build(into), sjconv.models.build(arch, num_classes=classes).state_dict(),
                               arch=f"{into} (cifar10)")
    msg = str(info.value)
    assert msg.startswith(f"checkpoint does not match architecture '{into} (cifar10)'") and hint in msg
    assert "unexpected keys: " in msg and len(msg) < 450, (len(msg), msg)


def test_architecture_mismatch_of_an_unknown_layout_has_no_arch_hint():
    import sjconv
    from sjconv.errors import CheckpointError

    with pytest.raises(CheckpointError) as info:
        sjconv.load_checkpoint(sjconv.models.vgg11(), sjconv.models.small_cnn().state_dict())
    assert "holds a" not in str(info.value) and "unexpected keys: 0.bias" in str(info.value)
