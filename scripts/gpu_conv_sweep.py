"""Short-conv forward tile sweep (GPU): which [BLOCK_T, BLOCK_D, num_warps] reads/writes fastest.

    PYTHONPATH=$PWD python scripts/gpu_conv_sweep.py [--out $OUT/conv_sweep.json]

Issue 5 measured the forward at 73% of copy bandwidth (16k x 2048, graph-timed) and 10% slower than fla
with the fixed [32, 128] x 4 warps tile. Each tile re-reads W-1 = 3 halo rows from L1/L2 (9% extra at
BLOCK_T=32), and 8192 small programs each pay their launch/tail; larger BLOCK_T should move the forward
toward the copy rate. Times conv_fwd_kernel directly inside a CUDA graph (no host overhead), checks each
config against the default tile's output, prints one JSON line per (hidden, config).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import triton
from triton.testing import do_bench_cudagraph

sys.path.insert(0, os.getcwd())
from flactl.modules.convolution import conv_fwd_kernel  # noqa: E402

T_TOK = 16384
CONFIGS = [(bt, bd, nw) for bt in (16, 32, 64, 128) for bd in (64, 128, 256) for nw in (4, 8)
           if bt * bd <= 16384]


def launch(x, w, y, bt, bd, nw):
    TT, D = x.shape
    grid = (triton.cdiv(TT, bt), triton.cdiv(D, bd))
    conv_fwd_kernel[grid](x, w, None, None, y, None, None, TT, TT, D, KW=w.shape[1], BLOCK_T=bt, BLOCK_D=bd, ACT=1,
                          HAS_BIAS=False, HAS_CACHE=False, IS_VARLEN=False, num_warps=nw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "conv_sweep.json"))
    a = ap.parse_args()
    rows = []
    src = torch.empty(T_TOK * 4096, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    for D in (2048, 4096):
        n = T_TOK * D
        copy_ms = do_bench_cudagraph(lambda: dst[:n].copy_(src[:n]), rep=20, return_mode="median")
        x = torch.randn(T_TOK, D, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(D, 4, device="cuda", dtype=torch.bfloat16)
        ref = torch.empty_like(x)
        launch(x, w, ref, 32, 128, 4)
        for bt, bd, nw in CONFIGS:
            y = torch.empty_like(x)
            try:
                launch(x, w, y, bt, bd, nw)
                torch.cuda.synchronize()
                err = (y.float() - ref.float()).abs().max().item()
                ms = do_bench_cudagraph(lambda: launch(x, w, y, bt, bd, nw), rep=20, return_mode="median")
            except Exception as e:  # noqa: BLE001
                print(json.dumps({"D": D, "cfg": [bt, bd, nw], "error": str(e)[:200]}), flush=True)
                continue
            row = {"D": D, "cfg": [bt, bd, nw], "ms": round(ms, 4), "frac_of_copy": round(copy_ms / ms, 3),
                   "copy_ms": round(copy_ms, 4), "max_err_vs_default": err}
            print(json.dumps(row), flush=True)
            rows.append(row)
    for D in (2048, 4096):
        best = min((r for r in rows if r["D"] == D), key=lambda r: r["ms"])
        print("best", json.dumps(best))
    with open(a.out, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
