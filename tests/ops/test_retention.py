"""chunk_retention vs the float32 token-by-token reference (outputs, final state, all gradients)."""
from __future__ import annotations

import pytest
import torch
from helpers import DTYPE, ON_GPU, assert_close, randn, tol, uneven_cu_seqlens

from flactl.ops import force_backend
from flactl.ops.retention import chunk_retention, naive_recurrent_retention, retention_log_decay

BACKENDS = ["triton"] if ON_GPU else ["triton", "torch"]


def check(B, T, H, K, V, h0=True, lengths=None, backend="triton", dtype=None):
    dtype = dtype or DTYPE
    cu = uneven_cu_seqlens(lengths) if lengths is not None else None
    if lengths is not None:
        B, T = 1, sum(lengths)
    N = B if cu is None else len(lengths)
    q, k = randn(B, T, H, K, dtype=dtype, requires_grad=True), randn(B, T, H, K, dtype=dtype, requires_grad=True)
    v = randn(B, T, H, V, dtype=dtype, requires_grad=True)
    s0 = randn(N, H, K, V, dtype=torch.float32, requires_grad=True) if h0 else None
    inputs = {n: t for n, t in dict(q=q, k=k, v=v, initial_state=s0).items() if t is not None}
    with force_backend(backend):
        o, ht = chunk_retention(q, k, v, initial_state=s0, output_final_state=True, cu_seqlens=cu)
    do, dht = torch.randn_like(o), torch.randn_like(ht)
    got = torch.autograd.grad((o.float() * do).sum() + (ht * dht).sum(), list(inputs.values()))
    ref_in = {n: t.detach().float().requires_grad_() for n, t in inputs.items()}
    ro, rht = naive_recurrent_retention(**ref_in, output_final_state=True, cu_seqlens=cu)
    ref = torch.autograd.grad((ro.float() * do).sum() + (rht * dht).sum(), list(ref_in.values()))
    assert_close("o", ro, o, tol(1e-4, 1e-2))
    assert_close("final_state", rht, ht, tol(1e-4, 1e-2))
    for name, r, g in zip(inputs, ref, got):
        assert_close(f"d{name}", r, g, tol(1e-3, 2e-2))


def test_decay_values():
    d = retention_log_decay(3).exp()
    assert torch.allclose(d, torch.tensor([1 - 2 ** -5, 1 - 2 ** -6, 1 - 2 ** -7]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("T", [1, 63, 65, 130])
def test_odd_lengths(T, backend, nan_poison):
    check(2, T, 3, 32, 16, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_varlen(backend, nan_poison):
    check(1, 0, 2, 16, 32, lengths=[1, 63, 65, 3], backend=backend)


@pytest.mark.gpu
def test_gpu_large():
    check(2, 1000, 4, 128, 128, dtype=torch.bfloat16)


def test_bad_inputs():
    q, k, v = randn(2, 8, 2, 16), randn(2, 8, 2, 16), randn(2, 8, 2, 16)
    with pytest.raises(ValueError, match="q"):
        chunk_retention(q[0], k, v)
    with pytest.raises(ValueError, match="k"):
        chunk_retention(q, k[:, :4], v)
    with pytest.raises(ValueError, match="batch size"):
        chunk_retention(q, k, v, cu_seqlens=uneven_cu_seqlens([4, 4]))
    with pytest.raises(ValueError, match="initial_state"):
        chunk_retention(q, k, v, initial_state=randn(2, 2, 16, 8))
    with pytest.raises(ValueError, match="dtype"):
        chunk_retention(q, k.to(torch.float64), v)
