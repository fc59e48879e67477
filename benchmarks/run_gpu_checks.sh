#!/usr/bin/env bash
# Every GPU check of sjconv in one go, sized to finish within 470 s on one H100/H200:
#
#   bash benchmarks/run_gpu_checks.sh OUT [STEP ...]
#
# STEP in: smoke tests kernels network step_modes (default: all, in that order). Per step, what it
# runs and its time limit (LIMITS below; the expected time on an H100 in brackets):
#   smoke       75 s  [~50 s] versions; kernel self-check per dtype (all 24 variants, NVRTC compile
#               included); [64, 4M] GB/s of the cupy kernel, the torch backend and SpikingJelly's IF
#               neuron in its fastest configuration next to the copy (fp32, bf16); the subnormal
#               (FTZ) case; spike-flip rates between 'm', chunked and 's' (VGG16, batch 32, T 16)
#               with the bound derived from their cause
#   tests      120 s  [~60-90 s] the gpu-marked tests (junit file kept also when cut)
#   kernels     60 s  [~30 s] neuron_kernels.py at [64, 4M], fp32 then bf16, 10 runs after 2 warm-up
#               (>= 90% / 80% of copy, >= 1.4x SpikingJelly's IF neuron at fp32 potential)
#   network     70 s  [~40 s] network.py: VGG16 batch 128, T 16 and 64, fp32 and bf16 channels_last,
#               3 runs after 1 warm-up (SNN 'm' <= 1.05x the ANN at batch T·N)
#   step_modes 145 s  [~100-130 s] step_modes.py: T 64, 256, 1024 under a 24 GB budget, 's', 'm',
#               chunked, budget; cupy then torch; 3 runs after 1 warm-up per row (chunked >= 90%
#               of 'm'; T = 1024 inside 24 GB with a peak as flat as T = 256's, both chunked)
#
# Every step has a time limit and the whole plan a total (SJCONV_GPU_CHECKS_SECONDS, default
# 470); a step gets what is left when it starts. At its limit a step is stopped with SIGINT
# (SIGKILL 15 s later): the benchmarks write their files after every row and pytest writes its
# junit file on SIGINT, so the report keeps everything measured before the cut and marks the step
# as cut. Python: $PYTHON, else python3, else python.
#
# OUT receives at most 8 files (4 today): DATE-GPU.json and DATE-GPU.md (everything: versions,
# each step's status and what it kept, the targets, the tables; copy both to benchmarks/results/
# to keep them), log.txt (all output), step_modes.png; the steps write into a temporary folder
# that is removed.
#
# Exit status: 0 every step passed; 1 a step failed or ran out of time; 2 usage; 3 no usable
# Python (none found, or it cannot import torch); 4 no CUDA GPU usable by torch (one line on
# stderr; when nvidia-smi sees a GPU that torch cannot use, the line says so and gives the fix).
set -u
usage="usage: bash benchmarks/run_gpu_checks.sh OUT [smoke tests kernels network step_modes]"
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
out=$1
shift
steps=${*:-smoke tests kernels network step_modes}
case $0 in */*) here=${0%/*} ;; *) here=. ;; esac   # no external command before Python is found
here=$(cd "$here" && pwd)
root=${here%/*}

py=${PYTHON:-}
if [ -z "$py" ]; then
  py=$(command -v python3 || command -v python || true)
fi
if [ -z "$py" ] || ! command -v "$py" >/dev/null 2>&1; then
  echo "run_gpu_checks: no Python found (looked for \$PYTHON, python3, python): set PYTHON=/path/to/python" >&2
  exit 3
fi
gpu_msg=$("$py" - 2>&1 <<'EOF'
import sys
try:
    import torch
except Exception as exc:
    print(f"run_gpu_checks: {sys.executable} cannot import torch ({type(exc).__name__}: {exc})")
    sys.exit(3)
if not torch.cuda.is_available():
    print(f"run_gpu_checks: no CUDA GPU visible to torch {torch.__version__} (CUDA build {torch.version.cuda}): "
          "these checks need one")
    sys.exit(4)
EOF
)
rc=$?
if [ $rc -ne 0 ]; then
  msg=$(printf '%s\n' "$gpu_msg" | tail -n 1)
  [ $rc -eq 4 ] || [ $rc -eq 3 ] || { msg="run_gpu_checks: $py failed to start ($msg)"; rc=3; }
  if [ $rc -eq 4 ] && command -v nvidia-smi >/dev/null 2>&1; then
    seen=$(nvidia-smi -L 2>/dev/null | grep -m 1 '^GPU' || true)
    if [ -n "$seen" ]; then   # a GPU is there: torch's CUDA build needs a newer driver (or is a CPU build)
      driver=$(nvidia-smi 2>/dev/null | grep -o 'Driver Version: [0-9.]*\|CUDA Version: [0-9.]*' | tr '\n' ' ')
      msg="${msg% these checks need one}; but nvidia-smi sees ${seen%% (UUID*} (${driver% }): torch cannot use it, so the driver is older than torch's CUDA build (or torch is a CPU build): update the NVIDIA driver, or install the torch (and cupy-cudaNNx) build for the CUDA version nvidia-smi shows"
    fi
  fi
  echo "$msg" >&2
  exit $rc
fi

for step in $steps; do
  case $step in smoke|tests|kernels|network|step_modes) ;; *) echo "unknown step '$step'; $usage" >&2; exit 2 ;; esac
done
mkdir -p "$out" || exit 2
parts=$(mktemp -d) || exit 2
trap 'rm -rf "$parts"' EXIT
log="$out/log.txt"
: > "$log"
total=${SJCONV_GPU_CHECKS_SECONDS:-470}
declare -A LIMITS=([smoke]=75 [tests]=120 [kernels]=60 [network]=70 [step_modes]=145)
start=$(date +%s)
export PYTHONUNBUFFERED=1
status=0
for step in $steps; do
  left=$(( total - ($(date +%s) - start) ))
  limit=${LIMITS[$step]}
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    echo "== $step: skipped, the plan's $total s are used up" | tee -a "$log"
    echo "skipped: out of time" > "$parts/$step.status"
    status=1
    continue
  fi
  echo "== $step (limit ${limit} s)" | tee -a "$log"
  t0=$(date +%s)
  case $step in
    smoke)
      cmd=("$py" "$here/gpu_smoke.py" --out "$parts/smoke") ;;
    tests)
      # SIGINT handled even where this script was started with it ignored (a background job):
      # pytest then stops, and writes its junit file
      cmd=("$py" -c 'import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); sys.exit(pytest.main(sys.argv[1:]))' \
           -q -rfEs -m gpu -p no:cacheprovider --junitxml "$parts/tests.xml" "$root/tests") ;;
    kernels)
      cmd=(bash -c "\"\$0\" \"\$1/neuron_kernels.py\" --shapes 64x4194304 --repeat 10 --warmup 2 --dtype fp32 --out \"\$2/kernels_fp32\" && \"\$0\" \"\$1/neuron_kernels.py\" --shapes 64x4194304 --repeat 10 --warmup 2 --dtype bf16 --out \"\$2/kernels_bf16\"" "$py" "$here" "$parts") ;;
    network)
      cmd=(bash -c "\"\$0\" \"\$1/network.py\" --T 16 64 --repeat 3 --warmup 1 --out \"\$2/network_fp32\" && \"\$0\" \"\$1/network.py\" --T 16 64 --repeat 3 --warmup 1 --dtype bf16 --channels-last --out \"\$2/network_bf16_cl\"" "$py" "$here" "$parts") ;;
    step_modes)
      cmd=("$py" "$here/step_modes.py" --memory-budget 24GB --T 64 256 1024 --backends cupy torch --repeat 3 --warmup 1 \
           --out "$parts/step_modes") ;;
  esac
  timeout --signal=INT --kill-after=15 "$limit" "${cmd[@]}" >> "$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - t0 ))
  case $rc in
    0) result="ok" ;;
    124) result="timed out after ${limit} s (stopped with SIGINT: what it wrote is kept)" ;;
    137) result="timed out after ${limit} s (killed 15 s after SIGINT: only what it wrote before is kept)" ;;
    *) result="failed (exit $rc)" ;;
  esac
  echo "$result, ${took} s" > "$parts/$step.status"
  echo "== $step: $result, ${took} s" | tee -a "$log"
  [ "$rc" -eq 0 ] || status=1
done
"$py" "$here/gpu_report.py" "$parts" "$out" "$log" 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
