"""GPU benchmarks for the recurrent ops (K-REC): decoding step of fused_recurrent_simple_gla at
batch 256 and batch 1 (H=32, D=128, bf16, float32 state in and out) against the measured copy
bandwidth, fla 0.6.0 side by side; fused_recurrent fwd/bwd at a training shape; HGRN ops.

    python scripts/gpu_recurrent.py --out results.json [--sweep]

fla is optional (importable from PYTHONPATH): its columns are left empty when it is missing.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import triton
import triton.language as tl
from triton.testing import do_bench


def bench(fn, rep=200):
    fn()
    torch.cuda.synchronize()
    return do_bench(fn, warmup=25, rep=rep, return_mode="median")  # ms


def wall_per_call(fn, n=2000):
    """Host-inclusive time per call in a tight loop (what a decoding loop without graphs sees)."""
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e3  # ms


def graph_per_call(fn, n=2000):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        g.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e3


def copy_bandwidth():
    x = torch.randn(2 ** 28, device="cuda")
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    return 2 * x.numel() * 4 / (ms * 1e-3) / 1e9  # GB/s


@triton.jit
def _noop_kernel(x, n, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    tl.store(x + o, tl.load(x + o, mask=o < n), mask=o < n)


def launch_floor(res):
    """Host cost of launching a 2-argument Triton kernel and of allocating a small tensor: the floor
    under any Triton op's per-call time without CUDA graphs."""
    x = torch.zeros(16, device="cuda")
    res["launch_floor"] = {
        "noop_triton_wall_ms": wall_per_call(lambda: _noop_kernel[(1,)](x, 16, BLOCK=16), 3000),
        "torch_empty_wall_ms": wall_per_call(lambda: torch.empty(32, 128, 128, device="cuda"), 3000),
    }
    print(json.dumps(res["launch_floor"]))


def load_fla():
    try:
        from fla.ops.hgrn import chunk_hgrn, fused_recurrent_hgrn
        from fla.ops.simple_gla import fused_recurrent_simple_gla
        return dict(simple_gla=fused_recurrent_simple_gla, chunk_hgrn=chunk_hgrn, fused_recurrent_hgrn=fused_recurrent_hgrn)
    except Exception as e:  # optional peer
        print(f"fla not available: {type(e).__name__}: {e}")
        return {}


def decode(res, fla, bw, sweep):
    from flactl.ops.common.fused_recurrent import fused_recurrent_fwd
    from flactl.ops.simple_gla.fused_recurrent import fused_recurrent_simple_gla as ours

    H, D = 32, 128
    for B in (256, 1):
        q, k, v = (torch.randn(B, 1, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        g = torch.empty(B, 1, H, device="cuda").uniform_(0.9, 0.999).log()
        h0 = torch.randn(B, H, D, D, device="cuda")
        state_bytes = 2 * h0.numel() * 4
        row = {"B": B, "H": H, "D": D, "state_MB": state_bytes / 1e6}
        with torch.no_grad():
            f_ours = lambda: ours(q, k, v, g, initial_state=h0, output_final_state=True)  # noqa: E731
            o1, h1 = f_ours()
            row["ours_ms"] = bench(f_ours)
            row["ours_wall_ms"] = wall_per_call(f_ours, 500 if B > 1 else 3000)
            row["ours_graph_ms"] = graph_per_call(f_ours, 500 if B > 1 else 3000)
            scale = D ** -0.5
            f_raw = lambda: fused_recurrent_fwd(q, k, v, g, None, None, None, scale, h0, True)  # noqa: E731
            row["ours_no_validation_wall_ms"] = wall_per_call(f_raw, 500 if B > 1 else 3000)
            if "simple_gla" in fla:
                f_fla = lambda: fla["simple_gla"](q, k, v, g, initial_state=h0, output_final_state=True)  # noqa: E731
                o2, h2 = f_fla()
                row["fla_ms"] = bench(f_fla)
                row["fla_wall_ms"] = wall_per_call(f_fla, 500 if B > 1 else 3000)
                row["max_diff_o_vs_fla"] = (o1.float() - o2.float()).abs().max().item()
                row["max_diff_h_vs_fla"] = (h1 - h2.float()).abs().max().item()
            if sweep and B > 1:
                row["sweep"] = {}
                for BV in (16, 32, 64, 128):
                    for nw in (2, 4, 8):
                        if BV * D > 16384 and nw < 4:
                            continue
                        f = lambda: fused_recurrent_fwd(q, k, v, g, None, None, None, scale, h0, True, _config=(BV, nw))  # noqa: E731,B023
                        row["sweep"][f"BV{BV}_w{nw}"] = bench(f)
        for key in ("ours_ms", "fla_ms"):
            if key in row:
                row[key.replace("_ms", "_pct_copy_bw")] = 100 * state_bytes / (row[key] * 1e-3) / 1e9 / bw
        res["decode"].append(row)
        print(json.dumps(row))


def train_shape(res, fla):
    from flactl.ops.simple_gla.fused_recurrent import fused_recurrent_simple_gla as ours

    B, T, H, D = 4, 1024, 16, 128
    q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = torch.empty(B, T, H, device="cuda").uniform_(0.9, 0.999).log().requires_grad_()
    do = torch.randn_like(v)
    row = {"B": B, "T": T, "H": H, "D": D}
    for name, fn in (("ours", ours), ("fla", fla.get("simple_gla"))):
        if fn is None:
            continue
        row[f"{name}_fwd_ms"] = bench(lambda: fn(q, k, v, g), 50)  # noqa: B023
        row[f"{name}_fwdbwd_ms"] = bench(lambda: fn(q, k, v, g)[0].backward(do), 50)  # noqa: B023
    res["fused_recurrent_train"].append(row)
    print(json.dumps(row))


def hgrn(res, fla):
    from flactl.ops.hgrn import chunk_hgrn, fused_recurrent_hgrn

    for B, T, D in ((8, 2048, 1024), (4, 4096, 2048)):
        x = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        g = torch.nn.functional.logsigmoid(torch.randn(B, T, D, device="cuda") + 2).bfloat16().requires_grad_()
        do = torch.randn_like(x)
        row = {"B": B, "T": T, "D": D, "floor_fwd_ms": 3 * x.numel() * 2 / 3.0e12 * 1e3}
        for name, fn in (("ours_chunk", chunk_hgrn), ("ours_fused", fused_recurrent_hgrn),
                         ("fla_chunk", fla.get("chunk_hgrn")), ("fla_fused", fla.get("fused_recurrent_hgrn"))):
            if fn is None:
                continue
            try:
                row[f"{name}_fwd_ms"] = bench(lambda: fn(x, g), 50)  # noqa: B023
                row[f"{name}_fwdbwd_ms"] = bench(lambda: fn(x, g)[0].backward(do), 50)  # noqa: B023
            except Exception as e:
                row[f"{name}_error"] = f"{type(e).__name__}: {e}"[:200]
        res["hgrn"].append(row)
        print(json.dumps(row))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_recurrent.json")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--parts", default="decode,train_shape,hgrn", help="comma-separated subset to run")
    args = ap.parse_args()
    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "decode": [], "fused_recurrent_train": [], "hgrn": []}
    fla = load_fla()
    res["fla"] = bool(fla)
    res["copy_GBps"] = bw = copy_bandwidth()
    print(json.dumps({k: res[k] for k in ("gpu", "torch", "triton", "copy_GBps", "fla")}))
    launch_floor(res)
    for part in (decode, train_shape, hgrn):
        if part.__name__ not in args.parts.split(","):
            continue
        try:
            part(res, fla, bw, args.sweep) if part is decode else part(res, fla)
        except Exception as e:
            res[f"{part.__name__}_error"] = f"{type(e).__name__}: {e}"
            print(res[f"{part.__name__}_error"])
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
