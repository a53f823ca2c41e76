"""GPU check + benchmark for the delta-rule family (run on the H100 via the `run` tool).

    PYTHONPATH=$PWD[:/tmp/peer] python scripts/gpu_delta.py [--skip-bench] [--quick]

1. bf16 correctness vs the float64 token-by-token oracle: outputs, final states, every gradient
   (q, k, v, beta, g, A_log, dt_bias, h0), GVA, varlen, head dims 64..256, T not multiple of 64,
   stress (beta ~ 1, correlated keys, strong decays, long T). fla's error vs the same oracle is
   printed beside ours when fla is importable.
2. Timings (triton.testing.do_bench, median ms) for flactl, fla 0.6.0 and causal SDPA in one run.
3. Decode step: bandwidth on state bytes vs a plain copy; batch-1 latency; CUDA-graph capture.
Writes $OUT/gpu_delta.json and prints a table last.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, os.getcwd())

from flactl.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule  # noqa: E402
from flactl.ops.gated_delta_rule import (  # noqa: E402
    chunk_gated_delta_rule, fused_recurrent_gated_delta_rule, naive_recurrent_gated_delta_rule)

from flactl.ops.comba import chunk_comba, fused_recurrent_comba, naive_recurrent_comba  # noqa: E402

try:
    from flactl.ops.gated_delta_product import chunk_gated_delta_product, naive_recurrent_gated_delta_product
except Exception:  # noqa: BLE001
    chunk_gated_delta_product = None

try:
    import fla.ops.delta_rule as fla_dr
    import fla.ops.gated_delta_rule as fla_gdr
    HAVE_FLA = True
except Exception as e:  # noqa: BLE001
    print("fla not importable:", repr(e)[:200])
    HAVE_FLA = False

dev = "cuda"
T0 = time.time()
FLA_CHECKS = False
FLA_CHUNK = False
RESULTS = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "checks": [], "bench": [], "decode": {}}


def dump():
    out = os.environ.get("OUT", ".")
    with open(os.path.join(out, "gpu_delta.json"), "w") as f:
        json.dump(RESULTS, f, indent=1)


def rel(ref, got):
    ref, got = ref.double(), got.double()
    if not torch.isfinite(got).all():
        return float("inf")
    return ((ref - got).norm() / ref.norm().clamp_min(1e-30)).item()


def make(B, T, H, HV, K, V, dtype=torch.bfloat16, beta_range=(0.0, 1.0), glow=-0.1, corr=0.0, logits=False):
    q = torch.randn(B, T, H, K, device=dev)
    k = torch.randn(B, T, H, K, device=dev)
    if corr:
        k = k * (1 - corr) + corr * torch.randn(1, 1, H, K, device=dev)
    k = F.normalize(k, dim=-1)
    v = torch.randn(B, T, HV, V, device=dev)
    beta = torch.empty(B, T, HV, device=dev).uniform_(*beta_range)
    g = torch.empty(B, T, HV, device=dev).uniform_(glow, 0.0)
    h0 = torch.randn(B, HV, K, V, device=dev) * 0.5
    return dict(q=q.to(dtype), k=k.to(dtype), v=v.to(dtype), beta=beta.to(dtype), g=g.float(), h0=h0)


def check(name, fn, ref_fn, inputs, grad_names, tol_o=8e-3, tol_g=2e-2, fla_fn=None):
    """Run fn (bf16) and ref_fn (float64) with a shared random cotangent; compare everything."""
    row = {"name": name}
    try:
        ours = {n: t.detach().clone().requires_grad_(n in grad_names) if torch.is_tensor(t) else t
                for n, t in inputs.items()}
        ref = {n: t.detach().double().clone().requires_grad_(n in grad_names)
               if torch.is_tensor(t) and t.is_floating_point() else t for n, t in inputs.items()}
        o, ht = fn(**ours)
        ro, rht = ref_fn(**ref)
        do, dht = torch.randn_like(ro), torch.randn_like(rht)
        torch.autograd.backward([o.double(), ht.double()], [do, dht])
        torch.autograd.backward([ro, rht], [do, dht])
        errs = {"o": rel(ro, o), "ht": rel(rht, ht)}
        for n in grad_names:
            errs["d" + n] = rel(ref[n].grad, ours[n].grad)
        row["errs"] = errs
        ok = errs["o"] <= tol_o and errs["ht"] <= tol_o and all(errs["d" + n] <= tol_g for n in grad_names)
        row["ok"] = bool(ok)
        if fla_fn is not None:
            try:
                fin = {n: t.detach().clone().requires_grad_(n in grad_names) if torch.is_tensor(t) else t
                       for n, t in inputs.items()}
                fo, fht = fla_fn(**fin)
                ferr = {"o": rel(ro, fo), "ht": rel(rht, fht)}
                try:
                    torch.autograd.backward([fo.double(), fht.double()], [do, dht])
                    for n in grad_names:
                        ferr["d" + n] = rel(ref[n].grad, fin[n].grad) if fin[n].grad is not None else None
                except Exception as e:  # noqa: BLE001
                    ferr["bwd"] = repr(e)[:120]
                row["fla_errs"] = ferr
            except Exception as e:  # noqa: BLE001
                row["fla_errs"] = {"error": repr(e)[:160]}
    except Exception as e:  # noqa: BLE001
        row["ok"] = False
        row["error"] = traceback.format_exc()[-1500:]
    RESULTS["checks"].append(row)
    dump()
    print(f"[{time.time() - T0:.0f}s]", json.dumps(row)[:900], flush=True)


def naive_ref(q, k, v, beta, g=None, h0=None, cu_seqlens=None, **kw):
    return naive_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True,
                                            cu_seqlens=cu_seqlens, dtype=torch.float64, **kw)


def run_checks(quick):
    # delta rule, several head dims and odd T
    for (B, T, H, K, V) in [(2, 300, 2, 64, 64), (1, 200, 2, 128, 128), (1, 130, 1, 256, 256), (2, 65, 2, 100, 48)]:
        x = make(B, T, H, H, K, V)
        x.pop("g")
        check(f"chunk_delta_rule B{B} T{T} H{H} K{K} V{V}",
              lambda q, k, v, beta, h0: chunk_delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True),
              lambda q, k, v, beta, h0: naive_ref(q, k, v, beta, h0=h0), x, ["q", "k", "v", "beta", "h0"],
              fla_fn=(lambda q, k, v, beta, h0: fla_dr.chunk_delta_rule(q, k, v, beta, initial_state=h0,
                                                                       output_final_state=True)) if FLA_CHECKS and K % 16 == 0 else None)
    # gated, GVA, with the fla comparison (fla's gated backward refuses on this GPU/Triton)
    for (B, T, H, HV, K, V) in [(2, 300, 2, 4, 128, 128), (1, 130, 1, 2, 256, 256), (2, 63, 2, 2, 64, 32)]:
        x = make(B, T, H, HV, K, V, glow=-0.3)
        check(f"chunk_gated_delta_rule B{B} T{T} H{H} HV{HV} K{K} V{V}",
              lambda q, k, v, beta, g, h0: chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0,
                                                                  output_final_state=True),
              lambda q, k, v, beta, g, h0: naive_ref(q, k, v, beta, g=g, h0=h0), x,
              ["q", "k", "v", "beta", "g", "h0"],
              fla_fn=(lambda q, k, v, beta, g, h0: fla_gdr.chunk_gated_delta_rule(
                  q, k, v, g, beta, initial_state=h0, output_final_state=True)) if FLA_CHECKS else None)
    # gate + beta from logits + l2norm in op, varlen with uneven lengths (incl. length 1)
    lens = [1, 63, 65, 130, 200, 7]
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), device=dev)
    T = int(cu[-1])
    HV = 4
    x = make(1, T, 2, HV, 128, 128)
    x["h0"] = torch.randn(len(lens), HV, 128, 128, device=dev) * 0.5
    x["q"] = (x["q"].float() * 3).to(torch.bfloat16)
    x["beta"] = torch.randn(1, T, HV, device=dev).to(torch.bfloat16)
    x["g"] = torch.randn(1, T, HV, device=dev).to(torch.bfloat16)
    x["A_log"] = torch.rand(HV, device=dev).log()
    x["dt_bias"] = torch.randn(HV, device=dev)
    kw = dict(use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True, use_beta_sigmoid_in_kernel=True)
    for mode, fn in (("chunk", chunk_gated_delta_rule), ("fused_recurrent", fused_recurrent_gated_delta_rule)):
        check(f"{mode}_gated_delta_rule varlen{lens} gate/beta/l2norm in op",
              lambda q, k, v, beta, g, h0, A_log, dt_bias, fn=fn: fn(
                  q, k, v, g, beta, initial_state=h0, output_final_state=True, cu_seqlens=cu, A_log=A_log,
                  dt_bias=dt_bias, **kw),
              lambda q, k, v, beta, g, h0, A_log, dt_bias: naive_ref(q, k, v, beta, g=g, h0=h0, cu_seqlens=cu,
                                                                     A_log=A_log, dt_bias=dt_bias,
                                                                     use_qk_l2norm_in_kernel=True, **{
                                                                         "use_gate_in_kernel": True,
                                                                         "use_beta_sigmoid_in_kernel": True}),
              x, ["q", "k", "v", "beta", "g", "h0", "A_log", "dt_bias"])
    # fused recurrent delta rule
    x = make(2, 100, 2, 2, 128, 64)
    x.pop("g")
    check("fused_recurrent_delta_rule B2 T100 K128 V64",
          lambda q, k, v, beta, h0: fused_recurrent_delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True),
          lambda q, k, v, beta, h0: naive_ref(q, k, v, beta, h0=h0), x, ["q", "k", "v", "beta", "h0"])
    # stress: beta ~ 1, correlated keys, strong decays at their lower end, long T
    for glow, tag in ((-0.02, "weak decay"), (-8.0, "strong decay")):
        x = make(1, 1024 if quick else 2048, 2, 2, 128, 128, beta_range=(0.95, 1.0), glow=glow, corr=0.7)
        check(f"STRESS chunk_gated_delta_rule beta~1 corr keys {tag} T{x['q'].shape[1]}",
              lambda q, k, v, beta, g, h0: chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0,
                                                                  output_final_state=True),
              lambda q, k, v, beta, g, h0: naive_ref(q, k, v, beta, g=g, h0=h0), x,
              ["q", "k", "v", "beta", "g", "h0"], tol_o=2e-2, tol_g=5e-2,
              fla_fn=(lambda q, k, v, beta, g, h0: fla_gdr.chunk_gated_delta_rule(
                  q, k, v, g, beta, initial_state=h0, output_final_state=True)) if FLA_CHECKS else None)
    for mode in ("chunk", "fused_recurrent"):
        x = make(1, 200, 2, 4, 128, 64, glow=-0.3)
        x["p"] = torch.randn_like(x["k"])

        def fc(q, k, v, beta, g, h0, p, mode=mode):
            if mode == "chunk":
                return chunk_comba(q, k, v, p, g, beta, initial_state=h0, output_final_state=True,
                                   use_qk_l2norm_in_kernel=True)
            return fused_recurrent_comba(q, k, p, v, g, beta, initial_state=h0, output_final_state=True,
                                         use_qk_l2norm_in_kernel=True)
        check(f"{mode}_comba GVA K128 V64 l2norm", fc,
              lambda q, k, v, beta, g, h0, p: naive_recurrent_comba(
                  q, k, v, p, g, beta, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True,
                  dtype=torch.float64), x, ["q", "k", "v", "beta", "g", "h0", "p"])
    if chunk_gated_delta_product is not None:
        nh = 2
        B, T, H, K, V = 1, 130, 2, 64, 64
        x = make(B, T * nh, H, H, K, V)
        x["q"] = x["q"][:, :T].contiguous()
        x["g"] = x["g"][:, :T].contiguous()
        check("chunk_gated_delta_product nh=2",
              lambda q, k, v, beta, g, h0: chunk_gated_delta_product(q, k, v, g, beta, num_householder=nh,
                                                                     initial_state=h0, output_final_state=True),
              lambda q, k, v, beta, g, h0: naive_recurrent_gated_delta_product(
                  q, k, v, g, beta, num_householder=nh, initial_state=h0, output_final_state=True,
                  dtype=torch.float64), x, ["q", "k", "v", "beta", "g", "h0"])


def bench_ms(fn, grad_to_none=None):
    return triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median")


def bench_shape(B, T, H, D):
    row = {"B": B, "T": T, "H": H, "D": D}
    dt = torch.bfloat16
    q = torch.randn(B, T, H, D, device=dev, dtype=dt, requires_grad=True)
    k = F.normalize(torch.randn(B, T, H, D, device=dev), dim=-1).to(dt).requires_grad_()
    v = torch.randn(B, T, H, D, device=dev, dtype=dt, requires_grad=True)
    beta = torch.rand(B, T, H, device=dev, dtype=dt).sigmoid().requires_grad_()
    g = F.logsigmoid(torch.randn(B, T, H, device=dev)).requires_grad_()
    do = torch.randn_like(v)
    leaves = [q, k, v, beta, g]

    def fb(f):
        def run():
            o = f()[0]
            o.backward(do)
        return run

    impls = {
        "delta": lambda: chunk_delta_rule(q, k, v, beta),
        "gdn": lambda: chunk_gated_delta_rule(q, k, v, g, beta),
    }
    if FLA_CHUNK:
        impls["fla_delta"] = lambda: fla_dr.chunk_delta_rule(q, k, v, beta)
        impls["fla_gdn"] = lambda: fla_gdr.chunk_gated_delta_rule(q, k, v, g, beta)
    for name, f in impls.items():
        # fwd: no grad (inference / prefill); fwd_train: the forward of a training step (builds the graph
        # and keeps what the backward needs); fwdbwd: forward + backward
        for mode in ("fwd", "fwd_train", "fwdbwd"):
            try:
                with torch.set_grad_enabled(mode != "fwd"):
                    row[f"{name}_{mode}"] = round(bench_ms(fb(f) if mode == "fwdbwd" else f, leaves), 4)
            except Exception as e:  # noqa: BLE001
                row[f"{name}_{mode}"] = "ERR " + repr(e)[:100]
    qs, ks, vs = (x.detach().transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v))
    sd = lambda: (F.scaled_dot_product_attention(qs, ks, vs, is_causal=True),)  # noqa: E731
    with torch.no_grad():
        row["sdpa_fwd"] = round(bench_ms(sd), 4)
    dos = do.transpose(1, 2).contiguous()

    def sdb():
        F.scaled_dot_product_attention(qs, ks, vs, is_causal=True).backward(dos)
    row["sdpa_fwdbwd"] = round(bench_ms(sdb, [qs, ks, vs]), 4)
    RESULTS["bench"].append(row)
    dump()
    print(f"[{time.time() - T0:.0f}s]", json.dumps(row), flush=True)


def bench_decode():
    res = {}
    dt = torch.bfloat16
    for Bd in (256, 1):
        H, D = 32, 128
        q = torch.randn(Bd, 1, H, D, device=dev, dtype=dt)
        k = F.normalize(torch.randn(Bd, 1, H, D, device=dev), dim=-1).to(dt)
        v = torch.randn(Bd, 1, H, D, device=dev, dtype=dt)
        g = F.logsigmoid(torch.randn(Bd, 1, H, device=dev))
        beta = torch.rand(Bd, 1, H, device=dev, dtype=dt)
        h = torch.randn(Bd, H, D, D, device=dev)
        state_bytes = 2 * h.numel() * 4
        with torch.no_grad():
            f_new = lambda: fused_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h,  # noqa: E731
                                                             output_final_state=True)
            hh = h.clone()
            f_inp = lambda: fused_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=hh,  # noqa: E731
                                                             output_final_state=True, inplace_final_state=True)
            dst = torch.empty_like(h)
            t_copy = bench_ms(lambda: dst.copy_(h))
            r = {"copy_ms": t_copy, "copy_TBps": state_bytes / t_copy / 1e9}
            for name, f in (("new_state", f_new), ("inplace", f_inp)):
                t = bench_ms(f)
                r[f"{name}_ms"] = t
                r[f"{name}_TBps"] = state_bytes / t / 1e9
                r[f"{name}_frac_of_copy"] = t_copy / t
            # wall clock per call incl. Python (what a decode loop sees), after warm-up
            for _ in range(10):
                f_inp()
            torch.cuda.synchronize()
            n = 200
            t0 = time.perf_counter()
            for _ in range(n):
                f_inp()
            torch.cuda.synchronize()
            r["inplace_wall_us_per_call"] = (time.perf_counter() - t0) / n * 1e6
            if HAVE_FLA:
                try:
                    ff = lambda: fla_gdr.fused_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h,  # noqa: E731
                                                                          output_final_state=True)
                    t = bench_ms(ff)
                    r["fla_ms"] = t
                    r["fla_frac_of_copy"] = t_copy / t
                except Exception as e:  # noqa: BLE001
                    r["fla_ms"] = "ERR " + repr(e)[:100]
            # CUDA graph capture (proves no host sync inside the step)
            try:
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    f_inp()
                torch.cuda.current_stream().wait_stream(s)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    f_inp()
                graph.replay()
                torch.cuda.synchronize()
                r["cuda_graph"] = "ok"
                r["graph_replay_ms"] = bench_ms(graph.replay)
            except Exception as e:  # noqa: BLE001
                r["cuda_graph"] = "ERR " + repr(e)[:160]
        res[f"B{Bd}"] = r
        print(json.dumps({f"decode B{Bd}": r}), flush=True)
    RESULTS["decode"] = res


def profile_pieces(B=4, T=4096, H=16, D=128, gated=True):
    """Time each kernel of the chunk forward/backward separately (where the time goes)."""
    from flactl.ops.common import delta_h, delta_o, delta_wy
    from flactl.ops.common.delta_chunk import delta_chunk_bwd, delta_chunk_fwd
    from flactl.ops.utils.cumsum import chunk_local_cumsum
    dt = torch.bfloat16
    q = torch.randn(B, T, H, D, device=dev, dtype=dt)
    k = F.normalize(torch.randn(B, T, H, D, device=dev), dim=-1).to(dt)
    v = torch.randn(B, T, H, D, device=dev, dtype=dt)
    beta = torch.rand(B, T, H, device=dev, dtype=dt)
    g = F.logsigmoid(torch.randn(B, T, H, device=dev)) if gated else None
    NT = triton.cdiv(T, 64)
    sc = D ** -0.5
    r = {}
    r["cumsum"] = bench_ms(lambda: chunk_local_cumsum(g, 64)) if gated else 0
    gc = chunk_local_cumsum(g, 64) if gated else None
    r["wy_fwd(kkt+solve+wu)"] = bench_ms(lambda: delta_wy.wy_fwd(k, v, beta, gc, None, None, NT))
    A, w, u = delta_wy.wy_fwd(k, v, beta, gc, None, None, NT)
    r["fwd_h"] = bench_ms(lambda: delta_h.fwd_h(k, w, u, gc, None, False, None, None, B, NT))
    h, vn, _ = delta_h.fwd_h(k, w, u, gc, None, False, None, None, B, NT)
    r["fwd_o"] = bench_ms(lambda: delta_o.fwd_o(q, k, vn, h, gc, sc, None, None, NT))
    r["fwd_total"] = bench_ms(lambda: delta_chunk_fwd(q, k, v, beta, g, sc, None, False, None))
    o, _, saved = delta_chunk_fwd(q, k, v, beta, g, sc, None, False, None)
    do = torch.randn_like(o)
    r["bwd_dv_local"] = bench_ms(lambda: delta_o.bwd_dv_local(q, k, gc, do, sc, None, None, NT))
    dvl = delta_o.bwd_dv_local(q, k, gc, do, sc, None, None, NT)
    r["bwd_dh"] = bench_ms(lambda: delta_h.bwd_dh(q, k, w, gc, None, None, do, dvl, sc, None, None, B, NT))
    dh, _, dv2 = delta_h.bwd_dh(q, k, w, gc, None, None, do, dvl, sc, None, None, B, NT)
    r["bwd_dqkwg"] = bench_ms(lambda: delta_o.bwd_dqkwg(q, k, vn, h, dh, do, dv2, gc, sc, None, None, NT))
    dq, dk, dw, dgc = delta_o.bwd_dqkwg(q, k, vn, h, dh, do, dv2, gc, sc, None, None, NT)
    r["wy_bwd"] = bench_ms(lambda: delta_wy.wy_bwd(k, v, beta, gc, A, dw, dv2, dk, None, None, NT))
    r["bwd_total"] = bench_ms(lambda: delta_chunk_bwd(q, k, v, beta, g, sc, None, None, saved, do, None))
    r = {kk: round(vv, 4) for kk, vv in r.items()}
    RESULTS.setdefault("profile", {})[f"{'gdn' if gated else 'delta'} B{B} T{T} H{H} D{D}"] = r
    print("profile", "gated" if gated else "delta", json.dumps(r), flush=True)


def debug_configs():
    """Finiteness/accuracy of each forward intermediate over a few small configs (bug hunting)."""
    from flactl.ops.common.delta_chunk import delta_chunk_fwd
    for (gated, K, V, T, B, H) in [(1, 64, 32, 63, 2, 2), (0, 64, 32, 63, 2, 2), (1, 64, 64, 63, 2, 2),
                                   (1, 128, 32, 63, 2, 2), (1, 64, 32, 130, 2, 2), (1, 64, 32, 63, 1, 1),
                                   (1, 64, 16, 63, 1, 1)]:
        x = make(B, T, H, H, K, V, glow=-0.3)
        g = x["g"] if gated else None
        o, ht, (gc, A, w, h, vn) = delta_chunk_fwd(x["q"], x["k"], x["v"], x["beta"], g, K ** -0.5, x["h0"], True,
                                                  None)
        ro, rht = naive_ref(x["q"], x["k"], x["v"], x["beta"], g=g, h0=x["h0"])
        fin = {n: bool(torch.isfinite(t).all()) for n, t in (("A", A), ("w", w), ("h", h), ("v_new", vn),
                                                             ("o", o), ("ht", ht))}
        print("debug", dict(gated=gated, K=K, V=V, T=T, B=B, H=H), fin, "o_err", rel(ro, o), "ht_err", rel(rht, ht),
              flush=True)
        RESULTS.setdefault("debug", []).append([gated, K, V, T, B, H, fin, rel(ro, o)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-bench", action="store_true", help="skip the chunk-op shapes (not the decode step)")
    ap.add_argument("--skip-checks", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-fla", action="store_true", help="skip fla (its autotuning costs minutes per shape)")
    ap.add_argument("--no-fla-chunk", action="store_true", help="fla only in the decode benchmark")
    ap.add_argument("--fla-checks", action="store_true", help="compare fla's errors in the checks too")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--shapes", default="8,2048,16,128;4,4096,16,128;1,16384,16,128;4,4096,32,64")
    args = ap.parse_args()
    global HAVE_FLA, FLA_CHECKS
    if args.no_fla:
        HAVE_FLA = False
    FLA_CHECKS = args.fla_checks and HAVE_FLA
    global FLA_CHUNK
    FLA_CHUNK = HAVE_FLA and not args.no_fla_chunk
    t0 = time.time()
    if args.debug:
        debug_configs()
    if not args.skip_checks:
        run_checks(args.quick)
    print(f"checks done in {time.time() - t0:.1f}s", flush=True)
    if not args.skip_bench:
        for gated in (False, True):
            try:
                profile_pieces(gated=gated)
            except Exception as e:  # noqa: BLE001
                print("profile failed", repr(e)[:300], flush=True)
        for s in args.shapes.split(";"):
            B, T, H, D = map(int, s.split(","))
            try:
                bench_shape(B, T, H, D)
            except Exception as e:  # noqa: BLE001
                print("bench failed", s, repr(e)[:300], flush=True)
            torch.cuda.empty_cache()
    # the decode step is its own measurement: --skip-bench skips the chunk shapes only (2026-11-22 a
    # "decode only" call measured nothing because it sat inside the bench branch)
    if not args.skip_decode:
        try:
            bench_decode()
        except Exception as e:  # noqa: BLE001
            print("decode bench failed", repr(e)[:300], flush=True)
    out = os.environ.get("OUT", ".")
    with open(os.path.join(out, "gpu_delta.json"), "w") as f:
        json.dump(RESULTS, f, indent=1)
    print("\n==== summary ====")
    for c in RESULTS["checks"]:
        e = c.get("errs", {})
        print(f"{'OK ' if c['ok'] else 'BAD'} {c['name'][:70]:70s} max_err={max(e.values()) if e else 'ERR':.3e}"
              if e else f"BAD {c['name']} {c.get('error', '')[-300:]}")
    for r in RESULTS["bench"]:
        print(r)
    print(f"total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
