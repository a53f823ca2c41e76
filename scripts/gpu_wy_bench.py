"""A/B of the WY (UT transform) forward kernels: the previous one vs the register-resident one.

    PYTHONPATH=$PWD python scripts/gpu_wy_bench.py                 # H100: 4 shapes x {ungated, gated}, bf16
    PYTHONPATH=$PWD python scripts/gpu_wy_bench.py --tiny          # CPU smoke test (TRITON_INTERPRET=1, fp32)

Variants (chosen through FLACTL_WY_FWD, read by ``delta_wy.wy_fwd`` on every call):
  old  the previous kernel (L and A round-trip through a global fp32 buffer)
  new  the default: register-resident blocks, diagonal blocks by row forward substitution
  rec  the same with the diagonal blocks by recursive 2x2 block substitution (exact-fp32 16x16 products)

Per shape (B, T, H, D = K = V) and gating:
  (a) correctness: w, u, A of every variant vs ``old`` (max abs and relative RMS difference; A also vs old's
      A rounded to the input dtype, which is what the backward reads), and for the first shape (plus a
      beta ~ 1 / correlated-keys stress input) vs a float32 torch reference of the UT transform;
  (b) ``triton.testing.do_bench`` median ms of ``wy_fwd`` and of the whole chunk_(gated_)delta_rule
      forward with each variant (each warmed up outside do_bench first), and the wy_fwd memory floor.
One JSON line per shape is printed; everything is written to $OUT/wy_bench.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--tiny", action="store_true", help="tiny shapes; on a machine without CUDA: interpreter, float32")
ap.add_argument("--variants", default="old,new,rec", help="comma-separated subset of old,new,rec")
ap.add_argument("--shapes", default=None, help="e.g. 4,4096,16,128;1,16384,16,128 (B,T,H,D)")
ap.add_argument("--skip-fwd", action="store_true", help="time wy_fwd only, not the whole forward")
args = ap.parse_args()

import torch  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
if DEV == "cpu":
    if not args.tiny:
        sys.exit("no CUDA device: run with --tiny (interpreter smoke test)")
    os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported
DTYPE = torch.bfloat16 if DEV == "cuda" else torch.float32

import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flactl.ops.common import delta_wy  # noqa: E402
from flactl.ops.delta_rule import chunk_delta_rule  # noqa: E402
from flactl.ops.gated_delta_rule import chunk_gated_delta_rule  # noqa: E402
from flactl.ops.utils.cumsum import chunk_local_cumsum  # noqa: E402

ENV = {"old": "old", "new": "", "rec": "rec"}
VARIANTS = [x for x in args.variants.split(",") if x]
for x in VARIANTS:
    if x not in ENV:
        sys.exit(f"unknown variant {x!r}")
if args.shapes:
    SHAPES = [tuple(int(n) for n in s.split(",")) for s in args.shapes.split(";")]
elif args.tiny:
    SHAPES = [(2, 130, 2, 32), (1, 200, 2, 64)]
else:
    SHAPES = [(4, 4096, 16, 128), (1, 16384, 16, 128), (8, 2048, 16, 128), (4, 4096, 32, 64)]
BW = 3.0e12  # H100 copy bandwidth (bytes/s), DESIGN.md

try:
    COMMIT = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except Exception:  # noqa: BLE001
    COMMIT = None
META = {"device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu (TRITON_INTERPRET=1)",
        "torch": torch.__version__, "triton": triton.__version__, "dtype": str(DTYPE).replace("torch.", ""),
        "commit": COMMIT}
RESULTS = {"meta": META, "shapes": []}


def dump():
    out = os.environ.get("OUT", ".")
    with open(os.path.join(out, "wy_bench.json"), "w") as f:
        json.dump(RESULTS, f, indent=1)


def use(variant):
    os.environ["FLACTL_WY_FWD"] = ENV[variant]


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def bench(fn):
    """Median ms: do_bench on CUDA; on CPU one wall-clock run (interpreter: only proves it runs)."""
    fn()  # warm-up (compilation) outside the timed region
    sync()
    if DEV == "cuda":
        fn()
        sync()
        return round(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"), 4)
    t0 = time.perf_counter()
    fn()
    return round((time.perf_counter() - t0) * 1e3, 1)


def diff(ref, got):
    ref, got = ref.double(), got.double()
    if not torch.isfinite(got).all():
        return {"max_abs": float("inf"), "rel_rms": float("inf")}
    return {"max_abs": float(f"{(ref - got).abs().max().item():.3e}"),
            "rel_rms": float(f"{((ref - got).norm() / ref.norm().clamp_min(1e-30)).item():.3e}")}


def make(B, T, H, D, gated, stress=False):
    k = torch.randn(B, T, H, D, device=DEV)
    if stress:  # keys sharing one direction, beta ~ 1: ill-conditioned I + L
        k = 0.3 * k + 0.7 * torch.randn(1, 1, H, D, device=DEV)
    k = F.normalize(k, dim=-1)
    q = torch.randn(B, T, H, D, device=DEV)
    v = torch.randn(B, T, H, D, device=DEV)
    lo = 0.95 if stress else 0.0
    beta = torch.empty(B, T, H, device=DEV).uniform_(lo, 1.0)
    g = None
    if gated:
        g = torch.empty(B, T, H, device=DEV).uniform_(-0.05, 0.0) if stress else F.logsigmoid(
            torch.randn(B, T, H, device=DEV))
    return q.to(DTYPE), k.to(DTYPE), v.to(DTYPE), beta.to(DTYPE), g


def ref_wy(k, v, beta, g, dtype=torch.float32, C=64):
    """float32 torch UT transform per chunk: A = (I + L)^{-1}, u = A diag(beta) V, w = A diag(beta e^gc) K."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    NT = triton.cdiv(T, C)
    pad = NT * C - T

    def chunks(x):  # [B, T, H, ...] -> [B, H, NT, C, ...]
        x = x.to(dtype)
        if x.dim() == 4:
            return F.pad(x, (0, 0, 0, 0, 0, pad)).view(B, NT, C, H, x.shape[-1]).permute(0, 3, 1, 2, 4)
        return F.pad(x, (0, 0, 0, pad)).view(B, NT, C, H).permute(0, 3, 1, 2)

    kc, vc, bc = chunks(k), chunks(v), chunks(beta)
    gc = chunks(g).cumsum(-1) if g is not None else torch.zeros_like(bc)
    lower = torch.ones(C, C, device=k.device, dtype=torch.bool).tril(-1)
    gam = torch.exp(torch.where(lower, gc[..., :, None] - gc[..., None, :], torch.zeros((), device=k.device,
                                                                                          dtype=dtype)))
    L = torch.where(lower, bc[..., :, None] * (kc @ kc.transpose(-1, -2)) * gam, 0)
    eye = torch.eye(C, device=k.device, dtype=dtype)
    A = torch.linalg.solve_triangular(eye + L, eye.expand_as(L), upper=False, unitriangular=True)
    u = A @ (bc[..., None] * vc)
    w = A @ ((bc * gc.exp())[..., None] * kc)

    def back(x):  # [B, H, NT, C, D] -> [B, T, H, D]
        return x.permute(0, 2, 3, 1, 4).reshape(B, NT * C, H, x.shape[-1])[:, :T]

    return back(A), back(w), back(u)


def run_variants(k, v, beta, g):
    B, T = k.shape[:2]
    NT = triton.cdiv(T, 64)
    gc = chunk_local_cumsum(g, 64) if g is not None else None
    outs = {}
    for var in VARIANTS:
        use(var)
        outs[var] = delta_wy.wy_fwd(k, v, beta, gc, None, None, NT)
        sync()
    return outs, gc, NT


def check(outs, ref=None):
    res = {}
    base = outs.get("old")
    for var, (A, w, u) in outs.items():
        r = {}
        if ref is not None:
            rA, rw, ru = ref
            r["vs_ref"] = {"A": diff(rA, A), "w": diff(rw, w), "u": diff(ru, u)}
        if base is not None and var != "old":
            bA, bw, bu = base
            r["vs_old"] = {"A": diff(bA, A), "A_vs_old_in_input_dtype": diff(bA.to(A.dtype), A),
                           "w": diff(bw, w), "u": diff(bu, u)}
        r["A_dtype"] = str(A.dtype).replace("torch.", "")
        r["finite"] = bool(all(torch.isfinite(t).all() for t in (A, w, u)))
        res[var] = r
    return res


def kernel_info():
    """Registers / spills / shared memory of every compiled WY forward kernel (CUDA only; best effort:
    the cache layout differs between Triton versions)."""
    out = {}
    for name, fn in (("new/rec", delta_wy.delta_wy_fwd_kernel), ("old", delta_wy._old_delta_wy_fwd_kernel)):
        rows = []
        try:
            for cache in fn.device_caches.values():
                for key, ck in cache[0].items():
                    ck._init_handles()
                    md = ck.metadata
                    rows.append({"n_regs": getattr(ck, "n_regs", None), "n_spills": getattr(ck, "n_spills", None),
                                 "shared": getattr(md, "shared", None), "num_warps": getattr(md, "num_warps", None),
                                 "key": str(key)[-160:]})
        except Exception as e:  # noqa: BLE001
            rows.append({"error": repr(e)[:160]})
        out[name] = rows
    return out


def floor_ms(B, T, H, D, a_bytes):
    es = torch.finfo(DTYPE).bits // 8
    n = B * T * H
    by = n * D * es * 4 + n * 64 * a_bytes + n * es  # k, v read; w, u written; A written; beta
    return round(by / BW * 1e3, 4)


def main():
    for i_s, (B, T, H, D) in enumerate(SHAPES):
        first = i_s == 0  # reference checks on the first shape (ungated and gated)
        for gated in (False, True):
            torch.manual_seed(0)
            q, k, v, beta, g = make(B, T, H, D, gated)
            rec = {"shape": [B, T, H, D], "gated": gated, "dtype": META["dtype"]}
            outs, gc, NT = run_variants(k, v, beta, g)
            rec["check"] = check(outs, ref_wy(k, v, beta, g) if first else None)
            del outs
            if first:  # stress input, float32 reference
                sq, sk, sv, sb, sg = make(B, T, H, D, gated, stress=True)
                souts, _, _ = run_variants(sk, sv, sb, sg)
                rec["stress_check"] = check(souts, ref_wy(sk, sv, sb, sg))
                del souts, sq, sk, sv, sb, sg
            es = torch.finfo(DTYPE).bits // 8
            rec["wy_floor_ms"] = {var: floor_ms(B, T, H, D, 4 if var == "old" else es) for var in VARIANTS}
            rec["wy_fwd_ms"] = {}
            rec["fwd_ms"] = {}
            with torch.no_grad():
                for var in VARIANTS:
                    use(var)
                    rec["wy_fwd_ms"][var] = bench(lambda: delta_wy.wy_fwd(k, v, beta, gc, None, None, NT))
                if not args.skip_fwd:
                    for var in VARIANTS:
                        use(var)
                        if gated:
                            rec["fwd_ms"][var] = bench(lambda: chunk_gated_delta_rule(q, k, v, g, beta))
                        else:
                            rec["fwd_ms"][var] = bench(lambda: chunk_delta_rule(q, k, v, beta))
            if "old" in VARIANTS:
                rec["speedup_vs_old"] = {var: round(rec["wy_fwd_ms"]["old"] / rec["wy_fwd_ms"][var], 3)
                                         for var in VARIANTS if var != "old" and rec["wy_fwd_ms"][var] > 0}
            RESULTS["shapes"].append(rec)
            print(json.dumps(rec), flush=True)
            dump()
    os.environ.pop("FLACTL_WY_FWD", None)
    # one-line summary table
    for r in RESULTS["shapes"]:
        print(f"{str(tuple(r['shape'])):22s} {'gated' if r['gated'] else 'delta':5s} wy_fwd ms "
              + " ".join(f"{v}={ms}" for v, ms in r["wy_fwd_ms"].items())
              + " | fwd ms " + " ".join(f"{v}={ms}" for v, ms in r["fwd_ms"].items()), flush=True)


if __name__ == "__main__":
    print(json.dumps(META), flush=True)
    main()
    RESULTS["kernels"] = kernel_info()
    print(json.dumps({"kernels": RESULTS["kernels"]}), flush=True)
    dump()
