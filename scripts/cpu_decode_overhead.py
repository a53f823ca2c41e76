"""Host (Python) overhead of one T=1 decode step of the fused recurrent ops, measured on the CPU.

The GPU cost of a batch-1 decode step is mostly host time (H100: ~38 µs per call without a CUDA
graph, ~6 µs inside one), so what our Python does before the launch matters. This script times
exactly that, with no GPU:

* ``TRITON_INTERPRET=1`` makes ``use_triton`` pick the Triton branch for CPU tensors (through its
  real code, so its cost is counted; on a GPU the check is the same size);
* every jit kernel the decode path launches is replaced by a stub whose ``kernel[grid](...)`` does
  nothing, so only our code up to the launch is timed (Triton's own launcher, ~5-8 µs, is not ours).

Usage::

    .venv/bin/python scripts/cpu_decode_overhead.py            # timings
    .venv/bin/python scripts/cpu_decode_overhead.py --profile  # plus a cProfile of each case
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

os.environ.setdefault("TRITON_INTERPRET", "1")  # before flactl reads it

import torch  # noqa: E402

import flactl.ops.common.delta_recurrent as delta_recurrent  # noqa: E402
import flactl.ops.common.fused_recurrent as fused_recurrent  # noqa: E402
from flactl.ops.gated_delta_rule import fused_recurrent_gated_delta_rule  # noqa: E402
from flactl.ops.simple_gla import fused_recurrent_simple_gla  # noqa: E402


class _NoLaunch:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **meta)`` is a no-op."""

    def __getitem__(self, grid):
        return self._launch

    @staticmethod
    def _launch(*args, **kwargs):
        return None


def stub_kernels():
    fused_recurrent.fused_recurrent_fwd_kernel = _NoLaunch()
    delta_recurrent.delta_fused_recurrent_fwd_kernel = _NoLaunch()


def make_cases(H=32, D=128, dtype=torch.bfloat16):
    def r(*shape, dt=dtype):
        return torch.randn(*shape, dtype=dt)

    q, k, v = r(1, 1, H, D), r(1, 1, H, D), r(1, 1, H, D)
    h0 = torch.zeros(1, H, D, D, dtype=torch.float32)
    g = -torch.rand(1, 1, H).to(dtype)
    beta = torch.rand(1, 1, H).to(dtype)
    A_log, dt_bias = torch.rand(H).log(), torch.randn(H)
    return {
        "simple_gla (g, h0, final state)": lambda: fused_recurrent_simple_gla(
            q, k, v, g, initial_state=h0, output_final_state=True),
        "gated_delta_rule (g, beta, l2norm, h0, final state)": lambda: fused_recurrent_gated_delta_rule(
            q, k, v, g, beta, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True),
        "gated_delta_rule, layer call (gate+beta in kernel)": lambda: fused_recurrent_gated_delta_rule(
            q, k, v, g, beta, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True,
            use_gate_in_kernel=True, A_log=A_log, dt_bias=dt_bias, use_beta_sigmoid_in_kernel=True,
            allow_neg_eigval=False),
        "gated_delta_rule, inplace_final_state": lambda: fused_recurrent_gated_delta_rule(
            q, k, v, g, beta, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True,
            inplace_final_state=True),
    }


def time_call(fn, n):
    for _ in range(min(n, 2000)):  # warm up (caches, allocator)
        fn()
    best = float("inf")
    for _ in range(3):  # best of 3 runs: the least disturbed by other load on the machine
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000, help="calls per timing run")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of each case")
    args = ap.parse_args()
    torch.set_num_threads(1)
    stub_kernels()
    print(f"torch {torch.__version__}, {args.n} calls per run, best of 3, kernels stubbed out")
    with torch.no_grad():
        for name, fn in make_cases().items():
            print(f"{time_call(fn, args.n):7.2f} µs/call  {name}")
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(args.n // 4):
                    fn()
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
