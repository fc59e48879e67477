#!/usr/bin/env python3
"""Pack what ``run_gpu_checks.sh`` wrote into one dated results pair, ready to commit.

    python3 benchmarks/gpu_report.py PARTS OUT LOG

PARTS holds the steps' own files (``smoke.json``, ``kernels_fp32.json``, ``kernels_bf16.json``,
``network_fp32.json``, ``network_bf16_cl.json``, ``step_modes.json``/``.png``, ``tests.xml``,
``STEP.status``); any may be missing (a step skipped or failed). Writes into OUT:

- ``DATE-GPU.json``: versions (GPU, driver, torch, CUDA, cuDNN, CuPy, NVRTC, SpikingJelly,
  sjconv commit), each step's status, the gpu-test counts, every benchmark's payload, and the
  issue targets with the measured figure and whether it is met;
- ``DATE-GPU.md``: the same as markdown tables;
- ``step_modes.png`` (copied when present).

Copy the pair to ``benchmarks/results/`` to keep a run. The targets are figures to read, not
assertions: this script fails only when it cannot write its files.

A step stopped by its time limit (SIGINT) keeps what it wrote: the benchmarks write their files
after every row (``complete`` false until the end, ``cut`` saying why), pytest its junit file.
The report marks such a step "cut", names the rows it kept, and a target whose figure was not
reached before the cut reads "not measured (... cut ...)".
"""

import datetime
import json
import os
import re
import shutil
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import markdown_table  # noqa: E402

STEPS = ("smoke", "tests", "kernels", "network", "step_modes")
BENCHMARKS = ("kernels_fp32", "kernels_bf16", "network_fp32", "network_bf16_cl", "step_modes")
GIB = 2**30


def _load(parts, name):
    path = os.path.join(parts, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _tests(parts):
    path = os.path.join(parts, "tests.xml")
    if not os.path.exists(path):
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:   # a run killed while writing it
        return {"tests": 0, "passed": 0, "failures": 0, "errors": 0, "skipped": 0,
                "failed": [f"(junit file unreadable: {exc})"]}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed"] = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
                        if case.find("failure") is not None or case.find("error") is not None]
    return counts


def _rows(payload):
    return payload.get("rows", []) if isinstance(payload, dict) else []


#: the figures the targets ask for
COPY_SHARE = {"fp32": 0.9, "bf16": 0.8}
SJ_SPEEDUP = 1.4
ANN_RATIO = 1.05
CHUNKED_SHARE = 0.9
#: a peak is flat when the larger T's is at most this much above the smaller T's
FLAT = 1.1


def _target(name, value, ok, figure, missing="not measured"):
    return {"target": name, "measured": figure if value is not None else missing,
            "met": None if value is None else bool(ok)}


def _missing(payload) -> str:
    """Why a figure is absent: the step's file is missing, or the step was cut before it."""
    if payload is None:
        return "not measured (no results: step skipped, failed or cut before its first row)"
    if not payload.get("complete", True):
        return f"not measured (step cut after {len(_rows(payload))} rows: {payload.get('cut', 'timeout')})"
    return "not measured"


def _sj_target(dtype, cupy, payload):
    """cupy vs SpikingJelly's IF neuron in its fastest configuration at equal precision (float32
    potential and arithmetic: the SpikingJelly row of neuron_kernels.py)."""
    rows = _rows(payload)
    sj = next((r for r in rows if r.get("impl", "").startswith("SpikingJelly IFNode") and r.get("status") == "ok"),
              None)
    speed = cupy.get("speedup_vs_sj_ifnode") if cupy and sj else None
    label = f"cupy IF kernel [64, 4M] {dtype} >= {SJ_SPEEDUP}x SpikingJelly's IF neuron at fp32 potential"
    figure = f"{speed:.2f}x ({sj.get('sj_impl')})" if speed is not None else None
    return _target(label, speed, speed is not None and speed >= SJ_SPEEDUP, figure, _missing(payload))


def targets(results) -> list:
    """The issue's targets, each with the measured figure (None where the run did not measure it)."""
    found = []
    for dtype, share in COPY_SHARE.items():
        payload = results.get(f"kernels_{dtype}")
        rows = _rows(payload)
        cupy = next((r for r in rows if r.get("impl") == "sjconv cupy" and r.get("node") == "qcfs"
                     and r.get("status") == "ok"), None)
        value = cupy and cupy.get("of_copy")
        found.append(_target(f"cupy IF kernel [64, 4M] {dtype} >= {share:.0%} of copy bandwidth", value,
                             value is not None and value >= share, f"{value:.1%}" if value is not None else None,
                             _missing(payload)))
        found.append(_sj_target(dtype, cupy, payload))
    for key, label in (("network_fp32", "fp32"), ("network_bf16_cl", "bf16 channels_last")):
        payload = results.get(key)
        snn_rows = [r for r in _rows(payload) if r.get("model") == "SNN 'm' cupy"]
        arch = {"vgg16": "VGG16"}.get((payload or {}).get("arch", "vgg16"), (payload or {}).get("arch"))
        for row in snn_rows:
            value = row.get("vs_ann")
            found.append(_target(f"{arch} 'm' cupy T={row['T']} {label} <= {ANN_RATIO}x the ANN at batch T·N", value,
                                 value is not None and value <= ANN_RATIO,
                                 f"{value:.3f}x" if value is not None else None, row.get("status") or "not measured"))
        if not snn_rows:
            found.append(_target(f"VGG16 'm' cupy {label} <= {ANN_RATIO}x the ANN at batch T·N", None, False, None,
                                 _missing(payload)))
    payload = results.get("step_modes")
    sm = _rows(payload)
    for row in sm:
        if row.get("mode") == "chunked" and row.get("status") == "ok":
            m = next((r for r in sm if r.get("mode") == "m" and r["backend"] == row["backend"]
                      and r["T"] == row["T"] and r.get("status") == "ok"), None)
            value = m and m["ms_per_image"] / row["ms_per_image"]
            found.append(_target(f"chunked ({row['backend']}, T={row['T']}) >= {CHUNKED_SHARE:.0%} of 'm' speed",
                                 value, value is not None and value >= CHUNKED_SHARE,
                                 f"{value:.1%} (medians of {row.get('runs', 1)} runs)" if value is not None else None,
                                 "not measured ('m' did not run: " + next(
                                     (r.get("status", "?") for r in sm if r.get("mode") == "m"
                                      and r["backend"] == row["backend"] and r["T"] == row["T"]), "no row") + ")"))
    budget = (payload or {}).get("memory_budget_bytes")
    for backend in sorted({r["backend"] for r in sm}) or ["cupy"]:
        found.append(_flat_peak(backend, sm, budget, payload))
    return found


def _flat_peak(backend, sm, budget, payload):
    """The largest T inside the budget with a flat peak: judged between the budget rows of the two
    largest T that both ran in chunks (chunk < T: the memory then holds one chunk, whatever T);
    a run that fits in one chunk says nothing about flatness. The peak must also be <= the budget."""
    ok = {r["T"]: r for r in sm if r["backend"] == backend and r.get("mode") == "budget" and r.get("status") == "ok"}
    chunked = sorted(T for T, r in ok.items() if r.get("chunk") and r["chunk"] < T and r.get("peak_gib") is not None)
    top = max(ok) if ok else None
    name = f"T={top if top else 'max'} ({backend}) inside the budget with a flat peak (budget rows, both chunked)"
    if top is None or ok[top].get("peak_gib") is None:
        return _target(name, None, False, None, _missing(payload) if not ok else "not measured (no peak memory)")
    big = ok[top]
    fits = budget is not None and big["peak_gib"] * GIB <= budget
    others = [T for T in chunked if T < top]
    if top not in chunked or not others:
        figure = (f"{big['peak_gib']:.2f} GiB at T={top} (chunk {big.get('chunk')}), "
                  f"{'within' if fits else 'OVER'} the budget; flatness not judged: no two chunked runs")
        return _target(name, None, False, None, figure)
    small = ok[others[-1]]
    flat = big["peak_gib"] <= FLAT * small["peak_gib"]
    figure = (f"{big['peak_gib']:.2f} GiB at T={top} (chunk {big['chunk']}) vs {small['peak_gib']:.2f} GiB at "
              f"T={small['T']} (chunk {small['chunk']}); budget {budget / GIB:.1f} GiB" if budget else "")
    return _target(name, big["peak_gib"], fits and flat, figure)


def mode_flip_summary(smoke) -> list:
    """The spike-flip rates between modes (smoke step) as a target: the first layer's flipped
    neurons within the bound derived from their cause (gpu_smoke.flip_bound), with the rates."""
    rows = smoke.get("mode_flips") if isinstance(smoke.get("mode_flips"), list) else []
    modes = [r for r in rows if "within_bound" in r]
    if not modes:
        return [_target("spike flips between modes within the derived bound", None, False, None,
                        "not measured (smoke step: " + (str(smoke.get("cut") or "no mode_flips section")) + ")")]
    rates = ", ".join(f"{r['backend']} {r['mode']}: {r['flip_rate']:.3%}" for r in modes)
    return [_target("spike flips between modes within the derived bound (first layer)", 1.0,
                    all(r["within_bound"] for r in modes), rates)]


def _step_table(status, results, smoke, tests):
    """One row per step: its status, and for a step cut by its time limit what it kept."""
    files = {"smoke": [smoke], "kernels": [results.get("kernels_fp32"), results.get("kernels_bf16")],
             "network": [results.get("network_fp32"), results.get("network_bf16_cl")],
             "step_modes": [results.get("step_modes")]}
    table = []
    for step, text in status.items():
        kept = ""
        parts = [p for p in files.get(step, []) if p]
        if step == "tests":
            ran = f"junit file: {tests['tests']} tests" if tests else "no junit file"
            kept = ran + (" ran before the cut" if tests and text.startswith("timed out") else "")
        elif parts:
            cut = [p for p in parts if not p.get("complete", True)]
            rows = sum(len(_rows(p)) for p in parts)
            kept = f"{rows} rows" + (f", CUT ({cut[0].get('cut', 'timeout')})" if cut else ", complete")
            if step == "smoke":
                kept = "sections: " + ", ".join(k for k in ("self_check", "ftz", "bandwidth", "mode_flips")
                                                 if isinstance(smoke.get(k), list)) + \
                       (f", CUT ({smoke.get('cut')})" if smoke.get("cut") else "")
        elif step != "tests":
            kept = "nothing written"
        table.append({"step": step, "status": text, "kept": kept})
    return table


def main(argv=None):
    parts, out, log = (argv or sys.argv[1:])[:3]
    smoke = _load(parts, "smoke") or {}
    versions = smoke.get("versions") or {}
    results = {name: _load(parts, name) for name in BENCHMARKS}
    status = {}
    for step in STEPS:
        path = os.path.join(parts, step + ".status")
        if os.path.exists(path):
            with open(path) as f:
                status[step] = f.read().strip()
    tests = _tests(parts)
    found = targets(results) + mode_flip_summary(smoke)
    gpu = versions.get("gpu") or "unknown-gpu"
    stamp = datetime.date.today().isoformat() + "-" + re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
    payload = {"date": datetime.date.today().isoformat(), "versions": versions, "steps": status, "tests": tests,
               "targets": found, "smoke": {k: v for k, v in smoke.items() if k != "versions"}, **results}
    md = [f"# sjconv GPU checks, {payload['date']}, {gpu}", "",
          f"Made by `bash benchmarks/run_gpu_checks.sh` (all output: {os.path.basename(log)} of the same run).", "",
          "## Versions",
          markdown_table([versions], list(versions)) if versions else "(no smoke step)", "", "## Steps",
          markdown_table(_step_table(status, results, smoke, tests), ["step", "status", "kept"]), ""]
    if tests:
        md += ["## gpu-marked tests", markdown_table([tests], ["tests", "passed", "failures", "errors", "skipped"])]
        md += [f"- failed: `{name}`" for name in tests["failed"]] + [""]
    md += ["## Targets", markdown_table(found, ["target", "measured", "met"]), ""]
    for name in ("self_check", "ftz", "bandwidth", "mode_flips"):
        rows = smoke.get(name)
        if isinstance(rows, list) and rows:
            md += [f"## smoke: {name}", markdown_table(rows, list(dict.fromkeys(k for r in rows for k in r))), ""]
    for name, payload_part in results.items():
        rows = _rows(payload_part)
        if rows:
            md += [f"## {name}", markdown_table(rows, list(dict.fromkeys(k for r in rows for k in r))), ""]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, stamp + ".json"), "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, stamp + ".md"), "w") as f:
        f.write("\n".join(md) + "\n")
    png = os.path.join(parts, "step_modes.png")
    if os.path.exists(png):
        shutil.copy(png, os.path.join(out, "step_modes.png"))
    print(f"results: {os.path.join(out, stamp)}.json and .md (copy both to benchmarks/results/ to keep them)")
    for t in found:
        print(f"  {'met' if t['met'] else 'NOT met' if t['met'] is False else 'n/a'}: {t['target']}: {t['measured']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
