"""GPU benchmark for flactl.modules vs fla 0.6.0 (optional peer) and torch.compile of the reference.

Usage (on the GPU machine, from the repo root):
    PYTHONPATH=$PWD[:/tmp/peer] python scripts/gpu_modules.py --out $OUT/modules_bench.jsonl [--no-compile]
Each line of the JSONL is one measurement (op, shape, provider, mode, ms, GB/s or peak memory).
Bandwidth = bytes that must move (inputs read once, outputs written once) / median time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernel_time import kernel_sum_ms  # noqa: E402

DEV = "cuda"
DT = torch.bfloat16
T_TOK = 16384
RESULTS = []
OUT = None
COMPILE_ONLY = False
GRAPH = False   # time inside a CUDA graph (GPU time without Python/launch overhead)


def emit(**rec):
    RESULTS.append(rec)
    if OUT:
        with open(OUT, "a") as f:
            f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


def bench(fn, grad_to_none=None):
    """Median ms. With GRAPH, forward-only calls replay inside a CUDA graph. Backward stays eager:
    capturing autograd failed (AccumulateGrad stream mismatch) and the failed capture poisoned the RNG
    for the rest of the run (2026-11-22)."""
    if GRAPH and grad_to_none is None:
        try:
            return triton.testing.do_bench_cudagraph(fn, rep=20, return_mode="median"), "graph"
        except Exception as e:
            print("graph capture failed, eager timing:", type(e).__name__, str(e)[:120])
            torch.cuda.synchronize()
    return triton.testing.do_bench(fn, warmup=10, rep=50, grad_to_none=grad_to_none, return_mode="median"), "eager"


def run_case(op, shape, provider, fwd, inputs, bytes_fwd, bytes_bwd, backward=True):
    """fwd() -> output tensor or tuple; inputs: tensors requiring grad."""
    if COMPILE_ONLY and provider != "torch.compile":
        return
    try:
        ms, how = bench(fwd)
        emit(op=op, shape=shape, provider=provider, mode="fwd", ms=round(ms, 4), gbps=round(bytes_fwd / ms / 1e6, 1),
             timing=how)
        if backward:
            out = fwd()
            outs = out if isinstance(out, tuple) else (out,)
            outs = [o for o in outs if isinstance(o, torch.Tensor) and o.requires_grad]
            dys = [torch.randn_like(o) for o in outs]

            def fb():
                o = fwd()
                o = o if isinstance(o, tuple) else (o,)
                o = [t for t in o if isinstance(t, torch.Tensor) and t.requires_grad]
                torch.autograd.grad(o, inputs, dys)
            ms2, how = bench(fb, grad_to_none=[])  # eager: see bench()
            emit(op=op, shape=shape, provider=provider, mode="fwd+bwd", ms=round(ms2, 4),
                 gbps=round((bytes_fwd + bytes_bwd) / ms2 / 1e6, 1), timing=how)
            if GRAPH:  # the eager number above is mostly host time: also the kernels' summed device time
                ks = kernel_sum_ms(fb, steps=10)
                emit(op=op, shape=shape, provider=provider, mode="fwd+bwd", ms=round(ks, 4),
                     gbps=round((bytes_fwd + bytes_bwd) / ks / 1e6, 1), timing="kernel-sum")
    except Exception as e:  # a peer failing must not stop the run
        emit(op=op, shape=shape, provider=provider, mode="error", error=f"{type(e).__name__}: {e}"[:300])
        traceback.print_exc()


def copy_bw():
    x = torch.randn(T_TOK, 4096, device=DEV, dtype=DT)
    y = torch.empty_like(x)
    ms, _ = bench(lambda: y.copy_(x))
    emit(op="copy", shape=[T_TOK, 4096], provider="torch", mode="fwd", ms=round(ms, 4),
         gbps=round(2 * x.numel() * 2 / ms / 1e6, 1))


def providers(fla_fn, ours_fn, ref_fn, compile_ref):
    p = [("flactl", ours_fn)]
    if fla_fn is not None:
        p.append(("fla", fla_fn))
    if compile_ref:
        p.append(("torch.compile", torch.compile(ref_fn)))
    return p


def main():
    global OUT, COMPILE_ONLY, GRAPH
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-only", action="store_true")
    ap.add_argument("--graph", action="store_true")
    ap.add_argument("--hidden", default="2048,4096")
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    OUT = args.out
    COMPILE_ONLY = args.compile_only
    GRAPH = args.graph
    comp = not args.no_compile
    only = set(args.only.split(",")) if args.only else None
    import flactl.modules as M
    try:
        import fla.modules as FM
        from fla.modules import l2norm as fla_l2
        from fla.modules import token_shift as fla_ts
        have_fla = True
    except Exception as e:
        print("fla not importable:", e)
        have_fla = False
    emit(op="env", gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
         fla=have_fla)
    if not COMPILE_ONLY:
        copy_bw()
    b2 = 2  # bytes per bf16 element
    if (only is not None and "flce" in only) and not COMPILE_ONLY:
        flce_bench(M, FM if have_fla else None)
        only.discard("flce")
        if not only:
            return
    for hidden in [int(h) for h in args.hidden.split(",")]:
        x = torch.randn(T_TOK, hidden, device=DEV, dtype=DT, requires_grad=True)
        n = x.numel()
        if only is None or "rmsnorm" in only:
            ours = M.RMSNorm(hidden, eps=1e-6).to(DEV, DT)
            fl = FM.RMSNorm(hidden, eps=1e-6).to(DEV, DT) if have_fla else None

            def ref(x, w=ours.weight):
                xf = x.float()
                return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).to(x.dtype)
            for name, f in providers(fl, ours, ref, comp):
                run_case("rmsnorm", [T_TOK, hidden], name, lambda f=f: f(x), [x], 2 * n * b2, 3 * n * b2)
            r = torch.randn(T_TOK, hidden, device=DEV, dtype=DT, requires_grad=True)

            def ref_res(x, r, w=ours.weight):
                s = x.float() + r.float()
                return (s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).to(x.dtype), s
            provs = [("flactl", lambda: ours(x, r, prenorm=True, residual_in_fp32=True))]
            if fl is not None:
                provs.append(("fla", lambda: fl(x, r, prenorm=True, residual_in_fp32=True)))
            if comp:
                cr = torch.compile(ref_res)
                provs.append(("torch.compile", lambda: cr(x, r)))
            for name, f in provs:
                # fwd: read x, r; write y (bf16) + residual (fp32)
                run_case("rmsnorm+residual(prenorm,fp32)", [T_TOK, hidden], name, f, [x, r],
                         2 * n * b2 + n * b2 + n * 4, n * 4 + n * b2 + n * 4 + 2 * n * b2)
        H = hidden // 128
        if only is None or "gated" in only:
            xh = torch.randn(T_TOK, H, 128, device=DEV, dtype=DT, requires_grad=True)
            g = torch.randn(T_TOK, H, 128, device=DEV, dtype=DT, requires_grad=True)
            ours = M.FusedRMSNormGated(128, eps=1e-5).to(DEV, DT)
            fl = FM.FusedRMSNormGated(128, eps=1e-5).to(DEV, DT) if have_fla else None

            def gref(x, g, w=ours.weight):
                xf = x.float()
                return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * w.float()
                        * F.silu(g.float())).to(x.dtype)
            for name, f in providers(fl, ours, gref, comp):
                run_case("rmsnorm_gated(D=128)", [T_TOK, H, 128], name, lambda f=f: f(xh, g), [xh, g],
                         3 * n * b2, 5 * n * b2)
        if only is None or "l2norm" in only:
            xh = torch.randn(T_TOK, H, 128, device=DEV, dtype=DT, requires_grad=True)
            fl = (lambda t: fla_l2.l2norm(t)) if have_fla else None

            def lref(x):
                xf = x.float()
                return (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + 1e-6)).to(x.dtype)
            for name, f in providers(fl, M.l2_norm, lref, comp):
                run_case("l2norm(D=128)", [T_TOK, H, 128], name, lambda f=f: f(xh), [xh], 2 * n * b2, 3 * n * b2)
        if only is None or "rotary" in only:
            q = torch.randn(1, T_TOK, H, 128, device=DEV, dtype=DT, requires_grad=True)
            k = torch.randn(1, T_TOK, H, 128, device=DEV, dtype=DT, requires_grad=True)
            ours = M.RotaryEmbedding(128).to(DEV)
            fl = FM.RotaryEmbedding(128).to(DEV) if have_fla else None
            ours(q, k)
            cos, sin = ours._cos_cached[:T_TOK], ours._sin_cached[:T_TOK]

            def rref(q, k):
                c = torch.cat([cos, cos], -1)[None, :, None]
                s = torch.cat([sin, sin], -1)[None, :, None]

                def rot(t):
                    tf = t.float()
                    t1, t2 = tf.chunk(2, -1)
                    return (tf * c + torch.cat([-t2, t1], -1) * s).to(t.dtype)
                return rot(q), rot(k)
            for name, f in providers(fl, ours, rref, comp):
                run_case("rotary(q+k,D=128)", [1, T_TOK, H, 128], name, lambda f=f: f(q, k), [q, k],
                         4 * n * b2, 4 * n * b2)
        if only is None or "token_shift" in only:
            x3 = torch.randn(1, T_TOK, hidden, device=DEV, dtype=DT, requires_grad=True)
            fl = (lambda t: fla_ts.token_shift(t)) if have_fla else None

            def tref(x):
                return F.pad(x, (0, 0, 1, -1)) - x
            for name, f in providers(fl, M.token_shift, tref, comp):
                run_case("token_shift", [1, T_TOK, hidden], name, lambda f=f: f(x3), [x3], 2 * n * b2, 2 * n * b2)
        if only is None or "conv" in only:
            x3 = torch.randn(1, T_TOK, hidden, device=DEV, dtype=DT, requires_grad=True)
            ours = M.ShortConvolution(hidden, 4, activation="silu").to(DEV, DT)
            fl = None
            if have_fla:
                fl = FM.ShortConvolution(hidden, 4, activation="silu", backend="triton").to(DEV, DT)
                fl.weight.data.copy_(ours.weight.data)

            def cref(x, w=ours.weight):
                T = x.shape[1]
                y = F.conv1d(F.pad(x.transpose(1, 2), (3, 0)), w, groups=x.shape[-1])[..., :T]
                return F.silu(y).transpose(1, 2)
            provs = [("flactl", lambda: ours(x3)[0])]
            if fl is not None:
                provs.append(("fla", lambda: fl(x3)[0]))
            if comp:
                cc = torch.compile(cref)
                provs.append(("torch.compile", lambda: cc(x3)))
            for name, f in provs:
                run_case("short_conv(W=4,silu)", [1, T_TOK, hidden], name, f, [x3], 2 * n * b2, 3 * n * b2)
        if only is None or "swiglu" in only:
            inter = 5632 if hidden == 2048 else 11008
            g = torch.randn(T_TOK, inter, device=DEV, dtype=DT, requires_grad=True)
            u = torch.randn(T_TOK, inter, device=DEV, dtype=DT, requires_grad=True)
            ni = g.numel()
            fl = None
            if have_fla:
                from fla.modules.activations import swiglu as fl_sw
                fl = fl_sw

            def sref(g, u):
                return (F.silu(g.float()) * u.float()).to(g.dtype)
            for name, f in providers(fl, M.swiglu, sref, comp):
                run_case("swiglu", [T_TOK, inter], name, lambda f=f: f(g, u), [g, u], 3 * ni * b2, 5 * ni * b2)
        torch.cuda.empty_cache()
    if (only is None or "flce" in only) and not COMPILE_ONLY:
        flce_bench(M, FM if have_fla else None)


def flce_bench(M, FM):
    H = 2048
    for V in (32000, 128256):
        torch.cuda.empty_cache()
        x = (torch.randn(T_TOK, H, device=DEV, dtype=DT) * 0.5).requires_grad_()
        W = (torch.randn(V, H, device=DEV, dtype=DT) * 0.02).requires_grad_()
        t = torch.randint(0, V, (T_TOK,), device=DEV)
        ours = M.FusedLinearCrossEntropyLoss()
        provs = [("flactl", lambda: ours(x, t, W)),
                 ("unfused", lambda: F.cross_entropy(x @ W.t(), t))]
        if FM is not None:
            fl = FM.FusedLinearCrossEntropyLoss()
            provs.insert(1, ("fla", lambda: fl(x, t, W)))
        ref_loss = None
        for name, f in provs:
            try:
                def fb():
                    f().backward()
                fb()
                torch.cuda.synchronize()
                x.grad = W.grad = None
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                loss = f()
                loss.backward()
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated() - base
                if ref_loss is None:
                    ref_loss = (loss.item(), x.grad.float().clone(), W.grad.float().clone())
                    err = [0.0, 0.0, 0.0]
                else:
                    err = [abs(loss.item() - ref_loss[0]),
                           ((x.grad.float() - ref_loss[1]).norm() / ref_loss[1].norm()).item(),
                           ((W.grad.float() - ref_loss[2]).norm() / ref_loss[2].norm()).item()]
                x.grad = W.grad = None
                ms = triton.testing.do_bench(fb, warmup=10, rep=50, grad_to_none=[x, W], return_mode="median")
                emit(op="fused_linear_ce", shape=[T_TOK, H, V], provider=name, mode="fwd+bwd", ms=round(ms, 3),
                     peak_extra_gib=round(peak / 2**30, 3), inputs_gib=round(base / 2**30, 3),
                     loss=round(loss.item(), 5), diff_vs_flactl=err)
            except Exception as e:
                emit(op="fused_linear_ce", shape=[T_TOK, H, V], provider=name, mode="error",
                     error=f"{type(e).__name__}: {e}"[:300])
                traceback.print_exc()
            x.grad = W.grad = None
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
    print("\n%-32s %-22s %-14s %-8s %10s %10s" % ("op", "shape", "provider", "mode", "ms", "GB/s|GiB"))
    for r in RESULTS:
        if "ms" in r:
            extra = r.get("gbps", r.get("peak_extra_gib", ""))
            print("%-32s %-22s %-14s %-8s %10.4f %10s" % (r["op"], str(r.get("shape")), r["provider"], r["mode"],
                                                          r["ms"], extra))
        elif r.get("mode") == "error":
            print("%-32s %-22s %-14s ERROR %s" % (r["op"], str(r.get("shape")), r["provider"], r["error"][:80]))
    sys.exit(0)
