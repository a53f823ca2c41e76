"""`make demo`: the main job on a built-in default, on the CPU, in a few minutes.

Steps: check-env -> run every registered op family forward and backward at a tiny size against its
float32 reference (the same probes check-env runs on a GPU). Later stages (init -> train ->
generate -> eval -> bench) are added as those commands land. Prints where everything was written.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(os.environ.get("FLACTL_DEMO_DIR", "demo-out"))


def _flactl(*args: str) -> int:
    cmd = [sys.executable, "-m", "flactl", *args]
    print(f"\n$ flactl {' '.join(args)}", flush=True)
    return subprocess.call(cmd)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rc = _flactl("check-env", "--no-probe")
    if rc not in (0, 1):
        return rc
    env_json = OUT / "check-env.json"
    with open(env_json, "w") as f:
        subprocess.call([sys.executable, "-m", "flactl", "check-env", "--json", "--no-probe"], stdout=f)

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
    failed = [r["name"] for r in results if not r["ok"]]

    print(f"\nDemo finished in {time.time() - t0:.0f}s. Written: {env_json}")
    if failed:
        print(f"FAILED: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
