#!/usr/bin/env bash
# Every GPU check of sjconv in one go, sized to finish within 8 minutes on one H100/H200:
#
#   bash benchmarks/run_gpu_checks.sh OUT [STEP ...]
#
# STEP in: smoke tests kernels network step_modes (default: all, in that order)
#   smoke       versions, kernel self-check per dtype, [64, 4M] kernel GB/s next to the copy
#               bandwidth (fp32, bf16), the subnormal (FTZ) case, spike-flip rate between modes
#   tests       the gpu-marked tests
#   kernels     neuron_kernels.py at [64, 4M] in fp32 and bf16 (>= 90% / 80% of copy, >= 1.7x IFNode)
#   network     network.py: VGG16 batch 128, T 16 and 64, fp32 and bf16 channels_last (<= 1.05x the ANN)
#   step_modes  step_modes.py: T 4 ... 1024 under a 24 GB budget (chunked >= 90% of 'm', flat peak)
#
# Every step has a time limit (seconds, from LIMITS below) and the whole plan a total
# (SJCONV_GPU_CHECKS_SECONDS, default 470); a step gets what is left when it starts.
# Python: $PYTHON, else python3, else python.
#
# OUT receives at most 5 files: DATE-GPU.json and DATE-GPU.md (everything: versions, each step's
# status and tables; copy both to benchmarks/results/ to keep them), log.txt (all output),
# step_modes.png, and nothing else (the steps write into a temporary folder that is removed).
#
# Exit status: 0 every step passed; 1 a step failed or ran out of time; 2 usage; 3 no usable
# Python (none found, or it cannot import torch); 4 no CUDA GPU visible (one line on stderr).
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
declare -A LIMITS=([smoke]=90 [tests]=120 [kernels]=80 [network]=100 [step_modes]=80)
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
      cmd=("$py" -m pytest -q -rfEs -m gpu -p no:cacheprovider --junitxml "$parts/tests.xml" "$root/tests") ;;
    kernels)
      cmd=(bash -c "\"\$0\" \"\$1/neuron_kernels.py\" --shapes 64x4194304 --repeat 10 --warmup 2 --dtype fp32 --out \"\$2/kernels_fp32\" && \"\$0\" \"\$1/neuron_kernels.py\" --shapes 64x4194304 --repeat 10 --warmup 2 --dtype bf16 --out \"\$2/kernels_bf16\"" "$py" "$here" "$parts") ;;
    network)
      cmd=(bash -c "\"\$0\" \"\$1/network.py\" --T 16 64 --repeat 3 --warmup 1 --out \"\$2/network_fp32\" && \"\$0\" \"\$1/network.py\" --T 16 64 --repeat 3 --warmup 1 --dtype bf16 --channels-last --out \"\$2/network_bf16_cl\"" "$py" "$here" "$parts") ;;
    step_modes)
      cmd=("$py" "$here/step_modes.py" --memory-budget 24GB --T 4 16 64 256 1024 --out "$parts/step_modes") ;;
  esac
  timeout --kill-after=10 "$limit" "${cmd[@]}" >> "$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - t0 ))
  case $rc in
    0) result="ok" ;;
    124|137) result="timed out after ${limit} s" ;;
    *) result="failed (exit $rc)" ;;
  esac
  echo "$result, ${took} s" > "$parts/$step.status"
  echo "== $step: $result, ${took} s" | tee -a "$log"
  [ "$rc" -eq 0 ] || status=1
done
"$py" "$here/gpu_report.py" "$parts" "$out" "$log" 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
