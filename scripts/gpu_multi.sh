# Multi-GPU checks of `flactl train` (FSDP2) and `flactl eval` under accelerate, for the 2-GPU machine.
# Run on the device machine (kind nvidia-h200-x2) from the repo root with carry [".whl"]:
#     bash scripts/gpu_multi.sh
# 1) gla-340m recipe on generated data, FSDP2 on 2 GPUs, 20 steps, a checkpoint every 10 (run A).
# 2) a copy of run A with its step-20 checkpoint removed, rerun: resumes at step 10 on both ranks;
#    steps 11-20 must repeat run A's losses.
# 3) the same recipe on 1 GPU, 10 steps: with data.streams fixed it reads the same global batches as
#    run A, so its losses must equal A's up to reduction order / bf16 non-determinism.
# 4) run A's exported model evaluated with lm-eval on 1 and on 2 GPUs (bundled offline tasks).
# Logs and JSON under $OUT; a summary is printed last.
set -u
source scripts/gpu_setup.sh
OUT=${OUT:-/tmp/flactl-multi}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
F="python3 -m flactl"
R=/tmp/runs
SETS=(--set data.sources.0.type=generated --set data.num_workers=2 --set batch.micro_batch=4
      --set batch.tokens_per_step=32768 --set checkpoint.every=10 --set checkpoint.keep_last=3
      --set metrics.log_every=1 --set train.distributed=fsdp2 --set schedule.warmup_steps=5
      --set data.streams=4)
timeout 200 $F train recipes/gla-340m.toml --num-gpus 2 "${SETS[@]}" --set run.dir=$R/a --set run.steps=20 \
  > "$OUT/train_a.txt" 2>&1; echo "train A (2 GPU) exit $?" | tee -a "$OUT/summary.txt"
cp -r $R/a $R/b && rm -rf $R/b/checkpoints/step-00000020 $R/b/final
python3 - "$R/b/log.jsonl" <<'PY'
import json, sys  # keep only the log records up to the checkpoint the resumed run starts from
p = sys.argv[1]; rows = [l for l in open(p) if json.loads(l).get("step", 0) <= 10]
open(p, "w").writelines(rows)
PY
timeout 150 $F train recipes/gla-340m.toml --num-gpus 2 "${SETS[@]}" --set run.dir=$R/b --set run.steps=20 \
  > "$OUT/train_b.txt" 2>&1; echo "train B (2 GPU resumed at 10) exit $?" | tee -a "$OUT/summary.txt"
timeout 120 $F train recipes/gla-340m.toml "${SETS[@]}" --set run.dir=$R/c --set run.steps=10 \
  > "$OUT/train_c.txt" 2>&1; echo "train C (1 GPU) exit $?" | tee -a "$OUT/summary.txt"
cp $R/a/log.jsonl "$OUT/log_a.jsonl"; cp $R/b/log.jsonl "$OUT/log_b.jsonl"; cp $R/c/log.jsonl "$OUT/log_c.jsonl" 2>/dev/null
for n in 1 2; do
  timeout 100 $F eval $R/a/final --tasks flactl_tiny_mc,flactl_tiny_ppl --offline --num-gpus $n -b 4 \
    --dtype bfloat16 -o "$OUT/eval_${n}gpu.json" > "$OUT/eval_${n}gpu.txt" 2>&1
  echo "eval $n GPU exit $?" | tee -a "$OUT/summary.txt"
done
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def losses(n):
    try:
        return {r["step"]: r["loss"] for r in map(json.loads, open(os.path.join(out, f"log_{n}.jsonl"))) if "loss" in r}
    except OSError:
        return {}
a, b, c = losses("a"), losses("b"), losses("c")
res = {"a": a, "b": b, "c": c,
       "resume_max_abs_diff_11_20": max((abs(a[s] - b[s]) for s in range(11, 21) if s in a and s in b), default=None),
       "one_vs_two_gpu_max_abs_diff_1_10": max((abs(a[s] - c[s]) for s in range(1, 11) if s in a and s in c), default=None)}
for n in (1, 2):
    try:
        res[f"eval_{n}gpu"] = json.load(open(os.path.join(out, f"eval_{n}gpu.json")))["results"]
    except Exception as e:  # noqa: BLE001
        res[f"eval_{n}gpu"] = repr(e)
json.dump(res, open(os.path.join(out, "multi.json"), "w"), indent=1)
print(json.dumps({k: v for k, v in res.items() if k not in ("a", "b", "c")}, indent=1)[:3000])
PY
cat "$OUT/summary.txt"
