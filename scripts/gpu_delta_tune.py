"""Sweep the launch settings of the delta-rule forward kernels on the GPU, checking every result.

    PYTHONPATH=$PWD python scripts/gpu_delta_tune.py [--shapes 4,4096,16,128;1,16384,16,128] [--quick]

For each shape (B,T,H,K[,V]) and gating: the WY kernels (solve warps; w,u warps, stages), the state walk (warps, stages, BV;
alone, with the outputs fused in and h kept for the backward, and fused without h), the output kernel, and
the backward kernels (state pass, dq/dk/dw, WY backward). Each candidate's results are compared with the default settings' (rel.
error) before its time counts. Then the whole forward (delta_chunk_fwd) with the default path and with the
fused-output path. Writes $OUT/delta_tune.json; prints the best of each part.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench

sys.path.insert(0, os.getcwd())
from flactl.ops.common import delta_chunk, delta_h, delta_o, delta_wy  # noqa: E402
from flactl.ops.utils.cumsum import chunk_local_cumsum  # noqa: E402

OUT = os.environ.get("OUT", ".")
DEV = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"  # CPU: a dry run of the script itself
if DEV == "cpu":
    do_bench = lambda fn, **kw: (fn(), 0.0)[1]  # noqa: E731,F811
RES = {"device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu (dry run)", "rows": []}


def rel(a, b):
    a, b = a.double(), b.double()
    if not torch.isfinite(b).all():
        return float("inf")
    return ((a - b).norm() / a.norm().clamp_min(1e-30)).item()


def timed(part, shape, gated, cfg, fn, check):
    """Time fn (do_bench median, ms) if its outputs agree with the defaults' (check() -> rel. error)."""
    row = dict(part=part, shape=shape, gated=gated, cfg=cfg)
    try:
        err = check()
        row["err"] = err
        row["ms"] = do_bench(fn, warmup=25, rep=100) if err < 2e-2 else None
    except Exception as e:  # noqa: BLE001 - a config that does not compile is a result too
        row["error"] = repr(e)[:200]
    RES["rows"].append(row)
    print(json.dumps(row), flush=True)
    with open(os.path.join(OUT, "delta_tune.json"), "w") as f:
        json.dump(RES, f, indent=1)
    return row


def with_cfg(table, cfg, fn):
    old = dict(table)
    table.update(cfg)
    try:
        return fn()
    finally:
        table.clear()
        table.update(old)


def inputs(shape, gated):
    B, T, H, K, V = shape
    bf = torch.bfloat16 if DEV == "cuda" else torch.float32
    x = dict(q=torch.randn(B, T, H, K, device=DEV, dtype=bf),
             k=F.normalize(torch.randn(B, T, H, K, device=DEV), dim=-1).to(bf),
             v=torch.randn(B, T, H, V, device=DEV, dtype=bf),
             beta=torch.rand(B, T, H, device=DEV, dtype=bf))
    x["g"] = F.logsigmoid(torch.randn(B, T, H, device=DEV)) / 16 if gated else None
    return x


def sweep_fwd(shape, gated, quick, only_wy=False):
    """WY (warps, stages), the walk alone / with outputs (+h) / with outputs (no h), the output kernel."""
    B, T, H, K, V = shape
    x = inputs(shape, gated)
    q, k, v, beta, g = x["q"], x["k"], x["v"], x["beta"], x["g"]
    gc = chunk_local_cumsum(g, 64) if gated else None
    NT = (T + 63) // 64
    sc = K ** -0.5
    A0, w0, u0 = delta_wy.wy_fwd(k, v, beta, gc, None, None, NT)
    h0_, vn0, _ = delta_h.fwd_h(k, w0, u0, gc, None, False, None, None, B, NT)
    o0 = delta_o.fwd_o(q, k, vn0, h0_, gc, sc, None, None, NT)
    tag = list(shape)
    warps = [4, 8] if not quick else [4]
    wy_cfgs = [dict(solve_warps=sw, num_warps=nw, num_stages=ns)
               for sw, nw, ns in itertools.product([1, 2, 4], [4, 8], [2, 3] if not quick else [3])]
    for cfg in wy_cfgs:
        run = lambda cfg=cfg: with_cfg(delta_wy.WY_FWD_LAUNCH, cfg,  # noqa: E731
                                       lambda: delta_wy.wy_fwd(k, v, beta, gc, None, None, NT))
        timed("wy_fwd", tag, gated, cfg, run, lambda run=run: max(rel(w0, run()[1]), rel(u0, run()[2]),
                                                                  rel(A0, run()[0])))
    if only_wy:
        return
    for nw, ns, bv in itertools.product(warps, [2, 3] if not quick else [3], [32, 64]):
        cfg = dict(num_warps=nw, num_stages=ns, BV=bv)
        run = lambda cfg=cfg: with_cfg(delta_h.FWD_H_LAUNCH, cfg,  # noqa: E731
                                       lambda: delta_h.fwd_h(k, w0, u0, gc, None, False, None, None, B, NT))
        timed("fwd_h", tag, gated, cfg, run, lambda run=run: rel(h0_, run()[0]))
        if not delta_h.fused_output_fits(K):
            continue
        for store in (True, False):
            fused = lambda cfg=cfg, store=store: with_cfg(  # noqa: E731
                delta_h.FWD_H_LAUNCH, cfg,
                lambda: delta_h.fwd_h(k, w0, u0, gc, None, False, None, None, B, NT, q=q, scale=sc, store_h=store))
            timed("fwd_h+o" if store else "fwd_h+o (no h)", tag, gated, cfg, fused,
                  lambda fused=fused: rel(o0, fused()[3]))
    for nw, ns in itertools.product(warps, [2, 3]):
        cfg = dict(num_warps=nw, num_stages=ns)
        run = lambda cfg=cfg: with_cfg(delta_o.FWD_O_LAUNCH, cfg,  # noqa: E731
                                       lambda: delta_o.fwd_o(q, k, vn0, h0_, gc, sc, None, None, NT))
        timed("fwd_o", tag, gated, cfg, run, lambda run=run: rel(o0, run()))
    # the whole forward with each output path (default launch settings)
    for mode in ("separate", "fused+h", "fused"):
        fl = {"separate": (False, True), "fused+h": (True, True), "fused": (True, False)}[mode]
        cfg = {"train": fl[0], "inference": fl[0]}

        def run(cfg=cfg, need=fl[1]):
            return with_cfg(delta_chunk.FUSED_OUTPUT, cfg, lambda: delta_chunk.delta_chunk_fwd(
                q, k, v, beta, g, sc, None, False, None, need_saved=need))
        timed("forward " + mode, tag, gated, {}, run, lambda run=run: rel(o0, run()[0]))


def sweep_bwd(shape, gated, quick):
    """The backward kernels' launch settings: state pass (warps, stages, BV), dq/dk/dw, WY backward."""
    B, T, H, K, V = shape
    x = inputs(shape, gated)
    sc = K ** -0.5
    NT = (T + 63) // 64
    o, _, saved = delta_chunk.delta_chunk_fwd(x["q"], x["k"], x["v"], x["beta"], x["g"], sc, None, False, None)
    gc, A, w, h, vn = saved
    do = torch.randn_like(o)
    q, k = x["q"], x["k"]
    dvl = delta_o.bwd_dv_local(q, k, gc, do, sc, None, None, NT)
    dh0, _, dv20 = delta_h.bwd_dh(q, k, w, gc, None, None, do, dvl, sc, None, None, B, NT)
    dq0 = delta_o.bwd_dqkwg(q, k, vn, h, dh0, do, dv20, gc, sc, None, None, NT)
    tag = list(shape)
    warps = [4, 8] if not quick else [4]
    for nw, ns, bv in itertools.product(warps, [2, 3], [32, 64]):
        cfg = dict(num_warps=nw, num_stages=ns, BV=bv)
        run = lambda cfg=cfg: with_cfg(delta_h.BWD_DH_LAUNCH, cfg,  # noqa: E731
                                       lambda: delta_h.bwd_dh(q, k, w, gc, None, None, do, dvl, sc, None, None, B, NT))
        timed("bwd_dh", tag, gated, cfg, run, lambda run=run: max(rel(dh0, run()[0]), rel(dv20, run()[2])))
    for nw, ns in itertools.product(warps, [2, 3]):
        cfg = dict(num_warps=nw, num_stages=ns)
        run = lambda cfg=cfg: with_cfg(delta_o.BWD_DQKWG_LAUNCH, cfg,  # noqa: E731
                                       lambda: delta_o.bwd_dqkwg(q, k, vn, h, dh0, do, dv20, gc, sc, None, None, NT))
        timed("bwd_dqkwg", tag, gated, cfg, run, lambda run=run: rel(dq0[0], run()[0]))
        dk_in = dq0[1]
        wy0 = delta_wy.wy_bwd(k, x["v"], x["beta"], gc, A, dq0[2], dv20, dk_in, None, None, NT)
        run = lambda cfg=cfg: with_cfg(delta_wy.WY_BWD_LAUNCH, cfg,  # noqa: E731
                                       lambda: delta_wy.wy_bwd(k, x["v"], x["beta"], gc, A, dq0[2], dv20, dk_in,
                                                               None, None, NT))
        timed("wy_bwd", tag, gated, cfg, run, lambda run=run, wy0=wy0: max(rel(wy0[0], run()[0]),
                                                                             rel(wy0[2], run()[2])))
    leaves = [t.requires_grad_() for t in (x["q"], x["k"], x["v"], x["beta"])]

    def step():
        oo, _ = delta_chunk.delta_chunk_apply(*leaves, x["g"], sc, None, False, None, None)
        oo.backward(do)
    timed("fwd+bwd", tag, gated, {}, step, lambda: 0.0)


def determinism(shape, gated, repeats=4):
    """Every forward/backward kernel run `repeats` times on the same inputs: the outputs must be bitwise
    equal (max abs difference per output; a nonzero value is a race or an uninitialised read)."""
    B, T, H, K, V = shape
    x = inputs(shape, gated)
    q, k, v, beta = x["q"], x["k"], x["v"], x["beta"]
    sc = K ** -0.5
    NT = (T + 63) // 64
    gc = chunk_local_cumsum(x["g"], 64) if gated else None
    o, _, (gc, A, w, h, vn) = delta_chunk.delta_chunk_fwd(q, k, v, beta, x["g"], sc, None, False, None)
    do = torch.randn_like(o)
    dvl = delta_o.bwd_dv_local(q, k, gc, do, sc, None, None, NT)
    dh, _, dv2 = delta_h.bwd_dh(q, k, w, gc, None, None, do, dvl, sc, None, None, B, NT)
    dq, dk, dw, _ = delta_o.bwd_dqkwg(q, k, vn, h, dh, do, dv2, gc, sc, None, None, NT)
    fns = {
        "wy_fwd": lambda: delta_wy.wy_fwd(k, v, beta, gc, None, None, NT),
        "fwd_h": lambda: delta_h.fwd_h(k, w, delta_wy.wy_fwd(k, v, beta, gc, None, None, NT)[2], gc, None, False,
                                       None, None, B, NT),
        "fwd_o": lambda: delta_o.fwd_o(q, k, vn, h, gc, sc, None, None, NT),
        "fwd_h+o (no h)": lambda: delta_h.fwd_h(k, w, delta_wy.wy_fwd(k, v, beta, gc, None, None, NT)[2], gc, None,
                                                False, None, None, B, NT, q=q, scale=sc, store_h=False),
        "bwd_dv_local": lambda: delta_o.bwd_dv_local(q, k, gc, do, sc, None, None, NT),
        "bwd_dh": lambda: delta_h.bwd_dh(q, k, w, gc, None, None, do, dvl, sc, None, None, B, NT),
        "bwd_dqkwg": lambda: delta_o.bwd_dqkwg(q, k, vn, h, dh, do, dv2, gc, sc, None, None, NT),
        "wy_bwd": lambda: delta_wy.wy_bwd(k, v, beta, gc, A, dw, dv2, dk, None, None, NT),
    }
    for name, fn in fns.items():
        first = [t.clone() if torch.is_tensor(t) else t for t in fn()]
        diffs = [0.0] * len(first)
        for _ in range(repeats - 1):
            for i, t in enumerate(fn()):
                if torch.is_tensor(t):
                    d = (t.float() - first[i].float()).abs()
                    diffs[i] = max(diffs[i], float(torch.nan_to_num(d, nan=float("inf")).max()))
        row = dict(part="determinism " + name, shape=list(shape), gated=gated, max_abs_diff=diffs)
        RES["rows"].append(row)
        print(json.dumps(row), flush=True)


def best(part, shape, gated):
    rows = [r for r in RES["rows"] if r["part"] == part and r["shape"] == shape and r["gated"] == gated
            and r.get("ms")]
    return min(rows, key=lambda r: r["ms"]) if rows else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="4,4096,16,128;1,16384,16,128")
    ap.add_argument("--gated", default="0")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--parts", default="fwd,bwd")
    a = ap.parse_args()
    shapes = []
    for s in a.shapes.split(";"):
        x = [int(t) for t in s.split(",")]
        shapes.append(tuple(x) if len(x) == 5 else (*x, x[3]))
    for shape, gated in itertools.product(shapes, [bool(int(x)) for x in a.gated.split(",")]):
        if "fwd" in a.parts or "wy" in a.parts:
            sweep_fwd(shape, gated, a.quick, only_wy="fwd" not in a.parts)
        if "bwd" in a.parts:
            sweep_bwd(shape, gated, a.quick)
        if "det" in a.parts:
            determinism(shape, gated)
    print("\n== best per part")
    for shape, gated in itertools.product(shapes, [bool(int(x)) for x in a.gated.split(",")]):
        for part in ("wy_fwd", "fwd_h", "fwd_h+o", "fwd_h+o (no h)", "fwd_o", "forward separate",
                     "forward fused+h", "forward fused", "bwd_dh", "bwd_dqkwg", "wy_bwd", "fwd+bwd"):
            r = best(part, list(shape), gated)
            if r:
                print(f"{str(shape):28s} gated={gated:d} {part:16s} {r['ms']:.4f} ms  {r['cfg']}  err {r['err']:.1e}")


if __name__ == "__main__":
    main()
