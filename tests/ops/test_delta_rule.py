"""chunk_delta_rule / fused_recurrent_delta_rule vs the token-by-token oracle (naive.py).

CPU: Triton kernels in the interpreter (float32) plus the torch path; GPU (FLACTL_TEST_DEVICE=cuda):
the same tests in bf16. Outputs, final states and the gradients of q, k, v, beta, initial state.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import DEVICE, DTYPE, assert_close, tol, uneven_cu_seqlens

from flactl.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule, naive_recurrent_delta_rule
from flactl.ops.utils import force_backend

MODES = {"chunk": chunk_delta_rule, "fused_recurrent": fused_recurrent_delta_rule}


def _inputs(B, T, H, K, V, N=None, h0=True):
    q = torch.randn(B, T, H, K, device=DEVICE).to(DTYPE)
    k = F.normalize(torch.randn(B, T, H, K, device=DEVICE), dim=-1).to(DTYPE)
    v = torch.randn(B, T, H, V, device=DEVICE).to(DTYPE)
    beta = torch.rand(B, T, H, device=DEVICE).to(DTYPE)
    x = dict(q=q, k=k, v=v, beta=beta)
    if h0:
        x["initial_state"] = torch.randn(N or B, H, K, V, device=DEVICE)
    return {n: t.requires_grad_() for n, t in x.items()}


def _run(fn, x, **kw):
    for t in x.values():
        t.grad = None
    o, ht = fn(**x, output_final_state=True, **kw)
    gen = torch.Generator(device=DEVICE).manual_seed(7)
    do = torch.randn(o.shape, device=DEVICE, generator=gen)
    dht = torch.randn(ht.shape, device=DEVICE, generator=gen)
    torch.autograd.backward([o.float(), ht], [do, dht])
    return o, ht, {n: t.grad.clone() for n, t in x.items()}


def _compare(fn, x, **kw):
    o, ht, g = _run(fn, x, **kw)
    ro, rht, rg = _run(naive_recurrent_delta_rule, x, **kw)
    assert_close("o", ro, o, tol(2e-4, 8e-3))
    assert_close("final_state", rht, ht, tol(2e-4, 8e-3))
    for n in x:
        assert_close(f"d{n}", rg[n], g[n], tol(5e-4, 2e-2))


@pytest.mark.parametrize("mode,T", [("chunk", 1), ("chunk", 63), ("chunk", 130), ("fused_recurrent", 65)])
def test_modes_vs_naive(mode, T, nan_poison):
    _compare(MODES[mode], _inputs(2 if T < 100 else 1, T, 1, 32, 16))


@pytest.mark.parametrize("mode", ["chunk", "fused_recurrent"])
def test_varlen_uneven(mode, nan_poison):
    lens = [1, 63, 65, 3]
    cu = uneven_cu_seqlens(lens)
    x = _inputs(1, sum(lens), 1, 16, 32, N=len(lens))
    _compare(MODES[mode], x, cu_seqlens=cu)


def test_l2norm_scale_no_initial_state():
    x = _inputs(1, 65, 2, 16, 16, h0=False)
    x["q"] = (x["q"].detach() * 3).requires_grad_()
    _compare(chunk_delta_rule, x, use_qk_l2norm_in_kernel=True, scale=0.3)


@pytest.mark.parametrize("mode", ["chunk", "fused_recurrent"])
def test_torch_path(mode):
    lens = [1, 64, 65, 130]
    x = _inputs(1, sum(lens), 2, 32, 16, N=len(lens))
    with force_backend("torch"):
        _compare(MODES[mode], x, cu_seqlens=uneven_cu_seqlens(lens))
        _compare(MODES[mode], _inputs(2, 63, 2, 16, 32))


def test_bad_inputs():
    x = {n: t.detach() for n, t in _inputs(2, 10, 2, 16, 16).items()}
    with pytest.raises(ValueError, match="beta"):
        chunk_delta_rule(x["q"], x["k"], x["v"], x["beta"][..., :1])
    with pytest.raises(ValueError, match="v"):
        chunk_delta_rule(x["q"], x["k"], torch.cat([x["v"]] * 2, 2), x["beta"])  # no GVA for DeltaNet
    with pytest.raises(ValueError, match="initial_state"):
        chunk_delta_rule(x["q"], x["k"], x["v"], x["beta"], initial_state=x["initial_state"][:1])
    with pytest.raises(ValueError, match="cu_seqlens"):
        chunk_delta_rule(x["q"], x["k"], x["v"], x["beta"], cu_seqlens=torch.tensor([0, 10], device=DEVICE))
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_delta_rule(x["q"], x["k"], x["v"], x["beta"], chunk_size=32)
    with pytest.raises(ValueError, match="head dim"):
        q = torch.randn(1, 4, 1, 300, device=DEVICE)
        chunk_delta_rule(q, q, q, torch.rand(1, 4, 1, device=DEVICE))
