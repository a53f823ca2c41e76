"""Is the WY backward deterministic on the GPU, and which code shape makes it so? (H100 probe)

    PYTHONPATH=$PWD python scripts/gpu_wy_bwd_race.py

Session 5's determinism probe (scripts/gpu_delta_tune.py --parts det) found dbeta (and dgc when gated)
of delta_wy_bwd_kernel differing between identical calls at 4x4096x16x128 (max abs 9.0) while dk, dv
were bitwise stable. For each kernel variant (VARIANT bits: 1 = K K^T from a second load of k instead
of the same register tile as both operands, 2 = CTA barriers between the phases, 4 = K K^T in its own
loop first) this runs the kernel 6 times on the same inputs and reports how many dbeta/dgc elements
differ, at which rows of the chunk, and the relative error of each run against a float32 reference
(the torch chunk path's autograd on the same inputs). Writes $OUT/wy_bwd_race.json.
"""
from __future__ import annotations

import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.getcwd())
from flactl.ops.common import delta_chunk, delta_h, delta_o, delta_wy  # noqa: E402
from flactl.ops.common.delta_torch import torch_chunk_delta  # noqa: E402

OUT = os.environ.get("OUT", ".")
RES = []


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / a.norm().clamp_min(1e-30)).item() if torch.isfinite(b).all() else float("inf")


def probe(B, T, H, D, gated, variants=(0, 1, 2, 3, 4, 6), repeats=6):
    dev = "cuda"
    bf = torch.bfloat16
    q = torch.randn(B, T, H, D, device=dev, dtype=bf)
    k = F.normalize(torch.randn(B, T, H, D, device=dev), dim=-1).to(bf)
    v = torch.randn(B, T, H, D, device=dev, dtype=bf)
    beta = torch.rand(B, T, H, device=dev, dtype=bf)
    g = F.logsigmoid(torch.randn(B, T, H, device=dev)) / 16 if gated else None
    sc = D ** -0.5
    NT = (T + 63) // 64
    o, _, (gc, A, w, h, vn) = delta_chunk.delta_chunk_fwd(q, k, v, beta, g, sc, None, False, None)
    do = torch.randn_like(o)
    # reference dbeta / dg: float32 torch path, same inputs
    leaves = [t.float().requires_grad_() for t in (q, k, v, beta)]
    gl = g.clone().requires_grad_() if gated else None
    ro, _ = torch_chunk_delta(*leaves, gl, sc, None, False, None)
    ro.float().backward(do.float())
    ref_db = leaves[3].grad
    dvl = delta_o.bwd_dv_local(q, k, gc, do, sc, None, None, NT)
    dh, _, dv2 = delta_h.bwd_dh(q, k, w, gc, None, None, do, dvl, sc, None, None, B, NT)
    dq, dk, dw, _ = delta_o.bwd_dqkwg(q, k, vn, h, dh, do, dv2, gc, sc, None, None, NT)
    for var in variants:
        delta_wy.WY_BWD_LAUNCH["VARIANT"] = var
        try:
            runs = [delta_wy.wy_bwd(k, v, beta, gc, A, dw, dv2, dk, None, None, NT) for _ in range(repeats)]
        finally:
            delta_wy.WY_BWD_LAUNCH.pop("VARIANT")
        row = dict(shape=[B, T, H, D], gated=gated, variant=var)
        for name, idx in (("dk", 0), ("dv", 1), ("dbeta", 2), ("dgc", 3)):
            if runs[0][idx] is None:
                continue
            diff = torch.zeros_like(runs[0][idx], dtype=torch.bool)
            for r in runs[1:]:
                diff |= r[idx] != runs[0][idx]
            row[name + "_ndiff"] = int(diff.sum())
            if name in ("dbeta", "dgc") and diff.any():
                t_idx = diff.nonzero()[:, 1]  # [B, T, HV] -> the token index
                row[name + "_rows_mod64"] = sorted(set((t_idx % 64).tolist()))[:16]
                row[name + "_chunks"] = len(set((t_idx // 64).tolist()))
        row["dbeta_rel_err_per_run"] = [round(rel(ref_db, r[2]), 5) for r in runs]
        RES.append(row)
        print(json.dumps(row), flush=True)
        with open(os.path.join(OUT, "wy_bwd_race.json"), "w") as f:
            json.dump(RES, f, indent=1)


if __name__ == "__main__":
    for shape in [(4, 4096, 16, 128), (1, 4096, 16, 128), (1, 256, 2, 128)]:
        for gated in (False, True):
            probe(*shape, gated)
