"""Identical calls give bitwise-identical outputs and gradients (delta-rule family, chunk mode).

On the GPU this caught a Triton 3.6 / H100 miscompile: the WY backward's K K^T accumulated inside the
dw loop came out different from call to call (dbeta / dg off by up to 2 % relative; session 5,
scripts/gpu_wy_bwd_race.py). The kernels have no atomics or split reductions, so any difference
between two runs is a race or an uninitialised read. On the CPU interpreter the test is cheap and
exercises the same code path; its teeth are on the GPU (FLACTL_TEST_DEVICE=cuda).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import DEVICE, DTYPE, ON_GPU

from flactl.ops.comba import chunk_comba
from flactl.ops.delta_rule import chunk_delta_rule
from flactl.ops.gated_delta_rule import chunk_gated_delta_rule

# the race showed at 1x256x2x128 on the H100; larger shapes give more CTAs in flight
B, T, H, K = (2, 1024, 4, 128) if ON_GPU else (1, 70, 1, 32)


def _inputs(gated: bool, erase_key: bool):
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    r = lambda *s: torch.randn(*s, device=DEVICE, generator=gen)  # noqa: E731
    x = dict(q=r(B, T, H, K).to(DTYPE), k=F.normalize(r(B, T, H, K), dim=-1).to(DTYPE), v=r(B, T, H, K).to(DTYPE),
             beta=torch.rand(B, T, H, device=DEVICE, generator=gen).to(DTYPE))
    if gated:
        x["g"] = F.logsigmoid(r(B, T, H)) / 8
    if erase_key:
        x["p"] = F.normalize(r(B, T, H, K), dim=-1).to(DTYPE)
    x["initial_state"] = r(B, H, K, K)
    return x


def _run(fn, x, do, dht):
    leaves = {n: t.clone().requires_grad_() for n, t in x.items()}
    o, ht = fn(**leaves, output_final_state=True)
    torch.autograd.backward([o, ht], [do, dht])
    return [o, ht] + [leaves[n].grad for n in sorted(leaves)]


@pytest.mark.parametrize("name", ["delta_rule", "gated_delta_rule", "comba"])
def test_repeat_calls_bitwise_equal(name):
    fn = {"delta_rule": chunk_delta_rule, "gated_delta_rule": chunk_gated_delta_rule, "comba": chunk_comba}[name]
    x = _inputs(gated=name != "delta_rule", erase_key=name == "comba")
    do = torch.randn(B, T, H, K, device=DEVICE).to(DTYPE)
    dht = torch.randn(B, H, K, K, device=DEVICE)
    first = _run(fn, x, do, dht)
    for _ in range(2 if ON_GPU else 1):
        again = _run(fn, x, do, dht)
        names = ["o", "final_state"] + ["d" + n for n in sorted(x)]
        for n, a, b in zip(names, first, again):
            assert torch.isfinite(a).all(), f"{name}: {n} not finite"
            ndiff = int((a != b).sum())
            assert ndiff == 0, f"{name}: {n} differs between identical calls in {ndiff} of {a.numel()} elements"
