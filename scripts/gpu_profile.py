"""Where does a forward+backward step spend its time? Kernel-level profile of the chunk ops (GPU).

    PYTHONPATH=$PWD python scripts/gpu_profile.py [--ops simple_gla,retention,gla,delta_rule,gated_delta_rule]
                                                  [--shape 4,4096,16,128] [--fwd-only] [--out $OUT/profile.json]

An op named fla_<op> (e.g. fla_gated_delta_rule) profiles fla's op of that name (the peer on PYTHONPATH).

For each op: the step's wall time (do_bench median), the summed GPU kernel time per step from
torch.profiler and the gap between them (host overhead or idle GPU), and the kernels sorted by time.
Written because the GLA-family fwd+bwd measured ~0.6 ms above the sum of its kernels' do_bench times.
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernel_time import kernel_times  # noqa: E402
from flactl.ops import (chunk_delta_rule, chunk_gated_delta_rule, chunk_gla, chunk_retention,  # noqa: E402
                        chunk_simple_gla)


def inputs(op, B, T, H, D, dev):
    t = lambda *s, dt=torch.bfloat16: torch.randn(*s, device=dev, dtype=dt)  # noqa: E731
    d = dict(q=t(B, T, H, D), k=t(B, T, H, D), v=t(B, T, H, D))
    if op in ("delta_rule", "gated_delta_rule"):
        d["k"] = F.normalize(d["k"].float(), dim=-1).to(torch.bfloat16)
        d["beta"] = torch.rand(B, T, H, device=dev, dtype=torch.bfloat16)
    if op in ("simple_gla", "gated_delta_rule"):
        d["g"] = F.logsigmoid(t(B, T, H, dt=torch.float32)) / 16
    if op == "gla":
        d["g"] = (F.logsigmoid(t(B, T, H, D, dt=torch.float32)) / 16).to(torch.bfloat16)
    return {n: x.requires_grad_() for n, x in d.items()}


OPS = {"simple_gla": chunk_simple_gla, "retention": chunk_retention, "gla": chunk_gla,
       "delta_rule": chunk_delta_rule, "gated_delta_rule": chunk_gated_delta_rule}


def op_fn(op):
    """flactl's op, or fla's same-named op for "fla_<op>" (the peer, when importable: fla 0.6.0)."""
    if not op.startswith("fla_"):
        return OPS[op]
    import importlib
    name = op[4:]
    return getattr(importlib.import_module(f"fla.ops.{name}"), f"chunk_{name}")


def profile(op, shape, dev, steps=5, fwd_only=False):
    fn, ins = op_fn(op), inputs(op.removeprefix("fla_"), *shape, dev)
    do = torch.randn_like(ins["v"])

    def step():
        if fwd_only:  # the no-grad forward (inference / prefill)
            with torch.no_grad():
                fn(**ins)
        else:
            fn(**ins)[0].backward(do)
    grads = list(ins.values())
    for _ in range(3):  # compile and autotune outside do_bench (it sizes its repeats from the first calls)
        step()
    torch.cuda.synchronize()
    wall = do_bench(step, warmup=25, rep=100, grad_to_none=None if fwd_only else grads)
    wall_fwd = do_bench(lambda: fn(**{n: x.detach() for n, x in ins.items()}))
    kernels, prof = kernel_times(step, steps, before=lambda: [setattr(x, "grad", None) for x in grads])
    total = sum(v[0] for v in kernels.values())
    # host side: where the CPU time of a step goes (a large gap above means the GPU waited for it)
    host = sorted(((ev.key[:70], ev.self_cpu_time_total / steps / 1e3, ev.count // steps)
                   for ev in prof.key_averages() if ev.device_type == torch.autograd.DeviceType.CPU),
                  key=lambda r: -r[1])[:12]
    rows = sorted(((k[:90], round(v[0], 4), v[1]) for k, v in kernels.items()), key=lambda r: -r[1])
    res = dict(op=op, shape=shape, wall_fwdbwd_ms=wall, wall_fwd_ms=wall_fwd, kernel_sum_ms=total,
               gap_ms=wall - total, kernels=rows)
    print(f"\n== {op} {shape}: fwd {wall_fwd:.3f} ms, {'fwd (no grad)' if fwd_only else 'fwd+bwd'} step wall {wall:.3f} ms, kernels {total:.3f} ms, "
          f"gap {wall - total:.3f} ms")
    for name, ms, n in rows[:25]:
        print(f"  {ms:8.4f} ms  x{n:<3d} {name}")
    print(f"  host (self CPU ms per step), alloc retries {torch.cuda.memory_stats().get('num_alloc_retries')}:")
    for name, ms, n in host:
        print(f"  {ms:8.4f} ms  x{n:<3d} {name}")
    res["host"] = host
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--shape", default="4,4096,16,128")
    ap.add_argument("--fwd-only", action="store_true", help="profile the no-grad forward only")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "profile.json"))
    a = ap.parse_args()
    shape = tuple(int(x) for x in a.shape.split(","))
    res = []
    for op in a.ops.split(","):
        try:
            res.append(profile(op, shape, "cuda", fwd_only=a.fwd_only))
        except Exception as e:  # noqa: BLE001 - keep profiling the others
            print(f"{op}: {type(e).__name__}: {e}")
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
