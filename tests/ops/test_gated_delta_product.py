"""chunk_gated_delta_product vs its token-by-token oracle (num_householder interleaved steps)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import DEVICE, DTYPE, assert_close, tol, uneven_cu_seqlens

from flactl.ops.gated_delta_product import chunk_gated_delta_product, naive_recurrent_gated_delta_product
from flactl.ops.utils import force_backend


def _inputs(T, n, H, HV, K, V, N=1, gate=True):
    x = dict(q=torch.randn(1, T, H, K, device=DEVICE).to(DTYPE),
             k=F.normalize(torch.randn(1, T * n, H, K, device=DEVICE), dim=-1).to(DTYPE),
             v=torch.randn(1, T * n, HV, V, device=DEVICE).to(DTYPE),
             g=torch.empty(1, T, HV, device=DEVICE).uniform_(-0.3, 0) if gate else None,
             beta=torch.rand(1, T * n, HV, device=DEVICE).to(DTYPE),
             initial_state=torch.randn(N, HV, K, V, device=DEVICE))
    return {k: (t.requires_grad_() if t is not None else None) for k, t in x.items()}


def _run(fn, x, **kw):
    for t in x.values():
        if t is not None:
            t.grad = None
    o, ht = fn(**x, output_final_state=True, **kw)
    gen = torch.Generator(device=DEVICE).manual_seed(3)
    torch.autograd.backward([o.float(), ht], [torch.randn(o.shape, device=DEVICE, generator=gen),
                                              torch.randn(ht.shape, device=DEVICE, generator=gen)])
    return [o, ht] + [t.grad.clone() for t in x.values() if t is not None]


def _compare(x, **kw):
    got = _run(chunk_gated_delta_product, x, **kw)
    ref = _run(naive_recurrent_gated_delta_product, x, **kw)
    names = ["o", "final_state"] + [f"d{n}" for n, t in x.items() if t is not None]
    for name, r, g in zip(names, ref, got):
        assert_close(name, r, g, tol(2e-4, 8e-3) if name in ("o", "final_state") else tol(5e-4, 2e-2))


@pytest.mark.parametrize("n", [1, 3])
def test_vs_naive(n, nan_poison):
    _compare(_inputs(22 if n == 3 else 65, n, 1, 2, 16, 32), num_householder=n)


def test_varlen_no_gate_l2norm():
    lens = [1, 20, 12]
    x = _inputs(sum(lens), 2, 1, 1, 16, 16, N=len(lens), gate=False)
    _compare(x, num_householder=2, cu_seqlens=uneven_cu_seqlens(lens), use_qk_l2norm_in_kernel=True)


def test_torch_path():
    lens = [1, 63, 66]
    with force_backend("torch"):
        _compare(_inputs(sum(lens), 2, 2, 2, 32, 16, N=len(lens)), num_householder=2,
                 cu_seqlens=uneven_cu_seqlens(lens))


def test_bad_inputs():
    x = {k: t.detach() for k, t in _inputs(8, 2, 1, 2, 16, 16).items()}
    with pytest.raises(ValueError, match="k must"):
        chunk_gated_delta_product(x["q"], x["k"][:, :-1], x["v"], x["g"], x["beta"], num_householder=2)
    with pytest.raises(ValueError, match="num_householder"):
        chunk_gated_delta_product(x["q"], x["k"], x["v"], x["g"], x["beta"], num_householder=0)
    with pytest.raises(ValueError, match="g"):
        chunk_gated_delta_product(x["q"], x["k"], x["v"], x["g"][:, :, :1], x["beta"], num_householder=2)
    with pytest.raises(ValueError, match="beta"):
        chunk_gated_delta_product(x["q"], x["k"], x["v"], x["g"], x["beta"][:, :8], num_householder=2)
