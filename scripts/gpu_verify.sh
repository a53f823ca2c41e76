# The pending GPU verification, in the order that matters, for the next device slot.
# Run on the device machine from the repo root with carry [".whl", ".peer"]:
#     bash scripts/gpu_verify.sh            # ~8-9 min: split into the two calls below if needed
#     bash scripts/gpu_verify.sh tests      # 1) every bf16 test + check-env probes (correctness first)
#     bash scripts/gpu_verify.sh bench      # 2) per-area benchmarks, fla and SDPA in the same run
# Everything is written under $OUT (logs and JSON); the last lines printed are a summary.
set -u
source scripts/gpu_setup.sh
OUT=${OUT:-/tmp/flactl-gpu}
mkdir -p "$OUT"
what=${1:-all}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
summary=()
if [ "$what" = all ] || [ "$what" = tests ]; then
  # Kernels changed after their last GPU run (README's † marks) are all covered by these files.
  FLACTL_TEST_DEVICE=cuda timeout 330 python3 -m pytest -q tests/ops tests/modules tests/layers \
    -p no:cacheprovider 2>&1 | tail -n 40 > "$OUT/pytest_gpu.txt"
  summary+=("pytest bf16: $(tail -n 1 "$OUT/pytest_gpu.txt")")
  timeout 120 python3 -m flactl check-env --json > "$OUT/check-env.json"
  summary+=("check-env exit $? (probes in check-env.json)")
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
  timeout 150 python3 -u scripts/gpu_gla_family.py --out "$OUT/gla_family.json" > "$OUT/gla_family.txt" 2>&1
  summary+=("gla family bench exit $?")
  timeout 120 python3 -u scripts/gpu_delta.py --quick > "$OUT/delta.txt" 2>&1
  summary+=("delta bench exit $?")
  timeout 60 python3 -u scripts/gpu_recurrent.py --parts hgrn --out "$OUT/recurrent.json" > "$OUT/recurrent.txt" 2>&1
  summary+=("recurrent/hgrn bench exit $?")
fi
printf '%s\n' "${summary[@]}"
