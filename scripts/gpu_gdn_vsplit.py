"""Gated DeltaNet at flame's 340M head shape (K=256, V=512): split over V vs one native call (GPU A/B).

    PYTHONPATH=$PWD python scripts/gpu_gdn_vsplit.py [--out $OUT/gdn_vsplit.json]

The public op used to split value heads wider than 256 into two calls (exact: value columns are
independent), which repeats the WY transform (kkt, solve, w) and every q/k-side product. The chunk kernels
loop or grid over V in 64-wide blocks, so one call with V=512 works too (the public op's path since
2026-11-22, after this A/B); this measures both on the 340M layer's shapes (B*T = 16k tokens, 4 heads) and
checks that they agree (outputs and gradients). "split" makes the two V=256 calls explicitly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench

sys.path.insert(0, os.getcwd())
from flactl.ops import chunk_gated_delta_rule  # noqa: E402
from flactl.ops.common.delta_chunk import delta_chunk_apply  # noqa: E402


def make(B, T, H, K, V, dev="cuda"):
    bf = torch.bfloat16
    q = torch.randn(B, T, H, K, device=dev, dtype=bf)
    k = F.normalize(torch.randn(B, T, H, K, device=dev), dim=-1).to(bf)
    v = torch.randn(B, T, H, V, device=dev, dtype=bf)
    beta = torch.rand(B, T, H, device=dev, dtype=bf)
    g = F.logsigmoid(torch.randn(B, T, H, device=dev)) / 16
    return [x.requires_grad_() for x in (q, k, v, beta, g)]


def split_call(q, k, v, beta, g):
    return torch.cat([chunk_gated_delta_rule(q, k, vi, g, beta)[0] for vi in v.split(256, dim=-1)], dim=-1)


def native_call(q, k, v, beta, g):
    return delta_chunk_apply(q, k, v, beta, g, q.shape[-1] ** -0.5, None, False, None, None)[0]


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).pow(2).mean().sqrt() / a.pow(2).mean().sqrt().clamp_min(1e-12)).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gdn_vsplit.json"))
    a = ap.parse_args()
    rows = []
    for B, T in ((8, 2048), (2, 8192)):
        ins = make(B, T, 4, 256, 512)
        do = torch.randn(B, T, 4, 512, device="cuda", dtype=torch.bfloat16)
        row = {"B": B, "T": T, "H": 4, "K": 256, "V": 512}
        outs = {}
        for name, fn in (("split", split_call), ("native", native_call)):
            for _ in range(3):
                fn(*ins).backward(do)
            torch.cuda.synchronize()
            o = fn(*ins)
            grads = torch.autograd.grad(o, ins, do)
            outs[name] = (o.detach(), grads)
            det = [x.detach() for x in ins]
            row[f"{name}_fwd_ms"] = round(do_bench(lambda: fn(*det)), 4)
            row[f"{name}_fwdbwd_ms"] = round(do_bench(lambda: fn(*ins).backward(do), grad_to_none=ins), 4)
        so, sg = outs["split"]
        no, ng = outs["native"]
        row["rel_o"] = rel(so, no)
        row["rel_grads"] = {n: rel(x, y) for n, x, y in zip(("dq", "dk", "dv", "dbeta", "dg"), sg, ng)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    with open(a.out, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
