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
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed"] = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
                        if case.find("failure") is not None or case.find("error") is not None]
    return counts


def _rows(payload):
    return payload.get("rows", []) if isinstance(payload, dict) else []


def _target(name, value, ok, figure):
    return {"target": name, "measured": figure if value is not None else "not measured",
            "met": None if value is None else bool(ok)}


def targets(results) -> list:
    """The issue's targets, each with the measured figure (None where the run did not measure it)."""
    found = []
    for dtype, share in (("fp32", 0.9), ("bf16", 0.8)):
        rows = _rows(results.get(f"kernels_{dtype}"))
        cupy = next((r for r in rows if r.get("impl") == "sjconv cupy" and r.get("node") == "qcfs"
                     and r.get("status") == "ok"), None)
        value = cupy and cupy.get("of_copy")
        found.append(_target(f"cupy IF kernel [64, 4M] {dtype} >= {share:.0%} of copy bandwidth", value,
                             value is not None and value >= share, f"{value:.1%}" if value is not None else None))
        speed = cupy and cupy.get("speedup_vs_sj_ifnode")
        found.append(_target(f"cupy IF kernel [64, 4M] {dtype} >= 1.7x SpikingJelly IFNode", speed,
                             speed is not None and speed >= 1.7, f"{speed:.2f}x" if speed is not None else None))
    for key, label in (("network_fp32", "fp32"), ("network_bf16_cl", "bf16 channels_last")):
        for row in _rows(results.get(key)):
            if row.get("model") == "SNN 'm' cupy":
                value = row.get("vs_ann")
                found.append(_target(f"VGG16 'm' cupy T={row['T']} {label} <= 1.05x the ANN at batch T·N", value,
                                     value is not None and value <= 1.05,
                                     f"{value:.3f}x" if value is not None else None))
    sm = _rows(results.get("step_modes"))
    for row in sm:
        if row.get("mode") == "chunked" and row.get("status") == "ok":
            m = next((r for r in sm if r.get("mode") == "m" and r["backend"] == row["backend"]
                      and r["T"] == row["T"] and r.get("status") == "ok"), None)
            value = m and m["ms_per_image"] / row["ms_per_image"]
            found.append(_target(f"chunked ({row['backend']}, T={row['T']}) >= 90% of 'm' speed", value,
                                 value is not None and value >= 0.9, f"{value:.1%}" if value is not None else None))
    budget = (results.get("step_modes") or {}).get("memory_budget_bytes")
    for backend in sorted({r["backend"] for r in sm}):
        ok = {r["T"]: r for r in sm if r["backend"] == backend and r.get("mode") == "budget" and r.get("status") == "ok"}
        big, small = ok.get(1024), ok.get(64)
        value = big and big.get("peak_gib")
        flat = value is not None and small is not None and small.get("peak_gib") and value <= 1.1 * small["peak_gib"]
        fits = value is not None and budget is not None and value * GIB <= budget
        figure = (f"{value:.2f} GiB at T=1024" + (f", {small['peak_gib']:.2f} GiB at T=64" if small else "")
                  if value is not None else None)
        found.append(_target(f"T=1024 ({backend}) inside the budget with a flat peak", value, fits and flat, figure))
    return found


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
    found = targets(results)
    gpu = versions.get("gpu") or "unknown-gpu"
    stamp = datetime.date.today().isoformat() + "-" + re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
    payload = {"date": datetime.date.today().isoformat(), "versions": versions, "steps": status, "tests": tests,
               "targets": found, "smoke": {k: v for k, v in smoke.items() if k != "versions"}, **results}
    md = [f"# sjconv GPU checks, {payload['date']}, {gpu}", "",
          f"Made by `bash benchmarks/run_gpu_checks.sh` (all output: {os.path.basename(log)} of the same run).", "",
          "## Versions",
          markdown_table([versions], list(versions)) if versions else "(no smoke step)", "", "## Steps",
          markdown_table([{"step": k, "status": v} for k, v in status.items()], ["step", "status"]), ""]
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
