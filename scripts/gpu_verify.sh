# The pending GPU verification, in the order that matters, for the next device slot.
# Run on the device machine from the repo root with carry [".whl", ".peer"]:
#     bash scripts/gpu_verify.sh            # ~8-9 min: split into the two calls below if needed
#     bash scripts/gpu_verify.sh tests      # 1) every bf16 test + check-env probes (correctness first)
#     bash scripts/gpu_verify.sh bench      # 2) per-area benchmarks, fla and SDPA in the same run
#     bash scripts/gpu_verify.sh split      # 3) the GLA-family tests with the split state walk forced on
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
  # Triton compilation is CPU-bound and dominates a cold run (~2.5 s a test serially): spread the tests
  # over worker processes that share the GPU and the on-disk kernel cache.
  FLACTL_TEST_DEVICE=cuda timeout ${FLACTL_GPU_TEST_TIMEOUT:-330} python3 -m pytest -v -n ${FLACTL_GPU_WORKERS:-12} \
    --timeout 200 --durations=25 --tb=short tests/ops tests/modules tests/layers \
    -p no:cacheprovider > "$OUT/pytest_gpu.txt" 2>&1
  summary+=("pytest bf16: $(tail -n 1 "$OUT/pytest_gpu.txt")")
  timeout 120 python3 -m flactl check-env --json > "$OUT/check-env.json"
  summary+=("check-env exit $? (probes in check-env.json)")
fi
if [ "$what" = all ] || [ "$what" = split ]; then
  # Before making the split walk (chunk_h MODE 1/2) the default for small N*H: every GLA-family test
  # with it forced on (test_fused_and_split_walks covers both walks; this covers every other case).
  FLACTL_CHUNK_SPLIT=1 FLACTL_TEST_DEVICE=cuda timeout 300 python3 -m pytest -q -n ${FLACTL_GPU_WORKERS:-12} \
    --timeout 200 tests/ops/test_simple_gla.py tests/ops/test_retention.py tests/ops/test_linear_attn.py \
    tests/ops/test_gla.py -p no:cacheprovider > "$OUT/pytest_split.txt" 2>&1
  summary+=("pytest bf16 split walk: $(tail -n 1 "$OUT/pytest_split.txt")")
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
  # Cold-machine autotuning (ours and fla's) dominates: on 2026-11-22 the GLA-family bench had done one
  # of its 12 rows after 260 s. Give it most of a call of its own; the delta bench without fla ran in 26 s.
  # fla side by side costs most of a 10-minute call on a cold machine (its autotuning: 2 rows in 326 s on
  # 2026-11-22); without it the whole GLA-family table takes ~100 s. WITH_FLA=1 to include it.
  nofla="--no-fla"; [ "${WITH_FLA:-0}" = 1 ] && nofla=""
  timeout ${FLACTL_GLA_BENCH_TIMEOUT:-480} python3 -u scripts/gpu_gla_family.py --skip-correctness $nofla \
    --out "$OUT/gla_family.json" > "$OUT/gla_family.txt" 2>&1
  summary+=("gla family bench exit $?")
  timeout 120 python3 -u scripts/gpu_delta.py --skip-checks --skip-decode $nofla > "$OUT/delta.txt" 2>&1
  summary+=("delta bench exit $?")
  # decode step of the gated delta rule (issue 4 targets: B=256 >= 85% of copy BW, B=1 <= 30 us, graph)
  timeout 90 python3 -u scripts/gpu_delta.py --skip-checks --skip-bench --no-fla-chunk > "$OUT/delta_decode.txt" 2>&1
  summary+=("delta decode bench exit $?")
  # kernel-level profile of one fwd+bwd step per op (where the time goes; host gap)
  timeout 90 python3 -u scripts/gpu_profile.py --out "$OUT/profile.json" > "$OUT/profile.txt" 2>&1
  summary+=("profile exit $?")
  timeout 60 python3 -u scripts/gpu_recurrent.py --parts hgrn --out "$OUT/recurrent.json" > "$OUT/recurrent.txt" 2>&1
  summary+=("recurrent/hgrn bench exit $?")
fi
printf '%s\n' "${summary[@]}"
