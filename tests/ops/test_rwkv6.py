"""chunk_rwkv6 / fused_recurrent_rwkv6 (built on the GLA kernels) vs the float32 token-by-token oracle.

Outputs, final state and the gradients of r, k, v, w, u and initial_state; odd T, varlen with uneven
lengths including a length-1 sequence, and bad inputs.
"""
from __future__ import annotations

import pytest
import torch
from helpers import DTYPE, ON_GPU, assert_close, log_decay, randn, tol, uneven_cu_seqlens

from flactl.ops import force_backend
from flactl.ops.rwkv6 import chunk_rwkv6, fused_recurrent_rwkv6, naive_recurrent_rwkv6

BACKENDS = ["triton"] if ON_GPU else ["triton", "torch"]
OPS = {"chunk": chunk_rwkv6, "fused_recurrent": fused_recurrent_rwkv6}


def check(op, B, T, H, K, V, h0=True, lengths=None, backend="triton", scale=None):
    cu = uneven_cu_seqlens(lengths) if lengths is not None else None
    if lengths is not None:
        B, T = 1, sum(lengths)
    N = B if cu is None else len(lengths)
    r, k = randn(B, T, H, K, requires_grad=True), randn(B, T, H, K, requires_grad=True)
    v = randn(B, T, H, V, requires_grad=True)
    w = log_decay(B, T, H, K, low=0.5, high=0.999, requires_grad=True)
    u = randn(H, K, dtype=torch.float32, requires_grad=True)
    s0 = randn(N, H, K, V, dtype=torch.float32, requires_grad=True) if h0 else None
    inputs = {n: t for n, t in dict(r=r, k=k, v=v, w=w, u=u, initial_state=s0).items() if t is not None}
    with force_backend(backend):
        o, ht = OPS[op](r, k, v, w, u, scale=scale, initial_state=s0, output_final_state=True, cu_seqlens=cu)
    do, dht = torch.randn_like(o), torch.randn_like(ht)
    got = torch.autograd.grad((o.float() * do).sum() + (ht * dht).sum(), list(inputs.values()))
    ref_in = {n: t.detach().float().requires_grad_() for n, t in inputs.items()}
    ro, rht = naive_recurrent_rwkv6(**ref_in, scale=scale, output_final_state=True, cu_seqlens=cu)
    ref = torch.autograd.grad((ro.float() * do).sum() + (rht * dht).sum(), list(ref_in.values()))
    assert_close("o", ro, o, tol(1e-4, 1e-2))
    assert_close("final_state", rht, ht, tol(1e-4, 1e-2))
    for name, rr, gt in zip(inputs, ref, got):
        assert_close(f"d{name}", rr, gt, tol(1e-3, 5e-2) if name == "w" else tol(1e-3, 2e-2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("T", [1, 63, 65])
def test_odd_lengths(T, op, backend):
    check(op, 2, T, 2, 32, 16, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", list(OPS))
def test_varlen(op, backend):
    check(op, 1, 0, 2, 16, 32, lengths=[1, 63, 66], backend=backend)


@pytest.mark.parametrize("op", list(OPS))
def test_no_initial_state_scale_one(op):
    check(op, 1, 40, 1, 16, 16, h0=False, scale=1.0)


def test_bad_inputs():
    r, k, v = randn(2, 8, 2, 16), randn(2, 8, 2, 16), randn(2, 8, 2, 16)
    w, u = log_decay(2, 8, 2, 16), randn(2, 16, dtype=torch.float32)
    for fn in OPS.values():
        with pytest.raises(ValueError, match="w"):
            fn(r, k, v, log_decay(2, 8, 2), u)
        with pytest.raises(ValueError, match="u"):
            fn(r, k, v, w, randn(3, 16))
        with pytest.raises(ValueError, match="u"):
            fn(r, k, v, w, None)
        with pytest.raises(ValueError, match="r"):
            fn(randn(2, 8, 16), k, v, w, u)
        with pytest.raises(ValueError, match="batch size"):
            fn(r, k, v, w, u, cu_seqlens=uneven_cu_seqlens([4, 4]))
        with pytest.raises(ValueError, match="initial_state"):
            fn(r, k, v, w, u, initial_state=randn(1, 2, 16, 16))
