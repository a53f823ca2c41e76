"""`make demo`: the whole lifecycle on a CPU, in a few minutes, with nothing downloaded.

    check-env -> op probes -> init a tiny GLA model -> train it on the built-in generated corpus
    -> generate (with the cached-vs-full --check) -> eval on bundled local tasks (lm-eval) and
    perplexity -> bench one op -> convert the last trainer checkpoint to a model directory

Every step is the real `flactl` command (run as a subprocess, exactly as a user would type it) and
is printed before it runs. Outputs go to $FLACTL_DEMO_DIR (default ./demo-out); the summary at the
end lists where everything was written. $FLACTL_DEMO_STEPS sets the training steps (default: the
recipe's).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(os.environ.get("FLACTL_DEMO_DIR", "demo-out"))
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-cpu.toml"
TASKS = Path(__file__).resolve().parent / "eval" / "tasks"


def _flactl(*args: str, stdout=None) -> int:
    cmd = [sys.executable, "-m", "flactl", *map(str, args)]
    print(f"\n$ flactl {shlex.join(map(str, args))}", flush=True)
    return subprocess.call(cmd, stdout=stdout)


def _probes() -> list[str]:
    print("\n== op families on the CPU (torch path, float32) vs their references ==", flush=True)
    import torch

    from flactl.ops.probes import run_probes
    from flactl.ops.utils import force_backend

    with force_backend("torch"):
        results = run_probes(device="cpu", dtype=torch.float32)
    for r in results:
        worst = "-" if r["max_err"] is None else f"{r['max_err']:.1e}"
        print(f"  {r['name']:<36} {'PASS' if r['ok'] else 'FAIL'}  worst rel. err {worst}  {r['seconds']:.2f}s")
    if not results:
        print("  (no op families registered yet)")
    return [r["name"] for r in results if not r["ok"]]


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    written: dict[str, Path] = {}
    failed: list[str] = []

    def step(name: str, rc: int, ok=(0,)) -> bool:
        if rc not in ok:
            failed.append(f"{name} (exit {rc})")
            return False
        return True

    rc = _flactl("check-env", "--no-probe")
    step("check-env", rc, ok=(0, 1))  # 1 = warnings on this machine, not a demo failure
    env_json = OUT / "check-env.json"
    with open(env_json, "w") as f:
        subprocess.call([sys.executable, "-m", "flactl", "check-env", "--json", "--no-probe"], stdout=f)
    written["environment report"] = env_json
    failed += [f"probe {n}" for n in _probes()]

    # 1. init: a model directory from the tiny recipe's model section
    init_dir = OUT / "model-init"
    if step("init", _flactl("init", "--preset", RECIPE, "-o", init_dir, "--force")):
        written["initialised model"] = init_dir

    # 2. train it briefly on the built-in generated corpus (rerun = resume: start clean)
    run_dir = OUT / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    args = ["train", RECIPE, "--set", f"run.dir={run_dir}", "--set", f"model.path={init_dir}",
            "--set", "model.family=", "--set", "model.config={}"]
    if os.environ.get("FLACTL_DEMO_STEPS"):
        args += ["--set", f"run.steps={int(os.environ['FLACTL_DEMO_STEPS'])}"]
    trained = step("train", _flactl(*args)) and (run_dir / "final" / "config.json").is_file()
    model = run_dir / "final" if trained else init_dir
    if trained:
        written["trained model"] = model
        written["training log"] = run_dir / "log.jsonl"

    # 3. generate, checking cached decoding against a full forward pass
    step("generate", _flactl("generate", model, "--prompt", "the big cat", "--max-new-tokens", "48", "--check"))

    # 4. evaluate: lm-eval on the bundled local tasks (offline), and perplexity on local text
    eval_json = OUT / "eval.json"
    if step("eval", _flactl("eval", model, "--tasks", "flactl_tiny_mc,flactl_tiny_ppl", "--offline",
                            "--max-length", "512", "--batch-size", "4", "-o", eval_json)):
        written["lm-eval results"] = eval_json
    ppl_json = OUT / "ppl.json"
    if step("eval --ppl", _flactl("eval", model, "--ppl", TASKS / "tiny_ppl.json", "--chunk", "64",
                                  "--bucket", "64", "-o", ppl_json)):
        written["perplexity"] = ppl_json

    # 5. bench one op (torch path on a CPU; on a GPU the same command times the Triton kernels)
    bench_json, bench_png = OUT / "bench-gla.json", OUT / "bench-gla.png"
    if step("bench", _flactl("bench", "gla", "--mode", "fwd", "-T", "64,128,256", "-B", "1", "-H", "2", "-D", "32",
                             "--rep-ms", "200", "-o", bench_json, "--plot", bench_png)):
        written["benchmark"] = bench_json
        written["benchmark plot"] = bench_png

    # 6. convert the last trainer checkpoint into a standalone model directory
    ckpts = sorted((run_dir / "checkpoints").glob("step-*")) if trained else []
    if ckpts:
        conv = OUT / "from-checkpoint"
        if step("convert", _flactl("convert", "checkpoint", ckpts[-1], "-o", conv, "--force")):
            written["converted checkpoint"] = conv

    print(f"\nDemo finished in {time.time() - t0:.0f}s. Written:")
    for what, path in written.items():
        print(f"  {what:<22} {path}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
