"""chunk_comba / fused_recurrent_comba vs the token-by-token oracle (erase key p, decay after erase)."""
from __future__ import annotations

import pytest
import torch
from helpers import DEVICE, DTYPE, assert_close, tol, uneven_cu_seqlens

from flactl.ops.comba import chunk_comba, fused_recurrent_comba, naive_recurrent_comba
from flactl.ops.utils import force_backend


def _rec(q, k, v, p, g, beta, **kw):
    return fused_recurrent_comba(q, k, p, v, g, beta, **kw)


MODES = {"chunk": chunk_comba, "fused_recurrent": _rec}


def _inputs(T, H, HV, K, V, N=1, B=1):
    x = dict(q=torch.randn(B, T, H, K, device=DEVICE).to(DTYPE), k=torch.randn(B, T, H, K, device=DEVICE).to(DTYPE),
             v=torch.randn(B, T, HV, V, device=DEVICE).to(DTYPE), p=torch.randn(B, T, H, K, device=DEVICE).to(DTYPE),
             g=torch.empty(B, T, HV, device=DEVICE).uniform_(-0.5, 0),
             beta=torch.rand(B, T, HV, device=DEVICE).to(DTYPE),
             initial_state=torch.randn(max(N, B), HV, K, V, device=DEVICE))
    return {k: t.requires_grad_() for k, t in x.items()}


def _run(fn, x, **kw):
    for t in x.values():
        t.grad = None
    o, ht = fn(**x, output_final_state=True, use_qk_l2norm_in_kernel=True, **kw)
    gen = torch.Generator(device=DEVICE).manual_seed(5)
    torch.autograd.backward([o.float(), ht], [torch.randn(o.shape, device=DEVICE, generator=gen),
                                              torch.randn(ht.shape, device=DEVICE, generator=gen)])
    return [o, ht] + [t.grad.clone() for t in x.values()]


def _compare(fn, x, **kw):
    got, ref = _run(fn, x, **kw), _run(naive_recurrent_comba, x, **kw)
    for name, r, g in zip(["o", "final_state"] + [f"d{n}" for n in x], ref, got):
        assert_close(name, r, g, tol(2e-4, 8e-3) if name in ("o", "final_state") else tol(5e-4, 2e-2))


@pytest.mark.parametrize("mode", ["chunk", "fused_recurrent"])
def test_varlen_gva_vs_naive(mode, nan_poison):
    lens = [1, 65, 30]
    _compare(MODES[mode], _inputs(sum(lens), 1, 2, 16, 32, N=len(lens)), cu_seqlens=uneven_cu_seqlens(lens))


def test_chunk_batched_odd_t(nan_poison):
    _compare(chunk_comba, _inputs(63, 2, 2, 32, 16, B=2))


@pytest.mark.parametrize("mode", ["chunk", "fused_recurrent"])
def test_torch_path(mode):
    lens = [1, 63, 130]
    with force_backend("torch"):
        _compare(MODES[mode], _inputs(sum(lens), 2, 4, 32, 16, N=len(lens)), cu_seqlens=uneven_cu_seqlens(lens))


def test_bad_inputs():
    x = {k: t.detach() for k, t in _inputs(8, 2, 4, 16, 16).items()}
    with pytest.raises(ValueError, match="p must"):
        chunk_comba(x["q"], x["k"], x["v"], x["p"][:, :, :1], x["g"], x["beta"])
    with pytest.raises(ValueError, match="v heads"):
        chunk_comba(x["q"], x["k"], x["v"][:, :, :3], x["p"], x["g"][:, :, :3], x["beta"][:, :, :3])
    with pytest.raises(ValueError, match="beta"):
        fused_recurrent_comba(x["q"], x["k"], x["p"], x["v"], x["g"], x["beta"][:, :, :2])
