#!/usr/bin/env bash
# Every GPU check of sjconv in one go: the gpu-marked tests, then the three benchmarks at the
# settings the issue targets are stated for (VGG16, batch 128, H100 or any CUDA GPU).
#
#   bash benchmarks/run_gpu_checks.sh OUT [STEP ...]      STEP in: tests kernels network step_modes
#
# Writes OUT/tests.log and OUT/<benchmark>.{json,md[,png]}. A failing step does not stop the
# others; the exit status is that of the last failing step (0 when all passed).
set -u
out=${1:?usage: bash benchmarks/run_gpu_checks.sh OUT [tests kernels network step_modes]}
shift
steps=${*:-tests kernels network step_modes}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible: these checks need one')" || exit 2
status=0
for step in $steps; do
  echo "== $step"
  case $step in
    tests)      python -m pytest -q -m gpu "$here/../tests" 2>&1 | tee "$out/tests.log"; rc=${PIPESTATUS[0]} ;;
    kernels)    python "$here/neuron_kernels.py" --out "$out/neuron_kernels"; rc=$? ;;
    network)    python "$here/network.py" --out "$out/network"; rc=$? ;;
    step_modes) python "$here/step_modes.py" --memory-budget 24GB --out "$out/step_modes"; rc=$? ;;
    *)          echo "unknown step '$step': use tests, kernels, network or step_modes" >&2; rc=2 ;;
  esac
  [ "$rc" -eq 0 ] || status=$rc
done
exit $status
