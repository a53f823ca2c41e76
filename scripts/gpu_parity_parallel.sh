# fla checkpoint -> flactl logits parity for every family, one process per family in parallel.
# A cold machine spends most of the time compiling (fla's autotuning, then ours), which is CPU-bound and
# serial inside one process; the device machine has 16 cores, so the families run side by side.
#     source scripts/gpu_setup.sh; bash scripts/gpu_parity_parallel.sh     # -> $OUT/models_parity.json
# All 16 families finished in one 10-minute call on 2026-11-22 (PARITY_JOBS=16, PARITY_TIMEOUT=560; 280 s was
# too short for 9 of them). Run nothing timed beside it: a module benchmark that shared the GPU with these
# processes that day read copy bandwidth at 257 GB/s (10x low) and was discarded.
set -u
OUT=${OUT:-/tmp/flactl-gpu}
jobs=${PARITY_JOBS:-8}
tmp=$(mktemp -d)
fams=$(python3 -c "import sys; sys.path.insert(0, 'scripts'); import gpu_models as g; print(' '.join(g.PARITY))")
printf '%s\n' $fams | xargs -P "$jobs" -I{} sh -c \
  "FAMILIES={} timeout ${PARITY_TIMEOUT:-420} python3 scripts/gpu_models.py parity --deadline 1e9 --out $tmp/{} > $tmp/{}.log 2>&1; echo {} exit \$?"
python3 - "$tmp" "$OUT/models_parity.json" <<'PY'
import json, os, sys
tmp, out = sys.argv[1:]
merged, env = {}, None
for fam in sorted(os.listdir(tmp)):
    p = os.path.join(tmp, fam, "models_parity.json")
    if os.path.isdir(os.path.join(tmp, fam)):
        if os.path.exists(p):
            d = json.load(open(p))
            env = d["env"]
            merged.update(d["results"])
        else:
            log = open(os.path.join(tmp, fam + ".log")).read()
            merged[fam] = {"error": "no result (timeout or crash): " + log[-600:]}
json.dump({"env": env, "results": merged}, open(out, "w"), indent=1)
sys.path.insert(0, "scripts")
import gpu_models
gpu_models.summary("parity", merged, env)
PY
