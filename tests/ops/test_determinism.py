"""Identical calls give bitwise-identical outputs and gradients, for every chunk op.

On the GPU this caught a Triton 3.6 / H100 miscompile: the WY backward's K K^T accumulated inside the
dw loop came out different from call to call (dbeta / dg off by up to 2 % relative; session 5,
docs/perf/delta.md run 5). The chunk kernels have no atomics or split reductions, so any difference
between two runs is a race or an uninitialised read — and a 2 % error hides inside a bf16 gradient
tolerance, so only this kind of test finds it. On the CPU interpreter the test is cheap and exercises the
same code paths; its teeth are on the GPU (FLACTL_TEST_DEVICE=cuda).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import DEVICE, DTYPE, ON_GPU

from flactl import ops

# the race showed at 1x256x2x128 on the H100; larger shapes give more CTAs in flight
B, T, H, K = (2, 1024, 4, 128) if ON_GPU else (1, 70, 1, 32)


def _inputs(name: str):
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    r = lambda *s: torch.randn(*s, device=DEVICE, generator=gen)  # noqa: E731
    if name == "hgrn":
        D = H * K
        return dict(x=r(B, T, D).to(DTYPE), g=F.logsigmoid(r(B, T, D)).to(DTYPE), initial_state=r(B, D))
    x = dict(q=r(B, T, H, K).to(DTYPE), k=r(B, T, H, K).to(DTYPE), v=r(B, T, H, K).to(DTYPE))
    if name in ("delta_rule", "gated_delta_rule", "comba"):
        x["k"] = F.normalize(x["k"].float(), dim=-1).to(DTYPE)
        x["beta"] = torch.rand(B, T, H, device=DEVICE, generator=gen).to(DTYPE)
    if name in ("gated_delta_rule", "comba", "simple_gla"):
        x["g"] = F.logsigmoid(r(B, T, H)) / 8
    if name == "gla":
        x["g"] = (F.logsigmoid(r(B, T, H, K)) / 16).to(DTYPE)
    if name == "comba":
        x["p"] = F.normalize(r(B, T, H, K), dim=-1).to(DTYPE)
    x["initial_state"] = r(B, H, K, K)
    return x


OPS = ["delta_rule", "gated_delta_rule", "comba", "gla", "simple_gla", "retention", "linear_attn", "hgrn"]


def _run(fn, x, gen_seed=1):
    leaves = {n: t.clone().requires_grad_() for n, t in x.items()}
    o, ht = fn(**leaves, output_final_state=True)
    gen = torch.Generator(device=DEVICE).manual_seed(gen_seed)
    do = torch.randn(o.shape, device=DEVICE, generator=gen).to(o.dtype)
    dht = torch.randn(ht.shape, device=DEVICE, generator=gen).to(ht.dtype)
    torch.autograd.backward([o, ht], [do, dht])
    return [o, ht] + [leaves[n].grad for n in sorted(leaves)]


@pytest.mark.parametrize("name", OPS)
def test_repeat_calls_bitwise_equal(name):
    fn = getattr(ops, f"chunk_{name}")
    x = _inputs(name)
    first = _run(fn, x)
    names = ["o", "final_state"] + ["d" + n for n in sorted(x)]
    for _ in range(2 if ON_GPU else 1):
        for n, a, b in zip(names, first, _run(fn, x)):
            assert torch.isfinite(a).all(), f"{name}: {n} not finite"
            ndiff = int((a != b).sum())
            assert ndiff == 0, f"{name}: {n} differs between identical calls in {ndiff} of {a.numel()} elements"
